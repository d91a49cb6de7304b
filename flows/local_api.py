"""The CLI's local Prefect API: a server child that dies with the CLI, even on SIGKILL.

Without an API URL, Prefect starts its own ephemeral server (a uvicorn child, ~280 MB) on the
first flow call and stops it at exit; a CLI killed with SIGKILL never gets there and the
server stays behind. `local_api()` starts the same server itself, from the calling thread,
through `scintiflow.lifeline` (the kernel sends it SIGTERM when the CLI goes), and points
`PREFECT_API_URL` at it for the duration. When an API URL is already set (a real server, or
`prefect_test_harness` in tests) it starts nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import prefect
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from scintiflow.lifeline import launcher_argv


class LifelineServer(SubprocessASGIServer):
    """Prefect's subprocess API server, launched so that it dies with this process."""

    # Its own instance table: the base class keeps one instance per port, and Prefect's own
    # ephemeral server (key None) must never be handed out in place of this one.
    _instances: ClassVar[dict[int | None, SubprocessASGIServer]] = {}  # type: ignore[misc]

    def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
        """The ephemeral server's uvicorn app (no UI), behind the lifeline launcher."""
        uvicorn = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(Path(prefect.__file__).parent.parent),
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ]
        env = {
            **get_current_settings().to_environment_variables(exclude_unset=True),
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        return subprocess.Popen([*launcher_argv(), *uvicorn], env={**os.environ, **env})


def _drain_workers() -> None:
    """Send the log and event workers' queues before the server goes."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)
    EventsWorker.drain_all(timeout=5)


@contextmanager
def local_api() -> Iterator[str]:
    """A Prefect API for the block: the configured one, else a lifeline server; yields its URL.

    Enter it from the thread that runs the flows (the CLI's main thread): the server gets
    SIGTERM when that thread's process dies.
    """
    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    server = LifelineServer()
    # Prefect code that asks for "the" ephemeral server gets this one for the duration.
    prior = SubprocessASGIServer._instances.get(None)
    SubprocessASGIServer._instances[None] = server
    try:
        server.start()
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield server.api_url
            finally:
                _drain_workers()
    finally:
        server.stop()
        if prior is None:
            SubprocessASGIServer._instances.pop(None, None)
        else:
            SubprocessASGIServer._instances[None] = prior
