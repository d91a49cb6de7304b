"""images/: both Dockerfiles lint clean with hadolint (ignores only with a reason beside them);
the GPU base image's CUDA major is the one torch's and TensorRT's wheels are built for. No
Docker engine here: the images are linted, not built."""

from __future__ import annotations

import importlib.metadata
import re

import pytest
from deploy_render import ROOT, run, tool

IMAGES = ("cpu", "gpu")


def _dockerfile(image: str) -> str:
    return (ROOT / "images" / f"{image}.Dockerfile").read_text()


@pytest.mark.parametrize("image", IMAGES)
def test_hadolint_passes(image: str) -> None:
    done = run([tool("hadolint"), "--no-color", str(ROOT / "images" / f"{image}.Dockerfile")])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("image", IMAGES)
def test_every_hadolint_ignore_has_its_reason_above_it(image: str) -> None:
    lines = _dockerfile(image).splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            for rule in line.split("=", 1)[1].split(","):
                assert any(rule.strip() in prev for prev in lines[max(0, i - 4) : i]), rule


def test_the_lint_catches_an_unpinned_apt_install() -> None:
    # The same Dockerfile without its justified ignore fails: the lint really runs.
    unjustified = ROOT / "images" / "gpu.Dockerfile"
    text = "\n".join(
        line for line in unjustified.read_text().splitlines() if "hadolint ignore" not in line
    )
    done = run([tool("hadolint"), "--no-color", "-"], input_text=text)
    assert done.returncode != 0
    assert "DL3008" in done.stdout


@pytest.mark.parametrize("image", IMAGES)
def test_the_image_runs_as_a_numeric_non_root_user_with_no_secrets(image: str) -> None:
    text = _dockerfile(image)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users[-1] == "10001:10001"
    assert not re.search(r"^(ARG|ENV)\s+\S*(SECRET|PASSWORD|TOKEN|KEY)\S*", text, re.M | re.I)
    assert "constraints.txt" in text  # installed against the pins
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}", text, re.M)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text


def test_the_cpu_image_installs_the_cpu_build_of_torch() -> None:
    assert "--index-url https://download.pytorch.org/whl/cpu" in _dockerfile("cpu")


def test_the_gpu_base_image_matches_the_cuda_major_of_torch_and_tensorrt() -> None:
    text = _dockerfile("gpu")
    base = re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.(\d+)\.(\d+)-runtime-\S+$", text, re.M)
    assert base is not None
    major = int(base.group(1))
    assert f"nvidia/cuda:{'.'.join(base.groups())}-runtime" in text.split("ARG")[0]  # stated
    # torch==2.14.1's Linux wheel depends on the CUDA toolkit wheels of one CUDA release
    requires = importlib.metadata.requires("torch") or []
    toolkit = [r for r in requires if r.startswith("cuda-toolkit")]
    assert toolkit, "torch's metadata names no cuda-toolkit: is this the CPU build?"
    torch_cuda = re.search(r"==(\d+)\.", toolkit[0])
    assert torch_cuda is not None
    assert int(torch_cuda.group(1)) == major
    # and the [gpu] extra's TensorRT is the build for the same CUDA major
    gpu_extra = (ROOT / "pyproject.toml").read_text().split("gpu = [", 1)[1].split("]", 1)[0]
    assert f'"tensorrt-cu{major}"' in gpu_extra
