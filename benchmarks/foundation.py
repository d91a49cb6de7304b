"""Simulator and decoder throughput on this machine.

    .venv/bin/python benchmarks/foundation.py [--n 400] [--write-docs]

Prints a markdown table (images/s, files/s, peak RSS); `--write-docs` also puts it in
docs/benchmarks.md. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from datetime import date

import numpy as np

from scintiflow.ingest.dicom import decode_dicom
from scintiflow.ingest.objects import decode_objects
from scintiflow.sim import generate_night, simulate_case
from scintiflow.storage import LocalStore

NIGHT = date(2026, 11, 27)


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}"


def run(n: int) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for site, matrix in (("A", 128), ("C", 256)):
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for i in range(n):
            simulate_case(
                ("normal", "graves", "subacute_thyroiditis", "thyroid_tumor")[i % 4], site, rng
            )
        rows.append(
            (
                f"simulate_case, site {site} ({matrix} px)",
                "images/s",
                _rate(n, time.perf_counter() - t0),
            )
        )

        t0 = time.perf_counter()
        files = list(generate_night(n, night=NIGHT, sites=(site,), seed=1))
        rows.append(
            (
                f"generate_night incl. DICOM encode, site {site} ({matrix} px)",
                "images/s",
                _rate(n, time.perf_counter() - t0),
            )
        )

        t0 = time.perf_counter()
        for f in files:
            decode_dicom(f.data, patient_hash_key=b"benchmark-phi-key")
        rows.append(
            (
                f"decode_dicom, 1 thread, default mix ({matrix} px)",
                "files/s",
                _rate(len(files), time.perf_counter() - t0),
            )
        )

        with tempfile.TemporaryDirectory() as tmp:
            store = LocalStore(tmp)
            keys = []
            for f in files:
                key = f"exports/{NIGHT}/{f.relative_key}"
                store.put(key, f.data)
                keys.append(key)
            workers = os.cpu_count() or 1
            t0 = time.perf_counter()
            ok = sum(
                1
                for d in decode_objects(
                    store, keys, workers=workers, patient_hash_key=b"benchmark-phi-key"
                )
                if d.ok
            )
            assert ok == len(keys)
            rows.append(
                (
                    f"store get + decode, {workers} threads ({matrix} px)",
                    "files/s",
                    _rate(len(keys), time.perf_counter() - t0),
                )
            )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak RSS of this benchmark", "MiB", f"{peak_mib:,.0f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=400, help="images per measurement")
    parser.add_argument("--write-docs", action="store_true", help="table into docs/benchmarks.md")
    args = parser.parse_args()
    rows = run(args.n)
    machine = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    table = [
        f"Simulator and decoder, n={args.n} per row ({machine}; "
        "`python benchmarks/foundation.py`):",
        "",
        "| measurement | unit | rate |",
        "|---|---|---:|",
    ]
    table += [f"| {name} | {unit} | {value} |" for name, unit, value in rows]
    markdown = "\n".join(table)
    print(markdown)
    if args.write_docs:
        from _tables import write_section

        write_section("foundation", markdown)


if __name__ == "__main__":
    main()
