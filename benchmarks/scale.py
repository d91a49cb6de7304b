"""Scale and memory: nights of 1k, 5k and 10k simulated studies through the nightly steps.

Per size: a simulated night (sites A, B, C; 5 % broken files) and a registered random-init
ShuffleNetV2 at 64 px are written to a temporary LocalStore; then ONE child process runs the
night with `scintiflow.pipeline.night.run_night` (the plain loop over the flow's steps:
shards of 256 with checks, quarantine, scoring, heatmaps, thumbnails, SC; merge; report with
PDF; publish; ledger) and reports its own peak RSS (`VmHWM`; not `ru_maxrss`, which carries
the parent's peak into the child across exec: tests/rss_figures.py).
Timed inside the child: everything before publish (list, ledger, shards, merge), the report
and publish together, and the whole night.

    python benchmarks/scale.py [--sizes 1000 5000 10000] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
NIGHT = date(2026, 11, 27)


def _child(root: str) -> None:
    """Run the night on `root` and print its timings and peak RSS as JSON."""
    from rss_figures import peak_rss_bytes

    from scintiflow.pipeline.night import run_night
    from scintiflow.settings import Settings

    started = time.perf_counter()
    published = run_night(
        NIGHT.isoformat(), root, model="champion", engine="onnxruntime", settings=Settings()
    )
    total = time.perf_counter() - started
    m = published.manifest or {}
    print(
        json.dumps(
            {
                "total_s": total,
                "timings": m.get("timings_s", {}),
                "counts": m.get("counts", {}),
                "peak_rss_mib": peak_rss_bytes() / 2**20,
                "report_pdf_error": m.get("report_pdf_error"),
                "status": m.get("status"),
            }
        )
    )


def _measure(n: int, base: Path) -> dict[str, object]:
    from scintiflow.sim import write_night
    from scintiflow.storage import LocalStore

    root = base / f"night-{n}"
    shutil.copytree(base / "registry", root)
    t0 = time.perf_counter()
    write_night(
        LocalStore(root), night=NIGHT, n=n, sites=("A", "B", "C"), seed=n, bad_fraction=0.05
    )
    simulated = time.perf_counter() - t0
    # The simulator's gigabytes are still being written back to disk when it returns; the
    # night's fsynced puts would wait behind them (a 10k night measured 200 s before publish
    # right after simulating, 165 s on a settled disk).
    os.sync()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", str(root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    status = proc.wait()
    if status != 0:
        raise SystemExit(f"the night of {n} failed (status {status})")
    result = json.loads(out.strip().splitlines()[-1])
    shutil.rmtree(root)
    return {"n": n, "simulate_s": simulated, **result}


def _table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| studies | inputs | scored + quarantined | lost | wall s | img/s | before publish s "
        "| report + publish s | PDF | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        counts: dict[str, int] = r["counts"]  # type: ignore[assignment]
        t: dict[str, float] = r["timings"]  # type: ignore[assignment]
        total = float(r["total_s"])  # type: ignore[arg-type]
        done = counts.get("scored", 0) + counts.get("quarantined", 0)
        before = float(t.get("before_publish", 0.0))
        lines.append(
            f"| {r['n']} | {counts.get('inputs', 0)} | {done} | {counts.get('inputs', 0) - done} "
            f"| {total:.0f} | {counts.get('inputs', 0) / total:.1f} | {before:.0f} "
            f"| {total - before:.0f} | {r.get('report_pdf_error') or 'written'} "
            f"| {float(r['peak_rss_mib']):.0f} |"  # type: ignore[arg-type]
        )
    cpu = os.cpu_count()
    lines.append("")
    lines.append(
        f"{platform.processor() or platform.machine()}, {cpu} cores, Python "
        f"{platform.python_version()}; random-init ShuffleNetV2 at 64 px, ONNX Runtime fp32, "
        "shards of 256, batches of 32; the plain loop in one child process per size."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    from test_flows import register_random_champion

    from scintiflow.inference.engines import load_scoring_model, open_engine
    from scintiflow.storage import LocalStore

    base = Path(tempfile.mkdtemp(prefix="scintiflow-scale-"))
    registry = LocalStore(base / "registry")
    register_random_champion(registry)
    open_engine("onnxruntime", load_scoring_model(registry, "thyroid"))  # caches model.onnx
    rows = []
    for n in args.sizes:
        rows.append(_measure(n, base))
        print(json.dumps(rows[-1]), flush=True)
    table = _table(rows)
    print(table)
    if args.write_docs:
        from _tables import write_section

        write_section("scale", table)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
