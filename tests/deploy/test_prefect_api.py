"""Against a real (ephemeral) Prefect server: k8s/work-pools/sync_pools.py creates, then
updates, both work pools from their files, and the zombie-run automation of k8s/automations
is accepted by `prefect automation create --from-file`, the command the docs give."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from deploy_render import K8S, pool_template, run, tool

AUTOMATION = K8S / "automations" / "zombie-flow-runs.yaml"

pytestmark = pytest.mark.slow  # a Prefect server starts: 10-25 s on a shared 2-core machine


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An ephemeral Prefect API for this module (its home in a temp folder); its URL."""
    saved = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    try:
        with prefect_test_harness(server_startup_timeout=90):
            url = PREFECT_API_URL.value()
            assert url
            yield str(url)
    finally:
        if saved is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = saved


def _sync_pools_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "sync_pools", K8S / "work-pools" / "sync_pools.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _read_pools(names: list[str]) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return {name: await client.read_work_pool(name) for name in names}


def test_sync_pools_creates_then_updates_both_pools(prefect_server: str) -> None:
    sync = _sync_pools_module()
    names = ["scintiflow-cpu", "scintiflow-gpu"]

    async def sync_all() -> dict[str, str]:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            return dict(await sync.sync_pools(client, names))

    assert asyncio.run(sync_all()) == dict.fromkeys(names, "created")
    pools = asyncio.run(_read_pools(names))
    for name, pool in pools.items():
        assert pool.type == "kubernetes"
        assert pool.base_job_template == pool_template(name.removeprefix("scintiflow-"))
    assert sync.main(["--pool", "gpu"]) == 0  # the script's own entry point: an update
    assert asyncio.run(sync_all()) == dict.fromkeys(names, "updated")


def test_the_zombie_automation_marks_silent_runs_crashed() -> None:
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    automation = AutomationCore.model_validate(yaml.safe_load(AUTOMATION.read_text()))
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.posture == Posture.Proactive
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    terminal = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")}
    assert trigger.expect == {"prefect.flow-run.heartbeat", *terminal}
    assert trigger.for_each == {"prefect.resource.id"}
    beat = int(
        pool_template("cpu")["variables"]["properties"]["env"]["default"][
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
        ]
    )
    assert trigger.within.total_seconds() >= 3 * beat  # three missed heartbeats, not one
    (action,) = automation.actions
    assert isinstance(action, ChangeFlowRunState)
    assert action.state.value == "CRASHED"


def test_the_documented_command_applies_the_automation(prefect_server: str) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    argv = [tool("prefect"), "automation", "create", "--from-file", str(AUTOMATION)]
    done = run(argv, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    name = yaml.safe_load(AUTOMATION.read_text())["name"]
    assert f"Created automation '{name}'" in " ".join(done.stdout.split())

    async def read() -> list[Any]:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            return list(await client.read_automations_by_name(name))

    (stored,) = asyncio.run(read())
    assert stored.enabled
    assert stored.trigger.posture.value == "Proactive"


def test_automation_file_is_yaml_with_one_automation() -> None:
    doc = yaml.safe_load(Path(AUTOMATION).read_text())
    assert isinstance(doc, dict)
    assert doc["name"].startswith("scintiflow-")
