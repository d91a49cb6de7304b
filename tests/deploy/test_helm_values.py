"""k8s/helm: the values files for the official prefect-server and prefect-worker charts set
only keys that the pinned chart version documents, each with the documented type; one worker
release per work pool, each reading its pool's base job template from the ConfigMap that
k8s/work-pools renders; no credential in any of them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from deploy_render import K8S, POOLS, ROOT, kustomize
from helm_chart_keys import CHART_VERSION, CHARTS

HELM = K8S / "helm"
VALUES = {
    "prefect-server.yaml": "prefect-server",
    **{f"prefect-worker-{pool}.yaml": "prefect-worker" for pool in POOLS},
}
TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "int": (int,),
    "bool": (bool,),
    "object": (dict,),
    "list": (list,),
}


def _leaves(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += [(path, value), *_leaves(value, f"{path}.")]
        else:
            out.append((path, value))
    return out


def undocumented(values: dict[str, Any], documented: dict[str, str]) -> list[str]:
    """Each key of `values` that the chart does not document or that has the wrong type."""
    problems = []
    for path, value in _leaves(values):
        parents = [p for p in documented if path.startswith(f"{p}.")]
        if any(documented[p] in {"object", "list"} for p in parents):
            continue  # inside a documented object: the chart passes it through
        kind = documented.get(path)
        if kind is None:
            prefix = f"{path}."
            if isinstance(value, dict) and any(k.startswith(prefix) for k in documented):
                continue  # an intermediate mapping: its leaves are checked
            problems.append(f"{path}: not a documented value")
        elif value is not None and (
            not isinstance(value, TYPES[kind]) or (kind == "int" and isinstance(value, bool))
        ):
            problems.append(f"{path}: {type(value).__name__}, documented as {kind}")
    return problems


def _values(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((HELM / name).read_text()))


def test_there_is_one_values_file_per_release() -> None:
    assert {p.name for p in HELM.glob("*.yaml")} == set(VALUES)


@pytest.mark.parametrize("name", sorted(VALUES))
def test_values_use_only_documented_keys_with_their_types(name: str) -> None:
    assert undocumented(_values(name), CHARTS[VALUES[name]]) == []
    assert CHART_VERSION in (HELM / name).read_text()  # the file names the chart it is for


def test_the_key_check_rejects_unknown_keys_and_wrong_types() -> None:
    worker = CHARTS["prefect-worker"]
    assert undocumented({"worker": {"config": {"workPool": "x"}}}, worker) == []
    assert undocumented({"worker": {"resources": {"limits": {"cpu": "1"}}}}, worker) == []
    assert undocumented({"worker": {"config": {"workpool": "x"}}}, worker) == [
        "worker.config.workpool: not a documented value"
    ]
    assert undocumented({"worker": {"replicaCount": "2"}}, worker) == [
        "worker.replicaCount: str, documented as int"
    ]
    assert undocumented({"worker": {"replicaCount": True}}, worker) == [
        "worker.replicaCount: bool, documented as int"
    ]


@pytest.mark.parametrize("pool", POOLS)
def test_each_worker_polls_its_pool_with_its_template(pool: str) -> None:
    values = _values(f"prefect-worker-{pool}.yaml")
    worker = values["worker"]
    assert values["fullnameOverride"] == f"prefect-worker-{pool}"  # two releases, one namespace
    assert worker["config"]["workPool"] == f"scintiflow-{pool}"
    assert worker["config"]["type"] == "kubernetes"
    assert worker["apiConfig"] == "selfHostedServer"
    assert worker["selfHostedServerApiConfig"]["apiUrl"].startswith("http://prefect-server.")
    configmap = worker["config"]["baseJobTemplate"]["existingConfigMapName"]
    rendered = {d["metadata"]["name"] for d in kustomize("gpu-cluster") if d["kind"] == "ConfigMap"}
    assert configmap in rendered
    # the observer of prefect-kubernetes watches only our namespace (its Role is namespaced)
    env = {e["name"]: e["value"] for e in worker["extraEnvVars"]}
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == "scintiflow"
    # the ServiceAccount and Role are ours (k8s/base/rbac.yaml), not the chart's
    assert values["serviceAccount"] == {"create": False, "name": "scintiflow-worker"}
    assert values["role"]["create"] is False
    assert values["rolebinding"]["create"] is False


def test_the_images_are_the_projects_prefect_version() -> None:
    pinned = next(
        line.split("==")[1]
        for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
        if line.startswith("prefect==")
    )
    server = _values("prefect-server.yaml")["global"]["prefect"]["image"]["prefectTag"]
    assert server.startswith(f"{pinned}-python3.11")
    for pool in POOLS:
        tag = _values(f"prefect-worker-{pool}.yaml")["worker"]["image"]["prefectTag"]
        assert tag == f"{pinned}-python3.11-kubernetes"


def test_no_values_file_holds_a_credential() -> None:
    server = _values("prefect-server.yaml")
    assert server["postgresql"]["enabled"] is False  # an external database, not the bundled one
    assert server["secret"] == {"create": False, "name": "prefect-server-database"}
    for name in VALUES:
        for path, value in _leaves(_values(name)):
            last = path.rsplit(".", 1)[-1].lower()
            if any(word in last for word in ("password", "authstring", "apikey", "token")):
                pytest.fail(f"{name}: {path} set")
            if isinstance(value, str):
                assert "@" not in value or "://" not in value, f"{name}: {path}"


def test_documented_keys_list_is_well_formed() -> None:
    for chart, keys in CHARTS.items():
        assert set(keys.values()) <= set(TYPES), chart
        for key in keys:
            # no key is documented both as a leaf and as the parent of another leaf
            parent = key.rsplit(".", 1)[0] if "." in key else None
            assert parent is None or keys.get(parent) in (None, "object"), (chart, key)
