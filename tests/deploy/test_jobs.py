"""The work pools' base job templates (k8s/work-pools) and the Jobs their workers submit,
rendered offline by prefect-kubernetes for each pool and each deployment of prefect.yaml."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from deploy_render import K8S, POOLS, WORKER_ENV, pool_template, render_job

GPU = "nvidia.com/gpu"


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"])


def _container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = _pod(job)["containers"]
    return dict(container)


def test_the_committed_templates_are_what_generate_py_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = importlib.util.spec_from_file_location("generate", K8S / "work-pools" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert generate.main(["--check"]) == 0, capsys.readouterr().out


def test_the_templates_extend_prefect_kubernetes_default_template() -> None:
    from prefect_kubernetes.worker import KubernetesWorker

    default = KubernetesWorker.get_default_base_job_template()
    unused = {"job_watch_timeout_seconds", "pod_watch_timeout_seconds", "stream_output"}
    ours = {"gpu_limit", "node_selector", "tolerations", "ephemeral_storage", "queue_name"}
    for pool in POOLS:
        template = pool_template(pool)
        variables = set(template["variables"]["properties"])
        assert variables >= ours
        assert variables >= set(default["variables"]["properties"]) - unused
        assert not variables & unused  # prefect-kubernetes >= 0.6 no longer reads them
        assert set(template["job_configuration"]) == set(default["job_configuration"]) - unused


def test_gpu_pool_jobs_ask_for_a_gpu_node_and_cpu_pool_jobs_do_not(
    jobs: dict[str, dict[str, Any]],
) -> None:
    for pool in POOLS:
        job = jobs[f"pool:{pool}"]
        resources, pod = _container(job)["resources"], _pod(job)
        if pool == "gpu":
            assert resources["limits"][GPU] == 1
            assert GPU not in resources["requests"]  # requests follow limits for GPUs
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        else:
            assert GPU not in resources["limits"]
            assert GPU not in resources["requests"]
            assert "nodeSelector" not in pod
            assert "tolerations" not in pod


def test_every_job_stops_retrying_and_cleans_up_after_itself(
    jobs: dict[str, dict[str, Any]],
) -> None:
    for name, job in jobs.items():
        spec = job["spec"]
        # backoffLimit 0: Kubernetes never re-runs a pod; Prefect reschedules an evicted run
        # (the worker sets the SIGTERM behaviour only for this value).
        assert spec["backoffLimit"] == 0, name
        env = {e["name"]: e.get("value") for e in _container(job)["env"]}
        assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "reschedule", name
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30", name  # zombie detection
        assert isinstance(spec["activeDeadlineSeconds"], int), name
        assert spec["activeDeadlineSeconds"] >= 60, name
        assert spec["ttlSecondsAfterFinished"] == 86400, name
        assert (spec["parallelism"], spec["completions"]) == (1, 1), name
        assert _pod(job)["restartPolicy"] == "Never", name
        assert _pod(job)["serviceAccountName"] == "scintiflow-flow-run", name
        assert job["metadata"]["namespace"] == "scintiflow", name


def test_tmp_is_the_only_writable_path_and_its_size_is_the_storage_limit(
    jobs: dict[str, dict[str, Any]],
) -> None:
    for name, job in jobs.items():
        container, pod = _container(job), _pod(job)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
        (volume,) = pod["volumes"]
        size = volume["emptyDir"]["sizeLimit"]
        assert container["resources"]["limits"]["ephemeral-storage"] == size, name
        assert container["resources"]["requests"]["ephemeral-storage"] == size, name


def test_the_job_env_holds_only_what_the_worker_and_the_template_set(
    jobs: dict[str, dict[str, Any]],
) -> None:
    # the settings of the machine that renders (PREFECT_HOME, PREFECT_API_URL of a test
    # server, ...) are taken out by render_job; anything else would reach the cluster.
    for name, job in jobs.items():
        names = {e["name"] for e in _container(job)["env"]}
        assert names == WORKER_ENV | {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY"}, name


def test_each_deployment_gets_its_job_variables(
    jobs: dict[str, dict[str, Any]], deployments_by_name: dict[str, dict[str, Any]]
) -> None:
    for name, deployment in deployments_by_name.items():
        variables = deployment["work_pool"].get("job_variables") or {}
        job = jobs[f"deployment:{name}"]
        resources = _container(job)["resources"]
        for key, (kind, field) in {
            "cpu_request": ("requests", "cpu"),
            "cpu_limit": ("limits", "cpu"),
            "memory_request": ("requests", "memory"),
            "memory_limit": ("limits", "memory"),
            "ephemeral_storage": ("limits", "ephemeral-storage"),
        }.items():
            if key in variables:
                assert resources[kind][field] == variables[key], (name, key)
        if "active_deadline_seconds" in variables:
            assert job["spec"]["activeDeadlineSeconds"] == variables["active_deadline_seconds"]
        if "gpu_limit" in variables:
            assert resources["limits"][GPU] == variables["gpu_limit"]


def test_a_queue_name_puts_the_kueue_label_on_the_job() -> None:
    without = render_job("gpu", {})
    assert "kueue.x-k8s.io/queue-name" not in without["metadata"]["labels"]
    with_queue = render_job("gpu", {"queue_name": "scintiflow-gpu"})
    assert with_queue["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "scintiflow-gpu"
    assert with_queue["metadata"]["labels"]["scintiflow.io/pool"] == "gpu"


def test_placement_variables_override_the_pool_defaults() -> None:
    job = render_job(
        "gpu",
        {
            "gpu_limit": 2,
            "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml"}],
        },
    )
    assert _container(job)["resources"]["limits"][GPU] == 2
    assert _pod(job)["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert _pod(job)["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "ml"}]
