"""prefect.yaml: every deployment's entrypoint loads a Prefect flow whose parameter schema (the
one Prefect stores and validates runs against) accepts the deployment's parameters; each runs
on its work pool with job variables that the pool's template accepts; the [F10] block is one
uncomment away from deploying."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from deploy_render import (
    POOL_OF_DEPLOYMENT,
    ROOT,
    deployments,
    pool_template,
    prefect_yaml,
    render_job,
)

FAN_OUT = ("score-shard", "fit-fold")  # [F10]: in prefect.yaml as a commented block


def _prepared_block() -> list[dict[str, Any]]:
    """The deployments of prefect.yaml with the commented [F10] block uncommented."""
    lines = (ROOT / "prefect.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  # - name: score-shard"))
    uncommented = [re.sub(r"^  # ?", "  ", line) for line in lines[start:]]
    text = "\n".join(lines[:start] + uncommented)
    return list(yaml.safe_load(text)["deployments"])


def test_nightly_and_retrain_are_scheduled_on_their_pools() -> None:
    doc = prefect_yaml()
    by_name = {d["name"]: d for d in doc["deployments"]}
    assert {"nightly", "retrain"} <= set(by_name) <= set(POOL_OF_DEPLOYMENT)
    timezone = doc["definitions"]["timezone"]
    nightly, retrain = by_name["nightly"], by_name["retrain"]
    assert [(s["cron"], s["timezone"]) for s in nightly["schedules"]] == [("0 2 * * *", timezone)]
    weekly = retrain["schedules"][0]["cron"].split()
    assert weekly[2:4] == ["*", "*"]
    assert weekly[4] != "*"  # one day of the week
    assert retrain["schedules"][0]["timezone"] == timezone
    for name, d in by_name.items():
        assert d["work_pool"]["name"] == f"scintiflow-{POOL_OF_DEPLOYMENT[name]}", name
        assert d["work_pool"]["job_variables"], name


def test_the_pull_step_is_the_images_working_directory() -> None:
    (step,) = prefect_yaml()["pull"]
    directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
    for image in ("cpu", "gpu"):
        dockerfile = (ROOT / "images" / f"{image}.Dockerfile").read_text()
        workdirs = re.findall(r"^WORKDIR (\S+)", dockerfile, re.M)
        assert workdirs[-1] == directory, image  # the final stage's working directory
        assert "COPY flows flows" in dockerfile.split(f"WORKDIR {directory}")[-1]


@pytest.mark.parametrize("deployment", deployments(), ids=lambda d: d["name"])
def test_entrypoint_loads_and_its_parameter_schema_accepts_the_parameters(
    deployment: dict[str, Any],
) -> None:
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.schema_tools import validate

    path, _, name = deployment["entrypoint"].partition(":")
    assert (ROOT / path).is_file()
    flow = load_flow_from_entrypoint(f"{ROOT / path}:{name}")
    assert isinstance(flow, Flow)
    assert flow.name == deployment["name"]
    parameters = dict(deployment.get("parameters") or {})
    schema = flow.parameters.model_dump_for_openapi()
    assert validate(parameters, schema, raise_on_error=True) == []
    assert set(parameters) <= set(schema["properties"])  # no parameter the flow lacks
    flow.validate_parameters(parameters)  # and the flow's own pydantic validation


def test_the_parameter_check_rejects_what_the_flow_does_not_take() -> None:
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.schema_tools import ValidationError, validate

    flow = load_flow_from_entrypoint(f"{ROOT / 'flows/retrain.py'}:retrain")
    schema = flow.parameters.model_dump_for_openapi()
    with pytest.raises(ValidationError):
        validate({"data": "s3://x", "labels": "s3://y", "folds": "five"}, schema, True)
    with pytest.raises(ValidationError):
        validate({"data": "s3://x"}, schema, True)  # `labels` is required


@pytest.mark.parametrize("deployment", _prepared_block(), ids=lambda d: d["name"])
def test_job_variables_are_variables_of_the_pools_template(deployment: dict[str, Any]) -> None:
    from prefect.utilities.schema_tools import validate

    pool = POOL_OF_DEPLOYMENT[deployment["name"]]
    variables = pool_template(pool)["variables"]
    job_variables = deployment["work_pool"]["job_variables"]
    assert set(job_variables) <= set(variables["properties"])
    assert validate(job_variables, variables, raise_on_error=True, ignore_required=True) == []


def test_the_f10_block_uncommented_adds_the_two_gpu_deployments() -> None:
    now = [d["name"] for d in deployments()]
    prepared = _prepared_block()
    assert [d["name"] for d in prepared] == [*now, *FAN_OUT]
    for d in prepared[len(now) :]:
        assert d["work_pool"]["name"] == "scintiflow-gpu"
        job = render_job("gpu", d["work_pool"]["job_variables"], name=d["name"])
        limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == 1
