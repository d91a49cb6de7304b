"""Every deployment in prefect.yaml loads: its entrypoint resolves to a Prefect flow whose
parameters accept the deployment's parameters; schedules are the documented ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _deployments() -> list[dict[str, Any]]:
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return list(doc["deployments"])


def test_nightly_and_retrain_are_defined_with_their_schedules() -> None:
    by_name = {d["name"]: d for d in _deployments()}
    assert set(by_name) == {"nightly", "retrain"}
    assert [s["cron"] for s in by_name["nightly"]["schedules"]] == ["0 2 * * *"]
    weekly = by_name["retrain"]["schedules"][0]["cron"].split()
    assert weekly[2:4] == ["*", "*"]
    assert weekly[4] != "*"
    for d in by_name.values():
        assert d["work_pool"]["name"].startswith("scintiflow-")  # placeholders until [F7]


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: d["name"])
def test_entrypoint_loads_and_accepts_the_parameters(deployment: dict[str, Any]) -> None:
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    entry = deployment["entrypoint"]
    path, _, name = entry.partition(":")
    assert (ROOT / path).is_file()
    flow = load_flow_from_entrypoint(str(ROOT / path) + ":" + name)
    assert isinstance(flow, Flow)
    assert flow.name == deployment["name"]
    params = set(flow.parameters.properties)
    assert set(deployment.get("parameters") or {}) <= params
    required = set(flow.parameters.required or [])
    assert required <= set(deployment.get("parameters") or {})
    # validation of the deployment's parameters against the flow's signature
    flow.validate_parameters(dict(deployment.get("parameters") or {}))
