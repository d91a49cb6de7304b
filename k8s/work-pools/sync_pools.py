"""Create or update the Kubernetes work pools `scintiflow-cpu` and `scintiflow-gpu` from the base
job templates next to this file, through the Prefect API that PREFECT_API_URL points at.

    PREFECT_API_URL=http://127.0.0.1:4200/api python k8s/work-pools/sync_pools.py
    python k8s/work-pools/sync_pools.py --pool gpu      # one pool only

Idempotent: a pool that exists gets the template from its file (the same thing the worker
chart's init container does on every worker start); one that does not is created, with the
file's template, type `kubernetes`, and a `default` queue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
POOLS = {"scintiflow-cpu": HERE / "cpu.json", "scintiflow-gpu": HERE / "gpu.json"}


async def sync_pools(client: Any, names: list[str]) -> dict[str, str]:
    """Create or update each named pool; returns `created` or `updated` per pool name."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    done = {}
    for name in names:
        template = json.loads(POOLS[name].read_text())
        description = f"scintiflow on Kubernetes ({POOLS[name].name} in k8s/work-pools)"
        try:
            await client.read_work_pool(name)
        except ObjectNotFound:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="kubernetes",
                    description=description,
                    base_job_template=template,
                )
            )
            done[name] = "created"
        else:
            await client.update_work_pool(
                name,
                WorkPoolUpdate(description=description, base_job_template=template),
            )
            done[name] = "updated"
    return done


async def _main(names: list[str]) -> dict[str, str]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await sync_pools(client, names)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", choices=["cpu", "gpu"], action="append")
    args = parser.parse_args(argv)
    names = [f"scintiflow-{p}" for p in args.pool] if args.pool else list(POOLS)
    for name, what in asyncio.run(_main(names)).items():
        print(f"{name}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
