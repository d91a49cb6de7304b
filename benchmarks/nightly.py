"""Orchestration overhead of the nightly flow: the same night through Prefect and without it.

A simulated night (sites A, B, C; 5 % broken files) and a registered champion (random-init
ShuffleNetV2 at 64 px: the model's speed is not what is measured) are written to a temporary
LocalStore and copied once per measurement, so every run starts with an empty ledger. Timed:

- plain: `scintiflow.pipeline.night.run_night`, the same batch functions in a plain loop;
- flow: `flows.nightly.nightly` on Prefect's ephemeral API (server started before timing),
  with the same shard and batch sizes: one task run per shard for checks and for scoring,
  progress artifact updates, the result tables and links.

Runs alternate (plain, flow, plain, flow, ...) so load drift on a shared machine hits both.

`--ratio` measures instead how close the whole flow comes to the network alone, at the
production image size: a night of `--n` studies (400; no broken files) scored by a
random-init ResNet-34 exported at 224 px through the whole flow (shards: checks, scoring with
heatmaps, thumbnails and SC; merge; report with PDF; publish) with `--engine onnxruntime`
(fp32), against ONNX Runtime fp32 logits-only on the same images in the same process. The
flow's start-up is removed by also timing a 16-study night: nightly img/s = (n - 16) /
(t(n) - t(16)). The report task is timed on its own (ms per study), and the ratio is given
with and without it.

    python benchmarks/nightly.py [--n 1000] [--shard-size 256] [--batch-size 32] [--repeats 2]
                                 [--write-docs]
    python benchmarks/nightly.py --ratio [--n 400] [--image-size 224] [--write-docs]
"""

from __future__ import annotations

import argparse
import math
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


def _prefect_home(prefix: str) -> Path:
    """A temp folder for the run, with Prefect's home (and quiet settings) in it."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect-home"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    return tmp


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=None, help="studies in the night (default 1000; --ratio: 400)"
    )
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write-docs", action="store_true", help="table into docs/benchmarks.md")
    parser.add_argument("--ratio", action="store_true", help="flow vs ORT logits-only (224 px)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--label", default="after", help="row label of a --ratio run")
    return parser.parse_args()


def main() -> None:
    args = _args()
    if args.n is None:
        args.n = 400 if args.ratio else 1000
    if args.ratio:
        ratio_main(args)
        return

    tmp = _prefect_home("scintiflow-bench-nightly-")

    from prefect.testing.utilities import prefect_test_harness
    from test_flows import register_random_champion

    from flows.nightly import nightly
    from scintiflow.pipeline.night import run_night
    from scintiflow.settings import get_settings
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
                        str(night),
                        root,
                        shard_size=args.shard_size,
                        batch_size=args.batch_size,
                        settings=get_settings(),
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
    markdown = _overhead_table(times, counts, n_inputs, args)
    print(markdown)
    if args.write_docs:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _tables import write_section

        write_section("nightly", markdown)
    shutil.rmtree(tmp, ignore_errors=True)


def _overhead_table(
    times: dict[str, list[float]],
    counts: dict[str, dict[str, int]],
    n_inputs: int,
    args: argparse.Namespace,
) -> str:
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
    return "\n".join(lines) + "\n"


def _ort_logits_per_s(root: str, night: date, batch_size: int) -> float:
    """ONNX Runtime fp32 logits-only img/s on the night's images (decode not timed)."""
    import numpy as np

    from scintiflow.inference.engines import load_scoring_model, open_engine
    from scintiflow.ingest.objects import decode_objects, night_prefix
    from scintiflow.ml.preprocess import preprocess
    from scintiflow.storage import LocalStore

    store = LocalStore(root)
    sm = load_scoring_model(store, "thyroid")
    engine = open_engine("onnxruntime", sm, maps=False)
    keys = [o.key for o in store.list(night_prefix(night))]
    xs = [
        preprocess(o.record.pixels, sm.preprocess)
        for o in decode_objects(store, keys, patient_hash_key=b"bench")
        if o.record is not None
    ]
    batches = [np.stack(xs[i : i + batch_size]) for i in range(0, len(xs), batch_size)]
    engine.run(batches[0])  # warm-up
    t0 = time.perf_counter()
    for b in batches:
        engine.run(b)
    return len(xs) / (time.perf_counter() - t0)


def ratio_main(args: argparse.Namespace) -> None:
    """The whole flow against the network alone (see the module docstring)."""
    tmp = _prefect_home("scintiflow-bench-ratio-")
    from prefect.testing.utilities import prefect_test_harness
    from test_flows import register_random_champion

    from flows.nightly import nightly
    from scintiflow.sim import write_night
    from scintiflow.storage import LocalStore

    night = date(2026, 11, 27)
    roots = {}
    for n in (16, args.n):
        store = LocalStore(tmp / f"night-{n}")
        write_night(store, night=night, n=n, sites=("A", "B", "C"), seed=1, bad_fraction=0.0)
        register_random_champion(store, arch="resnet34", image_size=args.image_size)
        roots[n] = str(store.root)
    ort = _ort_logits_per_s(roots[args.n], night, args.batch_size)
    wall: dict[int, float] = {}
    report_s: dict[int, float] = {}
    with prefect_test_harness(server_startup_timeout=90):
        for n in (16, args.n):
            t0 = time.perf_counter()
            out = nightly(
                night=str(night),
                source=roots[n],
                engine="onnxruntime",
                shard_size=args.shard_size,
                batch_size=args.batch_size,
            )
            wall[n] = time.perf_counter() - t0
            # code before the report task had none: the report ran inside publish
            report_s[n] = float(out["timings_s"].get("report", "nan"))
            print(f"flow, {n} studies: {wall[n]:.1f} s {out['timings_s']}", file=sys.stderr)
    extra = args.n - 16
    flow = extra / (wall[args.n] - wall[16])
    no_report = extra / (wall[args.n] - wall[16] - (report_s[args.n] - report_s[16]))
    report_ms = 1000.0 * (report_s[args.n] - report_s[16]) / extra
    without = "n/a" if math.isnan(no_report) else f"{no_report / ort:.2f}"
    per_study = "n/a" if math.isnan(report_ms) else f"{report_ms:.0f}"
    row = (
        f"| {args.label} | {args.n} | {flow:.1f} | {ort:.1f} | **{flow / ort:.2f}** | "
        f"{without} | {per_study} |"
    )
    print(row)
    if args.write_docs:
        _write_ratio_row(args.label, row)
    shutil.rmtree(tmp, ignore_errors=True)


RATIO_HEADER = [
    "| code | studies | nightly flow img/s | ORT fp32 logits-only img/s | ratio | "
    "ratio without the report task | report task ms/study |",
    "|---|---:|---:|---:|---:|---:|---:|",
]


def _write_ratio_row(label: str, row: str) -> None:
    """Replace (or add) the row of `label` in the `nightly-ratio` section."""
    import re

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _tables import PAGE, write_section

    found = re.search(
        r"<!-- bench:nightly-ratio:start -->\n(.*?)<!-- bench:nightly-ratio:end -->",
        PAGE.read_text(),
        re.S,
    )
    lines = found.group(1).splitlines() if found else []
    rows = [x for x in lines if x.startswith("| ") and not x.startswith(("| code", "|---"))]
    rows = [x for x in rows if not x.startswith(f"| {label} |")] + [row]
    write_section("nightly-ratio", "\n".join(RATIO_HEADER + rows) + "\n")


if __name__ == "__main__":
    main()
