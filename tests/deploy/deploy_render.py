"""Offline rendering for tests/deploy: the kustomize overlays, the Jobs a worker would submit,
the deployments of prefect.yaml, and the command-line tools the checks run.

No cluster and no Prefect server: `kubectl kustomize` renders the overlays, prefect-kubernetes
renders a Job from a work pool's base job template and a deployment's job variables exactly
as its worker does, given a stub client (so no server starts).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "gpu-cluster")
POOLS = ("cpu", "gpu")
# The work pool each deployment runs on: nightly on CPU nodes; retraining and the [F10] fan-out
# deployments (one Job per shard or per fold) on GPU nodes.
POOL_OF_DEPLOYMENT = {
    "nightly": "cpu",
    "retrain": "gpu",
    "score-shard": "gpu",
    "fit-fold": "gpu",
}
KUBERNETES_VERSION = "1.37.0"

# prefect-kubernetes' manifest check insists on `parallelism`/`completions` inside the pod spec
# (its default template puts them there; the API server drops these unknown pod fields with a
# warning). They are Job fields, which our templates also set where they belong.
WORKER_POD_SPEC_EXTRAS = ("parallelism", "completions")
# Environment variables the worker itself puts in every Job (not settings of this machine).
WORKER_ENV = {
    "PREFECT__FLOW_RUN_ID",
    "PREFECT__FLOW_ID",
    "PREFECT__DEPLOYMENT_ID",
    "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR",
}


def tool(name: str) -> str:
    """The path of a command-line tool: the project's venv first, then PATH; fails (never
    skips) when it is missing, since CI installs every one of them."""
    for candidate in (Path(sys.executable).parent / name, ROOT / ".venv" / "bin" / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"`{name}` is not installed: `make setup` installs it (pyproject.toml, test extra)",
            pytrace=False,
        )
    return found


def checkov() -> str:
    """checkov from its own venv (`make checkov`): its pins conflict with the project's."""
    path = ROOT / ".venv-checkov" / "bin" / "checkov"
    if not path.is_file():
        pytest.fail("checkov is not installed: run `make checkov` (.venv-checkov)", pytrace=False)
    return str(path)


def run(
    argv: list[str],
    timeout: float = 300,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        input=input_text,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def kustomize(overlay: str) -> list[dict[str, Any]]:
    """The resources `kubectl kustomize k8s/overlays/<overlay>` renders."""
    done = run([tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay)])
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def prefect_yaml() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "prefect.yaml").read_text()))


def deployments() -> list[dict[str, Any]]:
    return list(prefect_yaml()["deployments"])


def pool_template(pool: str) -> dict[str, Any]:
    return dict(json.loads((K8S / "work-pools" / f"{pool}.json").read_text()))


class _StubClient:
    """Stands in for the Prefect client: a template without block or variable placeholders
    never calls it, and passing one keeps prefect-kubernetes from starting a server."""


def render_job(pool: str, job_variables: dict[str, Any], name: str = "calm-otter") -> dict:
    """The Job manifest the `pool` worker submits for a flow run with these job variables,
    with the settings of the machine running the test taken out of its env."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.settings import get_current_settings
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    async def configure() -> KubernetesWorkerJobConfiguration:
        return await KubernetesWorkerJobConfiguration.from_template_and_values(
            pool_template(pool), job_variables, client=_StubClient()
        )

    config = asyncio.run(configure())
    flow_run = FlowRun(flow_id=uuid.uuid4(), name=name, deployment_id=uuid.uuid4())
    config.prepare_for_flow_run(flow_run)
    job = json.loads(json.dumps(config.job_manifest))  # a plain copy
    local = set(get_current_settings().to_environment_variables(exclude_unset=True))
    local |= {k for k in os.environ if k.startswith("PREFECT_")} - WORKER_ENV
    for container in job["spec"]["template"]["spec"]["containers"]:
        container["env"] = [
            e for e in container.get("env", []) if e["name"] not in local or _declared(pool, e)
        ]
    return job


def _declared(pool: str, env: dict[str, Any]) -> bool:
    """Whether an env entry is one the pool's template sets itself (kept even when the same
    setting is also set on this machine)."""
    default = pool_template(pool)["variables"]["properties"]["env"].get("default") or {}
    return env["name"] in default


def for_validation(doc: dict[str, Any]) -> dict[str, Any]:
    """A rendered Job as the API server keeps it: without the two pod-spec fields that
    prefect-kubernetes requires (see WORKER_POD_SPEC_EXTRAS) and with the name the server
    makes from `generateName` (five random characters); everything else exactly as rendered."""
    doc = json.loads(json.dumps(doc))
    if doc.get("kind") == "Job":
        meta = doc["metadata"]
        if "name" not in meta and "generateName" in meta:
            meta["name"] = meta["generateName"] + "x7k2q"
        pod = doc["spec"]["template"]["spec"]
        for key in WORKER_POD_SPEC_EXTRAS:
            pod.pop(key, None)
    return doc


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs inside a workload resource (Job, Deployment, ...), none for the rest."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        return [spec]
    template = spec.get("template") or (spec.get("jobTemplate") or {}).get("spec", {}).get(
        "template"
    )
    return [template["spec"]] if template and "spec" in template else []
