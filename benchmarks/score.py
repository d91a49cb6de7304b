"""Scoring throughput: naive torch + Grad-CAM vs ONNX Runtime vs the full scintiflow path.

    .venv/bin/python benchmarks/score.py [--n 256] [--sizes 224,128] [--batch-size 16]
                                         [--arch resnet34] [--write-docs]

On the same simulated DICOM bytes (sites A and C: 128 and 256 px matrices), for each input
size it measures
  (a) torch eager + pytorch-grad-cam GradCAM (predicted class), model only: the baseline;
  (b) ONNX Runtime, logits only (graph without the CAM output), model only: the ceiling;
  (c) the full scintiflow path: DICOM bytes in a LocalStore -> decode -> preprocess ->
      ONNX Runtime (logits + in-graph CAM) -> heatmap upsampling -> two PNGs per image ->
      written to a LocalStore, with `score_keys` (tables included).
(a) and (b) get preprocessed tensors (decoding excluded), so c/a and c/b understate the
path's advantage. Peak RSS per stage is sampled from /proc/self/statm (all stages run in one
process, so ru_maxrss alone would only give the running maximum); stages run (b), (c), (a),
lightest first, since memory freed by a stage is not always returned to the OS. Prints a
markdown table; `--write-docs` also puts it in docs/benchmarks.md. Speed is measured here, never
asserted in tests.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np

NIGHT = date(2026, 11, 27)


class PeakRss:
    """Samples the current RSS every few ms in a thread; `.peak_mib` after the block."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    with PeakRss() as rss:
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
    return seconds, rss.peak_mib


def _int8_graph(fp32: bytes, calibration: np.ndarray) -> bytes:
    """ORT static quantisation (QDQ, per-channel int8 weights, uint8 activations)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        return dst.read_bytes()


def _load_model(registry: str | None, name: str, version: str, arch: str) -> tuple[object, str]:
    """A registered (trained) model, or a random-init `arch` (speed does not need training)."""
    import torch

    from scintiflow.ml.models import create_model

    if registry:
        from scintiflow.ml.registry import load_model
        from scintiflow.storage import open_store

        model, meta = load_model(open_store(registry), name, version)
        return model, meta.arch
    torch.manual_seed(0)
    return create_model(arch).eval(), arch


def run(
    n: int,
    sizes: list[int],
    batch_size: int,
    arch: str,
    threads: int,
    *,
    int8: bool = False,
    registry: str | None = None,
    model_name: str = "thyroid",
    model_version: str = "champion",
) -> tuple[list[list[str]], list[list[str]]]:
    import torch

    from scintiflow import CLASSES
    from scintiflow.inference.engines import ScoringModel, open_engine
    from scintiflow.inference.engines.export import export_onnx
    from scintiflow.inference.engines.ort_engine import OrtEngine, ort_session
    from scintiflow.inference.engines.torch_engine import gradcam_maps
    from scintiflow.inference.score import score_keys
    from scintiflow.ml.preprocess import PreprocessConfig, preprocess_batch
    from scintiflow.sim import generate_night
    from scintiflow.storage import LocalStore

    torch.set_num_threads(threads)
    tmp = Path(tempfile.mkdtemp(prefix="scintiflow-bench-"))
    source = LocalStore(str(tmp / "in"))
    labels: dict[str, str] = {}
    for i, f in enumerate(
        generate_night(n, night=NIGHT, sites=("A", "C"), seed=3, compressed_fraction=0.0)
    ):
        key = f"exports/{NIGHT}/{i:05d}.dcm"
        source.put(key, f.data)
        labels[key] = str(f.label)
    keys = sorted(labels)
    from scintiflow.ingest.objects import decode_object

    pixels = [
        rec.pixels
        for k in keys
        if (rec := decode_object(source, k, patient_hash_key=b"benchmark-phi-key").record)
        is not None
    ]
    y = np.array([CLASSES.index(labels[k]) for k in keys])
    model, arch = _load_model(registry, model_name, model_version, arch)
    rows: list[list[str]] = []
    int8_rows: list[list[str]] = []
    for size in sizes:
        config = PreprocessConfig(image_size=size)
        x = preprocess_batch(pixels, config)
        batches = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
        sm = ScoringModel(arch=arch, model=model, preprocess=config)

        def baseline(batches: list[np.ndarray] = batches) -> None:
            for b in batches:
                gradcam_maps(model, arch, torch.from_numpy(b), None)

        logits_graph = export_onnx(model, arch, size, cams=False)
        logits_only = ort_session(logits_graph, threads=threads)
        logits_spin = ort_session(logits_graph, threads=threads, spin=True)

        def ceiling(batches: list[np.ndarray] = batches, session: object = logits_only) -> None:
            for b in batches:
                session.run(["logits"], {"input": b})

        engine = open_engine("onnxruntime", sm, threads=threads)
        dest = LocalStore(str(tmp / f"out-{size}"))

        def full(engine: object = engine, sm: ScoringModel = sm, dest: LocalStore = dest) -> None:
            score_keys(
                source,
                keys,
                engine,
                sm,
                dest,
                "results/bench/run",
                batch_size=batch_size,
                workers=threads,
            )

        # Warm-up on one batch each: first-call allocations, thread pools, ORT arenas.
        baseline(batches[:1])
        ceiling(batches[:1])
        engine.run(batches[0])
        # Lightest first: freed memory is not always returned to the OS, so a stage's sampled
        # peak includes what earlier stages left mapped.
        # The ceiling is the faster of ORT's default (spinning) threads and sleeping ones.
        ceiling_s, ceiling_mib = _timed(ceiling)
        ceiling(batches[:1], logits_spin)
        spin_s, spin_mib = _timed(functools.partial(ceiling, batches, logits_spin))
        if spin_s < ceiling_s:
            ceiling_s, ceiling_mib = spin_s, max(ceiling_mib, spin_mib)
        full_s, full_mib = _timed(full)
        baseline_s, baseline_mib = _timed(baseline)
        a, b, c = len(x) / baseline_s, len(x) / ceiling_s, len(x) / full_s
        rows.append(
            [
                f"{arch} {size} px",
                f"{a:.1f} ({baseline_mib:.0f} MiB)",
                f"{b:.1f} ({ceiling_mib:.0f} MiB)",
                f"{c:.1f} ({full_mib:.0f} MiB)",
                f"{c / a:.2f}",
                f"{c / b:.2f}",
            ]
        )
        if int8:
            fp32_engine = OrtEngine(sm, threads=threads)
            q_engine = OrtEngine(
                sm,
                threads=threads,
                onnx_bytes=_int8_graph(export_onnx(model, arch, size), x[:32]),
            )
            q_engine.run(batches[0])

            def quantised(engine: object = q_engine, batches: list[np.ndarray] = batches) -> None:
                for b in batches:
                    engine.run(b)

            def reference(
                engine: object = fp32_engine, batches: list[np.ndarray] = batches
            ) -> None:
                for b in batches:
                    engine.run(b)

            q_s, _ = _timed(quantised)
            f_s, _ = _timed(reference)
            p32 = np.concatenate([fp32_engine.run(b)[0] for b in batches])
            p8 = np.concatenate([q_engine.run(b)[0] for b in batches])
            int8_rows.append(
                [
                    f"{arch} {size} px",
                    f"{len(x) / f_s:.1f}",
                    f"{len(x) / q_s:.1f}",
                    f"{f_s / q_s:.2f}",
                    f"{(p32.argmax(1) == y).mean():.3f}",
                    f"{(p8.argmax(1) == y).mean():.3f}",
                    f"{(p8.argmax(1) == p32.argmax(1)).mean():.3f}",
                ]
            )
    return rows, int8_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="images (sites A and C)")
    parser.add_argument("--sizes", default="224,128", help="input sizes, comma-separated")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--threads", type=int, default=0, help="0: available cores")
    parser.add_argument("--int8", action="store_true", help="also try ORT static INT8")
    parser.add_argument("--registry", help="store URL of a registry: use a trained model")
    parser.add_argument("--model-name", default="thyroid")
    parser.add_argument("--model", default="champion", help="version (with --registry)")
    parser.add_argument("--write-docs", action="store_true", help="table into docs/benchmarks.md")
    args = parser.parse_args()
    from scintiflow.ml.training import available_cores

    threads = args.threads or available_cores()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, int8_rows = run(
        args.n,
        sizes,
        args.batch_size,
        args.arch,
        threads,
        int8=args.int8,
        registry=args.registry,
        model_name=args.model_name,
        model_version=args.model,
    )
    header = [
        "model, input",
        "(a) torch + GradCAM img/s (peak RSS)",
        "(b) ORT logits img/s",
        "(c) scintiflow path img/s",
        "c/a",
        "c/b",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines.append("")
    lines.append(
        f"{args.n} simulated images (128 and 256 px matrices), batch {args.batch_size}, "
        f"{threads} threads, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; process peak RSS {peak:.0f} MiB. (a), (b): model only on "
        "preprocessed tensors; (c): DICOM bytes to PNGs in a LocalStore."
    )
    if int8_rows:
        head8 = ["model, input", "ORT fp32 img/s", "ORT int8 img/s", "speed-up"]
        head8 += ["accuracy fp32", "accuracy int8", "top-1 agreement"]
        lines += [
            "",
            "| " + " | ".join(head8) + " |",
            "|" + "---|" * len(head8),
            *("| " + " | ".join(r) + " |" for r in int8_rows),
            "",
            "INT8: ORT static quantisation (QDQ, per-channel int8 weights, uint8 activations, "
            "32 calibration images), model only; accuracy on the simulated labels "
            "(meaningful only with a trained `--registry` model).",
        ]
    markdown = "\n".join(lines)
    print(markdown)
    if args.write_docs:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _tables import write_section

        write_section("score", markdown)


if __name__ == "__main__":
    main()
