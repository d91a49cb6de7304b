"""Scoring throughput: naive torch + Grad-CAM vs ONNX Runtime (fp32 and INT8) vs the full path.

    .venv/bin/python benchmarks/score.py [--n 256] [--sizes 224,128] [--batch-size 16]
                                         [--rounds 3] [--arch resnet34] [--registry URL]
                                         [--write-docs]

On the same simulated DICOM bytes (sites A and C: 128 and 256 px matrices), for each input
size it measures
  (a)  torch eager + pytorch-grad-cam GradCAM (predicted class), model only: the baseline;
  (b)  ONNX Runtime fp32, logits only (graph without the CAM output), model only: the ceiling;
  (b') the same with the INT8 graph (`engines.quantize.quantize_int8`, calibrated on 32 of
       the images);
  (c)  the full scintiflow path: DICOM bytes in a LocalStore -> decode -> preprocess ->
       ONNX Runtime fp32 (logits + in-graph CAM) -> heatmap upsampling -> two PNGs per image
       -> written to a LocalStore, with `score_keys` (tables included);
  (c') the same path with the INT8 engine (`onnxruntime-int8`, CAM in fp32).
(b), (b'), (c), (c') run alternately, `--rounds` times, in one process; the tables give each
one's median (on a shared machine, alternating keeps the comparison fair). A second table
gives model-only rows for the earlier INT8 graph (no `quant_pre_process`, head quantised:
what the docs once measured as 0.52x), torch fp32 and torch bf16 autocast (channels_last).
With `--registry` (a trained version), a third table gives int8-vs-fp32 and bf16-vs-fp32
agreement on these images at the version's own input size, and the version's `int8.json`
proof when it has one.

(a) and (b) get preprocessed tensors (decoding excluded), so c/a and c/b understate the
path's advantage. Peak RSS per stage is sampled from /proc/self/statm (the maximum over the
rounds). Prints markdown; `--write-docs` puts it in docs/benchmarks.md (scoring). Speed is
measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

NIGHT = date(2026, 11, 27)
CALIBRATION_IMAGES = 32


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


@dataclass
class Stage:
    """One measured thing: img/s per round, peak RSS (max over rounds)."""

    rates: list[float] = field(default_factory=list)
    mib: float = 0.0

    def add(self, images: int, seconds: float, mib: float) -> None:
        self.rates.append(images / seconds)
        self.mib = max(self.mib, mib)

    @property
    def median(self) -> float:
        return float(np.median(self.rates)) if self.rates else float("nan")

    def cell(self, memory: bool = True) -> str:
        text = f"{self.median:.1f}"
        return f"{text} ({self.mib:.0f} MiB)" if memory else text


def old_int8_graph(fp32: bytes, calibration: np.ndarray) -> bytes:
    """The INT8 graph as the earlier benchmark built it: `quantize_static` straight on the
    exported graph (no `quant_pre_process`), classifier and logits quantised too."""
    from scintiflow.inference.engines.quantize import QuantOptions, quantize_int8

    return quantize_int8(fp32, calibration, QuantOptions(preprocess=False, float_head=False))


def _load_model(registry: str | None, name: str, version: str, arch: str) -> tuple[Any, str]:
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


@dataclass
class Night:
    """The simulated DICOM night in a LocalStore, decoded once for the model-only stages."""

    tmp: Path
    source: Any
    keys: list[str]
    pixels: list[np.ndarray]
    y: np.ndarray


def _night(n: int) -> Night:
    from scintiflow import CLASSES
    from scintiflow.ingest.objects import decode_object
    from scintiflow.sim import generate_night
    from scintiflow.storage import LocalStore

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
    pixels, y = [], []
    for k in keys:
        rec = decode_object(source, k, patient_hash_key=b"bench").record
        if rec is not None:
            pixels.append(rec.pixels)
            y.append(CLASSES.index(labels[k]))
    return Night(tmp, source, keys, pixels, np.array(y))


def _loop(run: Callable[[np.ndarray], object], batches: list[np.ndarray]) -> Callable[[], None]:
    def go() -> None:
        for b in batches:
            run(b)

    return go


def _torch_runner(model: Any, bf16: bool) -> Callable[[np.ndarray], Any]:
    """torch eager, channels_last, under inference_mode; bf16 autocast on CPU when asked."""
    import copy

    import torch

    net = copy.deepcopy(model).float().eval().to(memory_format=torch.channels_last)

    def run(b: np.ndarray) -> Any:
        x = torch.from_numpy(b).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return net(x).float()

    return run


def _size_stages(
    night: Night,
    model: Any,
    arch: str,
    size: int,
    batch_size: int,
    threads: int,
    rounds: int,
) -> dict[str, Stage]:
    """Every stage at one input size; the ORT stages alternate fp32/int8 `rounds` times."""
    import torch

    from scintiflow.inference.engines import ScoringModel
    from scintiflow.inference.engines.export import export_onnx
    from scintiflow.inference.engines.ort_engine import OrtEngine, ort_session
    from scintiflow.inference.engines.quantize import quantize_int8
    from scintiflow.inference.engines.torch_engine import gradcam_maps
    from scintiflow.inference.streaming import score_keys
    from scintiflow.ml.preprocess import PreprocessConfig, preprocess_batch
    from scintiflow.storage import LocalStore

    config = PreprocessConfig(image_size=size)
    x = preprocess_batch(night.pixels, config)
    batches = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
    calib = x[:CALIBRATION_IMAGES]
    sm = ScoringModel(arch=arch, model=model, preprocess=config)
    logits32 = export_onnx(model, arch, size, cams=False)
    graphs = {"b": logits32, "b'": quantize_int8(logits32, calib)}
    graphs["old"] = old_int8_graph(logits32, calib)
    sessions = {
        (k, spin): ort_session(g, threads=threads, spin=spin)
        for k, g in graphs.items()
        for spin in (False, True)
    }
    engines = {
        "c": OrtEngine(sm, threads=threads),
        "c'": OrtEngine(
            sm, threads=threads, onnx_bytes=quantize_int8(export_onnx(model, arch, size), calib)
        ),
    }
    runners: dict[str, Callable[[np.ndarray], Any]] = {
        "torch fp32": _torch_runner(model, bf16=False),
        "torch bf16": _torch_runner(model, bf16=True),
    }

    def full(engine: OrtEngine, out: str) -> Callable[[], object]:
        dest = LocalStore(str(night.tmp / out))
        return lambda: score_keys(
            night.source,
            night.keys,
            engine,
            sm,
            dest,
            "results/bench/run",
            batch_size=batch_size,
            workers=threads,
            patient_hash_key=b"bench",
        )

    for (_, _), s in sessions.items():  # warm-up: first-call allocations, pools, arenas
        s.run(["logits"], {"input": batches[0]})
    for e in engines.values():
        e.run(batches[0])
    for r in runners.values():
        r(batches[0])
    stages = {k: Stage() for k in ("a", "b", "b'", "old", "c", "c'", *runners)}
    n = len(x)
    for rnd in range(rounds):
        for key in ("b", "b'", "old"):  # the faster of sleeping and spinning ORT threads
            best = min(
                (
                    _timed(
                        _loop(
                            lambda b, s=sessions[(key, spin)]: s.run(["logits"], {"input": b}),
                            batches,
                        )
                    )
                    for spin in (False, True)
                ),
                key=lambda t: t[0],
            )
            stages[key].add(n, *best)
        for key in ("c", "c'"):
            stages[key].add(n, *_timed(full(engines[key], f"out-{size}-{key}-{rnd}")))
        for key, runner in runners.items():
            stages[key].add(n, *_timed(_loop(runner, batches)))
    gradcam_maps(model, arch, torch.from_numpy(batches[0]), None)  # warm-up
    stages["a"].add(
        n, *_timed(_loop(lambda b: gradcam_maps(model, arch, torch.from_numpy(b), None), batches))
    )
    return stages


@dataclass(frozen=True)
class _Labelled:
    """A night image as a calibration candidate (site unknown here)."""

    key: str
    label: int
    site: str
    pixels: np.ndarray


def agreement_rows(registry: str, name: str, version: str, night: Night) -> list[str]:
    """int8-vs-fp32 (ORT) and bf16-vs-fp32 (torch) figures of a trained version on the night,
    at its own input size, plus its int8.json proof when it has one."""
    from scintiflow.inference.engines import load_scoring_model, softmax_probs
    from scintiflow.inference.engines.agreement import compare_outputs
    from scintiflow.inference.engines.calibration import calibration_set
    from scintiflow.inference.engines.export import model_onnx
    from scintiflow.inference.engines.int8 import proof_markdown, read_int8_proof
    from scintiflow.inference.engines.ort_engine import OrtEngine
    from scintiflow.inference.engines.quantize import quantize_int8
    from scintiflow.ml.preprocess import preprocess_batch
    from scintiflow.storage import open_store

    sm = load_scoring_model(open_store(registry), name, version)
    x = preprocess_batch(night.pixels, sm.preprocess)
    proof = read_int8_proof(sm)
    if proof is not None and proof.graph.get("sha256"):
        int8 = OrtEngine(sm, precision="int8")
        source = "the version's proven model.int8.onnx"
    else:  # not proven: calibrate on a stratified draw of these images (noted)
        images = [
            _Labelled(str(i), int(c), "?", p)
            for i, (c, p) in enumerate(zip(night.y, night.pixels, strict=True))
        ]
        cal = calibration_set(images, sm.preprocess, n=CALIBRATION_IMAGES)
        int8 = OrtEngine(sm, onnx_bytes=quantize_int8(model_onnx(sm), cal.x), precision="int8")
        source = f"a graph calibrated on {CALIBRATION_IMAGES} of these images"
    fp32 = OrtEngine(sm)
    chunks = [x[i : i + 32] for i in range(0, len(x), 32)]

    def score(run: Callable[[np.ndarray], Any]) -> tuple[np.ndarray, np.ndarray | None]:
        outs = [run(b) for b in chunks]
        cams = [o[1] for o in outs if o[1] is not None]
        return np.concatenate([o[0] for o in outs]), (np.concatenate(cams) if cams else None)

    ref = score(fp32.run)
    rows = [("ORT int8 vs ORT fp32", compare_outputs("night", night.y, ref, score(int8.run)))]
    for label, bf16 in (("torch fp32 vs ORT fp32", False), ("torch bf16 vs ORT fp32", True)):
        runner = _torch_runner(sm.model, bf16=bf16)
        logits = score(lambda b, r=runner: (r(b).numpy(), None))[0]
        rows.append(
            (
                label,
                compare_outputs(
                    "night", night.y, ref, (softmax_probs(logits, sm.temperature), None)
                ),
            )
        )
    head = "| comparison | n | top-1 agreement | accuracy fp32 | accuracy other | max prob diff "
    head += "| CAM Pearson median | CAM Pearson p5 |"
    lines = [
        f"Trained version {sm.name} {sm.version} ({sm.arch}, {sm.preprocess.image_size} px) "
        f"on the {len(x)} benchmark images (sites A and C); int8 from {source}.",
        "",
        head,
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, s in rows:
        med = "-" if s.cam_pearson_median is None else f"{s.cam_pearson_median:.5f}"
        p5 = "-" if s.cam_pearson_p5 is None else f"{s.cam_pearson_p5:.5f}"
        lines.append(
            f"| {label} | {s.n} | {s.agreement:.4f} | {s.accuracy_fp32:.4f} "
            f"| {s.accuracy_int8:.4f} | {s.max_prob_diff:.4f} | {med} | {p5} |"
        )
    if proof is not None:
        lines += ["", "The version's own proof (`int8.json`):", "", proof_markdown(proof)]
    return lines


def tables(all_stages: dict[int, dict[str, Stage]], arch: str) -> list[str]:
    """The two speed tables (markdown lines)."""
    head = [
        "model, input",
        "(a) torch + GradCAM img/s (peak RSS)",
        "(b) ORT fp32 logits",
        "(b') ORT int8 logits",
        "(c) path fp32",
        "(c') path int8",
        "c/a",
        "c/b",
        "c'/c",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size, st in all_stages.items():
        a, c, c8 = st["a"].median, st["c"].median, st["c'"].median
        cells = [
            f"{arch} {size} px",
            st["a"].cell(),
            st["b"].cell(),
            st["b'"].cell(),
            st["c"].cell(),
            st["c'"].cell(),
            f"{c / a:.2f}",
            f"{c / st['b'].median:.2f}",
            f"{c8 / c:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    head2 = [
        "model, input",
        "ORT fp32",
        "ORT int8",
        "ORT int8, earlier graph",
        "torch fp32 (channels_last)",
        "torch bf16 autocast (channels_last)",
    ]
    lines += ["", "Model only, logits, img/s (median; x = vs ORT fp32):", ""]
    lines += ["| " + " | ".join(head2) + " |", "|" + "---|" * len(head2)]
    for size, st in all_stages.items():
        base = st["b"].median
        cells = [f"{arch} {size} px", f"{base:.1f}"]
        for key in ("b'", "old", "torch fp32", "torch bf16"):
            cells.append(f"{st[key].median:.1f} ({st[key].median / base:.2f}x)")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="images (sites A and C)")
    parser.add_argument("--sizes", default="224,128", help="input sizes, comma-separated")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating repeats (median)")
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--threads", type=int, default=0, help="0: available cores")
    parser.add_argument("--registry", help="store URL of a registry: agreement of a trained model")
    parser.add_argument("--model-name", default="thyroid")
    parser.add_argument("--model", default="champion", help="version (with --registry)")
    parser.add_argument("--write-docs", action="store_true", help="into docs/benchmarks.md")
    args = parser.parse_args()
    import torch

    from scintiflow.ml.training import available_cores

    threads = args.threads or available_cores()
    torch.set_num_threads(threads)
    night = _night(args.n)
    model, arch = _load_model(None, args.model_name, args.model, args.arch)
    stages = {
        int(s): _size_stages(night, model, arch, int(s), args.batch_size, threads, args.rounds)
        for s in args.sizes.split(",")
    }
    lines = tables(stages, arch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += [
        "",
        f"{args.n} simulated images (128 and 256 px matrices), batch {args.batch_size}, "
        f"{threads} threads, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; medians of {args.rounds} alternating rounds; process peak "
        f"RSS {peak:.0f} MiB. (a), (b), (b'): model only on preprocessed tensors; (c), (c'): "
        "DICOM bytes to PNGs in a LocalStore. Speed rows use an untrained "
        f"{arch} (speed does not depend on training); INT8: static QDQ, per-channel int8 "
        f"weights, uint8 activations, {CALIBRATION_IMAGES} calibration images, classifier and "
        "CAM branch in float32.",
    ]
    if args.registry:
        lines += ["", *agreement_rows(args.registry, args.model_name, args.model, night)]
    markdown = "\n".join(lines)
    print(markdown)
    if args.write_docs:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _tables import write_section

        write_section("score", markdown)


if __name__ == "__main__":
    main()
