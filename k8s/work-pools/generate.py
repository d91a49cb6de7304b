"""Write `cpu.json` and `gpu.json`, the base job templates of the two Kubernetes work pools.

How they were made: each starts from prefect-kubernetes' own default template
(`KubernetesWorker.get_default_base_job_template()`, the same JSON that
`prefect work-pool get-default-base-job-template --type kubernetes` prints) and this script
edits it: the restricted securityContext, a size-limited `emptyDir` at `/tmp`, requests and
limits, `activeDeadlineSeconds`, `backoffLimit: 0`, `ttlSecondsAfterFinished`, and the
variables `gpu_limit`, `node_selector`, `tolerations`, `ephemeral_storage` and `queue_name`
(the Kueue label `kueue.x-k8s.io/queue-name`). `tests/deploy` checks that the committed files
are what this script writes, so edit here and run `python k8s/work-pools/generate.py`.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NAMESPACE = "scintiflow"
SERVICE_ACCOUNT = "scintiflow-flow-run"
IMAGE_REPO = "ghcr.io/example/scintiflow"  # the registry you push images/ to
UID = 10001  # the numeric user of images/*.Dockerfile

POOLS: dict[str, dict[str, Any]] = {
    "cpu": {
        "image": f"{IMAGE_REPO}-cpu:0.1.0",
        "cpu_request": "2",
        "cpu_limit": "4",
        "memory_request": "6Gi",
        "memory_limit": "8Gi",
        "ephemeral_storage": "8Gi",
        "gpu_limit": None,
        "node_selector": None,
        "tolerations": None,
        "active_deadline_seconds": 4 * 3600,
        "queue_name": None,
    },
    "gpu": {
        "image": f"{IMAGE_REPO}-gpu:0.1.0",
        "cpu_request": "4",
        "cpu_limit": "8",
        "memory_request": "16Gi",
        "memory_limit": "24Gi",
        "ephemeral_storage": "20Gi",
        "gpu_limit": 1,
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "active_deadline_seconds": 8 * 3600,
        "queue_name": None,
    },
}


# checkov's findings on these Jobs that are deliberate, with the reason (checkov reads
# `checkov.io/skip<N>` annotations). A deployment that sets `annotations` replaces them.
CHECKOV_SKIPS = {
    "checkov.io/skip1": (
        "CKV_K8S_43=the image is a job variable: releases set it to repo@sha256 "
        "(docs/kubernetes.md); the default tag only names the repository"
    ),
    "checkov.io/skip2": (
        "CKV_K8S_15=IfNotPresent on purpose: a pinned image never changes, and Always makes "
        "every flow run depend on the registry"
    ),
}


def _nullable(kind: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [kind, {"type": "null"}]}


def build(pool: str) -> dict[str, Any]:
    """The base job template of `pool` (`cpu` or `gpu`)."""
    from prefect_kubernetes.worker import KubernetesWorker

    cfg = POOLS[pool]
    template = copy.deepcopy(KubernetesWorker.get_default_base_job_template())
    job = template["job_configuration"]["job_manifest"]
    props = template["variables"]["properties"]

    # Our defaults for the variables the default template already has.
    props["namespace"]["default"] = NAMESPACE
    props["image"]["default"] = cfg["image"]
    props["service_account_name"]["default"] = SERVICE_ACCOUNT
    props["image_pull_policy"]["default"] = "IfNotPresent"
    props["backoff_limit"]["default"] = 0  # Prefect reschedules a run whose pod is evicted
    props["backoff_limit"]["maximum"] = 0
    props["finished_job_ttl"]["default"] = 24 * 3600
    for key in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        props[key]["default"] = cfg[key]
    props["env"]["default"] = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
    props["annotations"]["default"] = CHECKOV_SKIPS
    # Not used by prefect-kubernetes >= 0.6 (an observer watches the Job): hide them.
    for key in ("job_watch_timeout_seconds", "pod_watch_timeout_seconds", "stream_output"):
        props.pop(key)
        template["job_configuration"].pop(key)

    props["gpu_limit"] = {
        **_nullable({"type": "integer", "minimum": 1}),
        "default": cfg["gpu_limit"],
        "title": "GPU limit",
        "description": "nvidia.com/gpu in the container's limits (requests follow limits).",
    }
    props["node_selector"] = {
        **_nullable({"type": "object", "additionalProperties": {"type": "string"}}),
        "default": cfg["node_selector"],
        "title": "Node selector",
        "description": "Node labels the pod must match (GPU Feature Discovery labels, GPU nodes).",
    }
    props["tolerations"] = {
        **_nullable({"type": "array", "items": {"type": "object"}}),
        "default": cfg["tolerations"],
        "title": "Tolerations",
        "description": "Taints the pod tolerates (the GPU nodes' taint).",
    }
    props["ephemeral_storage"] = {
        "type": "string",
        "default": cfg["ephemeral_storage"],
        "title": "Ephemeral storage",
        "description": "Size of the /tmp emptyDir and the ephemeral-storage request and limit.",
    }
    props["queue_name"] = {
        **_nullable({"type": "string"}),
        "default": cfg["queue_name"],
        "title": "Kueue queue",
        "description": "Kueue LocalQueue: sets the label kueue.x-k8s.io/queue-name on the Job.",
    }
    props["active_deadline_seconds"] = {
        "type": "integer",
        "minimum": 60,
        "default": cfg["active_deadline_seconds"],
        "title": "Active deadline (s)",
        "description": "Kubernetes stops the Job after this many seconds.",
    }

    job["metadata"]["labels"] = {
        "scintiflow.io/app": "scintiflow",
        "scintiflow.io/pool": pool,
        "kueue.x-k8s.io/queue-name": "{{ queue_name }}",
    }
    spec = job["spec"]
    spec["activeDeadlineSeconds"] = "{{ active_deadline_seconds }}"
    spec["parallelism"] = 1
    spec["completions"] = 1
    pod = spec["template"]["spec"]
    # prefect-kubernetes' validator insists on `parallelism`/`completions` inside the pod spec
    # (they are Job fields, which we also set above); the API server drops the unknown pod
    # fields with a warning. The tests strip exactly these two before strict validation.
    pod["automountServiceAccountToken"] = False
    pod["enableServiceLinks"] = False
    pod["nodeSelector"] = "{{ node_selector }}"
    pod["tolerations"] = "{{ tolerations }}"
    pod["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod["volumes"] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "{{ ephemeral_storage }}"}},
    ]
    container = pod["containers"][0]
    container["imagePullPolicy"] = "{{ image_pull_policy }}"
    container["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    container["resources"]["limits"]["ephemeral-storage"] = "{{ ephemeral_storage }}"
    container["resources"]["requests"]["ephemeral-storage"] = "{{ ephemeral_storage }}"
    container["resources"]["limits"]["nvidia.com/gpu"] = "{{ gpu_limit }}"
    return template


def main(argv: list[str]) -> int:
    """Write the templates (or with `--check`, exit 1 when the committed ones differ)."""
    check = "--check" in argv
    stale = []
    for pool in POOLS:
        text = json.dumps(build(pool), indent=2, sort_keys=True) + "\n"
        path = HERE / f"{pool}.json"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print("out of date (run python k8s/work-pools/generate.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
