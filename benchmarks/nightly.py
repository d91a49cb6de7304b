"""Orchestration overhead of the nightly flow: the same night through Prefect and without it.

A simulated night (sites A, B, C; 5 % broken files) and a registered champion (random-init
ShuffleNetV2 at 64 px: the model's speed is not what is measured) are written to a temporary
LocalStore and copied once per measurement, so every run starts with an empty ledger. Timed:

- plain: `scintiflow.pipeline.night.run_night`, the same batch functions in a plain loop;
- flow: `flows.nightly.nightly` on Prefect's ephemeral API (server started before timing),
  with the same shard and batch sizes: one task run per shard for checks and for scoring,
  progress artifact updates, the result tables and links.

Runs alternate (plain, flow, plain, flow, ...) so load drift on a shared machine hits both.

    python benchmarks/nightly.py [--n 1000] [--shard-size 256] [--batch-size 32] [--repeats 2]
                                 [--write-docs]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="studies in the night (all kinds)")
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write-docs", action="store_true", help="table into docs/benchmarks.md")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="scintiflow-bench-nightly-"))
    os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect-home"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    from prefect.testing.utilities import prefect_test_harness
    from test_flows import register_random_champion

    from flows.nightly import nightly
    from scintiflow.pipeline.night import run_night
    from scintiflow.sim import write_night
    from scintiflow.storage import LocalStore

    night = date(2026, 11, 27)
    base = LocalStore(tmp / "base")
    good = round(args.n * 0.95)
    summary = write_night(
        base, night=night, n=good, sites=("A", "B", "C"), seed=1, bad_fraction=0.05
    )
    register_random_champion(base)
    n_inputs = summary.images + summary.faults
    print(f"night: {summary.images} images + {summary.faults} faulty files", file=sys.stderr)

    def fresh(tag: str) -> str:
        root = tmp / tag
        shutil.copytree(base.root, root)
        return str(root)

    times: dict[str, list[float]] = {"plain": [], "flow": []}
    counts: dict[str, dict[str, int]] = {}
    with prefect_test_harness(server_startup_timeout=90):
        # warm-up: imports, GX, ONNX export cache (in the version folder), server connection
        warm = fresh("warm")
        nightly(
            night=str(night), source=warm, shard_size=args.shard_size, batch_size=args.batch_size
        )
        for i in range(args.repeats):
            for path in ("plain", "flow"):
                root = fresh(f"{path}-{i}")
                t0 = time.perf_counter()
                if path == "plain":
                    res = run_night(
                        str(night), root, shard_size=args.shard_size, batch_size=args.batch_size
                    )
                    assert res.manifest is not None
                    counts[path] = res.manifest["counts"]
                else:
                    out = nightly(
                        night=str(night),
                        source=root,
                        shard_size=args.shard_size,
                        batch_size=args.batch_size,
                    )
                    counts[path] = {k: out[k] for k in ("inputs", "scored", "quarantined")}
                times[path].append(time.perf_counter() - t0)
                print(f"{path} #{i + 1}: {times[path][-1]:.1f} s", file=sys.stderr)
                shutil.rmtree(root, ignore_errors=True)
    assert counts["plain"]["inputs"] == counts["flow"]["inputs"] == n_inputs
    for k in ("scored", "quarantined"):
        assert counts["plain"][k] == counts["flow"][k], k
    plain, flow = statistics.median(times["plain"]), statistics.median(times["flow"])
    overhead = 100.0 * (flow - plain) / plain
    shards = -(-n_inputs // args.shard_size)
    lines = [
        f"Nightly flow vs the same batch functions without Prefect: {n_inputs} studies "
        f"({counts['flow']['scored']} scored, {counts['flow']['quarantined']} quarantined), "
        f"{shards} shards of {args.shard_size}, engine batch {args.batch_size}, median of "
        f"{args.repeats} alternating runs, report with PDF and SC included in both "
        f"({platform.machine()}, {os.cpu_count()} CPUs; `python benchmarks/nightly.py`):",
        "",
        "| path | wall s (median) | runs (s) | studies/s |",
        "|---|---:|---|---:|",
    ]
    for name, label in (("plain", "plain loop (`run_night`)"), ("flow", "Prefect flow")):
        med = statistics.median(times[name])
        runs = ", ".join(f"{t:.1f}" for t in times[name])
        lines.append(f"| {label} | {med:.1f} | {runs} | {n_inputs / med:.0f} |")
    lines.append(f"| **orchestration overhead** | **{overhead:+.1f} %** | | |")
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    if args.write_docs:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _tables import write_section

        write_section("nightly", markdown)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
