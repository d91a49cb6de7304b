# syntax=docker/dockerfile:1
# scintiflow for the CPU work pool (k8s/work-pools/cpu.json). Build from the repository root:
#   docker build -f images/cpu.Dockerfile -t <registry>/scintiflow-cpu:<version> .
# Python 3.11 slim, the project installed against requirements/constraints.txt with the CPU
# build of torch, a numeric non-root user (10001), no secrets baked in, /tmp the only
# writable path (the pod mounts an emptyDir there), the repository at /opt/scintiflow (the
# working directory that prefect.yaml's pull step sets).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements/constraints.txt requirements/constraints.txt
# torch and torchvision from PyTorch's CPU index first (2.14.1+cpu satisfies the pins
# torch==2.14.1 / torchvision==0.29.1), so the CUDA pins in the constraints stay unused.
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
      "torch==$(sed -n 's/^torch==//p' requirements/constraints.txt)" \
      "torchvision==$(sed -n 's/^torchvision==//p' requirements/constraints.txt)"
COPY pyproject.toml README.md ./
COPY src src
COPY flows flows
COPY tasks tasks
RUN pip install -c requirements/constraints.txt .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    PREFECT_HOME=/tmp/prefect \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    GX_ANALYTICS_ENABLED=false
RUN groupadd --gid 10001 scintiflow \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin scintiflow
COPY --from=build /opt/venv /opt/venv
WORKDIR /opt/scintiflow
COPY prefect.yaml pyproject.toml ./
COPY flows flows
COPY tasks tasks
USER 10001:10001
CMD ["prefect", "version"]
