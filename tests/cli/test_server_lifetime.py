"""The CLI's local Prefect server dies with the CLI, even when the CLI is killed with SIGKILL.

A real `scintiflow nightly` in a subprocess, on a tiny simulated night, with no API URL set:
the verb starts the server child (`flows.local_api` through `scintiflow.lifeline`); the test
finds it among the CLI's children in /proc, kills the CLI with SIGKILL and watches the server
go. Before the fix the server (Prefect's own ephemeral one) stayed behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from scintiflow.storage import LocalStore

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs /proc and PR_SET_PDEATHSIG"
)

ROOT = Path(__file__).resolve().parents[2]
WAIT_FOR_SERVER_S = 60.0  # generous: a loaded machine; the loop ends as soon as it is there
WAIT_FOR_EXIT_S = 10.0
CLI = [sys.executable, "-m", "scintiflow.cli"]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has exited


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _uvicorn_children(parent: int) -> list[int]:
    """The parent's children that run uvicorn (`python -m uvicorn ...`, after any exec)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or stat[1] != parent:
            continue
        if _cmdline(pid)[1:3] == ["-m", "uvicorn"]:
            found.append(pid)
    return found


def _wait_for(predicate, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: no Prefect API URL (so the verb starts its server), a private
    Prefect home, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
        GX_ANALYTICS_ENABLED="false",
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    )
    return env


@pytest.fixture
def servers() -> Iterator[list[int]]:
    """Server pids seen by the test: any still alive at the end are killed (no leak)."""
    seen: list[int] = []
    yield seen
    for pid in seen:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_sigkill_of_the_cli_takes_its_prefect_server_down(
    tmp_path: Path, cli_env: dict[str, str], servers: list[int]
) -> None:
    from scintiflow.sim import write_night

    night = date(2026, 11, 27)
    store = LocalStore(tmp_path / "bucket")
    write_night(store, night=night, n=2, sites=("A",), seed=5)
    cli = subprocess.Popen(
        [*CLI, "nightly", "--source", str(store.root), "--night", night.isoformat()],
        cwd=tmp_path,
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait_for(
            lambda: _uvicorn_children(cli.pid) or cli.poll() is not None, WAIT_FOR_SERVER_S
        )
        servers.extend(_uvicorn_children(cli.pid))
        assert servers, f"the CLI exited ({cli.returncode}) before its server was seen"
    finally:
        cli.send_signal(signal.SIGKILL)
        cli.wait()
    assert _wait_for(lambda: not any(_alive(pid) for pid in servers), WAIT_FOR_EXIT_S), (
        f"server {servers} outlived the CLI"
    )
