"""Everything tests/deploy checks, rendered once per session: both kustomize overlays and the
Job each work pool submits (with its defaults, and with every deployment's job variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_render import (
    OVERLAYS,
    POOL_OF_DEPLOYMENT,
    POOLS,
    deployments,
    for_validation,
    kustomize,
    render_job,
)

Rendered = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="session")
def overlays() -> Rendered:
    """`kubectl kustomize` of each overlay, by overlay name."""
    return {name: kustomize(name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def jobs() -> dict[str, dict[str, Any]]:
    """The Job a worker submits: `pool:<cpu|gpu>` with the pool's defaults, and
    `deployment:<name>` with that deployment's job variables on its pool."""
    rendered = {f"pool:{pool}": render_job(pool, {}) for pool in POOLS}
    for d in deployments():
        pool = POOL_OF_DEPLOYMENT.get(d["name"])
        assert pool is not None, f"deployment {d['name']!r}: which pool? (POOL_OF_DEPLOYMENT)"
        variables = dict(d["work_pool"].get("job_variables") or {})
        rendered[f"deployment:{d['name']}"] = render_job(pool, variables, name=d["name"])
    return rendered


@pytest.fixture(scope="session")
def rendered_files(
    overlays: Rendered, jobs: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """Every rendered resource written out as YAML (one file per overlay, one per Job), the
    Jobs in the form the API server keeps (see deploy_render.for_validation)."""
    out = tmp_path_factory.mktemp("rendered")
    files = []
    for name, docs in overlays.items():
        path = out / f"overlay-{name}.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        files.append(path)
    for name, job in jobs.items():
        path = out / f"job-{name.replace(':', '-')}.yaml"
        path.write_text(yaml.safe_dump(for_validation(job), sort_keys=False))
        files.append(path)
    return files


@pytest.fixture(scope="session")
def deployments_by_name() -> dict[str, dict[str, Any]]:
    """The deployments of prefect.yaml, by name."""
    return {d["name"]: d for d in deployments()}
