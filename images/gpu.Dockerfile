# syntax=docker/dockerfile:1
# scintiflow for the GPU work pool (k8s/work-pools/gpu.json). Build from the repository root:
#   docker build -f images/gpu.Dockerfile -t <registry>/scintiflow-gpu:<version> .
# Base: nvidia/cuda:13.0.3-runtime-ubuntu24.04. torch 2.14.1's Linux wheels are built for
# CUDA 13.0 (they depend on cuda-toolkit 13.0.3 and the nvidia-*-cu13 wheels) and the [gpu]
# extra is tensorrt-cu13, so the CUDA major is 13; the node's driver must support CUDA 13.
# Python 3.11 comes from the official slim image (Ubuntu 24.04 ships 3.12), the project is
# installed against requirements/constraints.txt plus the [gpu] extra (TensorRT's wheels come
# from NVIDIA's package index at build time). Numeric non-root user 10001, no secrets, /tmp the
# only writable path, the repository at /opt/scintiflow (prefect.yaml's pull step).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.3-runtime-ubuntu24.04

FROM ${PYTHON_IMAGE} AS python

FROM python AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements/constraints.txt requirements/constraints.txt
COPY pyproject.toml README.md ./
COPY src src
COPY flows flows
COPY tasks tasks
# torch from PyPI (the CUDA 13 build the constraints pin), TensorRT from NVIDIA's index.
RUN pip install -c requirements/constraints.txt \
      --extra-index-url https://pypi.nvidia.com ".[gpu]"

FROM ${CUDA_IMAGE}
# The shared libraries the official Python build links against (Ubuntu 24.04 names).
# DL3008 (pin apt versions): these are the base image's own security-patched runtime libraries;
# pinning them would freeze out Ubuntu's fixes, and the CUDA base tag is already pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates libbz2-1.0 libffi8 liblzma5 libncursesw6 libreadline8t64 \
      libsqlite3-0 libssl3t64 libuuid1 zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY --from=python /usr/local /usr/local
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    PREFECT_HOME=/tmp/prefect \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    GX_ANALYTICS_ENABLED=false \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN ldconfig \
 && python -c "import bz2, ctypes, lzma, sqlite3, ssl, torch; print(torch.version.cuda)" \
 && groupadd --gid 10001 scintiflow \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin scintiflow
WORKDIR /opt/scintiflow
COPY prefect.yaml pyproject.toml ./
COPY flows flows
COPY tasks tasks
USER 10001:10001
CMD ["prefect", "version"]
