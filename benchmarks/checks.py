"""Data checks throughput: files/s and peak RSS for a simulated night of 1,000 files.

The night (sites A, B, C; 10 % faulty files) is written to a temporary LocalStore first (not
timed). Timed: `run_checks` end to end (list, decode in a thread pool, checks table, one GX
validation, quarantine copies, data docs build + upload, checks.json), plus its parts.

    python benchmarks/checks.py [--n 1000] [--workers 0] [--write-docs]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="files in the night (all kinds)")
    parser.add_argument("--workers", type=int, default=0, help="decode threads (0: CPUs)")
    parser.add_argument("--write-docs", action="store_true", help="table into docs/benchmarks.md")
    args = parser.parse_args()

    from scintiflow.checks.run import check_keys, list_night, run_checks
    from scintiflow.checks.suite import validate_table
    from scintiflow.ingest.objects import decode_objects
    from scintiflow.sim import write_night

    night = date(2026, 11, 27)
    workers = args.workers or os.cpu_count() or 1
    good = round(args.n * 0.9)
    with tempfile.TemporaryDirectory(prefix="scintiflow-bench-") as tmp:
        from scintiflow.storage import LocalStore

        store = LocalStore(tmp)
        written = write_night(
            store, night=night, n=good, sites=("A", "B", "C"), seed=1, bad_fraction=0.1
        )
        files = written.files
        keys = list_night(store, night)
        import great_expectations  # noqa: F401  (import cost is paid once per process)

        # decode only (thread pool)
        start = time.perf_counter()
        for _ in decode_objects(
            store, keys, workers=workers, patient_hash_key=b"benchmark-phi-key"
        ):
            pass
        decode_s = time.perf_counter() - start

        # decode + table + one GX validation, nothing written
        start = time.perf_counter()
        table, _ = check_keys(store, keys, workers=workers)
        check_s = time.perf_counter() - start

        # GX validation alone over the same table
        start = time.perf_counter()
        validate_table(table)
        gx_s = time.perf_counter() - start

        # the whole step
        start = time.perf_counter()
        summary = run_checks(store, night=night, run_id="bench", workers=workers)
        full_s = time.perf_counter() - start
        assert len(summary.accepted) + len(summary.quarantined) == files

    cpus = os.cpu_count()
    rows = [
        ("decode only (get + decode_dicom)", f"{files / decode_s:,.0f}", f"{decode_s:.1f}"),
        ("decode + checks table + GX validation", f"{files / check_s:,.0f}", f"{check_s:.1f}"),
        ("GX validation of the table alone", f"{files / gx_s:,.0f}", f"{gx_s:.1f}"),
        (
            "`run_checks` end to end (+ quarantine, data docs, checks.json)",
            f"{files / full_s:,.0f}",
            f"{full_s:.1f}",
        ),
    ]
    lines = [
        f"Data checks on a simulated night of {files} files ({good} good from sites A, B, C; "
        f"{files - good} faulty; {len(summary.quarantined)} quarantined), {workers} decode "
        f"threads ({cpus} cores, {platform.machine()}; `python benchmarks/checks.py`):",
        "",
        "| step | files/s | seconds |",
        "|---|---:|---:|",
        *(f"| {name} | {rate} | {secs} |" for name, rate, secs in rows),
        f"| peak RSS of this benchmark | {_peak_rss_mib():.0f} MiB | |",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if args.write_docs:
        from _tables import write_section

        write_section("checks", markdown)


if __name__ == "__main__":
    main()
