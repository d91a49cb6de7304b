"""Scoring decoded images in engine batches: prediction rows + heatmap objects out.

    rows, failures, written = score_prepared(items, engine, sm, dest, prefix, batch_size=32)

`score_prepared` is what the nightly shard runs on the images it has decoded (`prepared`
turns a decoded object into the engine's input): the engine runs batch by batch while a
thread pool encodes and writes the previous batch's PNGs; every write returns its hash.
Scoring by key stream (`score_keys`, `score_batch`) lives in `inference.streaming`.

Outputs under the destination prefix (the nightly flow uses `results/<night>/<run_id>`):
- `predictions.csv`, `predictions.jsonl`: one row per scored image, columns
  `PREDICTION_COLUMNS` (probabilities in the model's class order);
- `heatmaps/<sha256>.overlay.png` (8-bit RGB overlay) and `heatmaps/<sha256>.map.png` (16-bit
  raw map) for the predicted class; with `all_class_maps`, also
  `heatmaps/<sha256>.<class>.overlay.png|.map.png` for every class. Keys derive from the
  input's SHA-256, never from identifiers;
- `score_failures.jsonl` when some key could not be scored (read or decode failure): key,
  sha256, reason code, message.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from scintiflow.ingest.objects import DecodedObject
from scintiflow.storage.jsonio import Written, put_bytes
from scintiflow.storage.layout import PREDICTIONS_CSV, PREDICTIONS_JSONL, heatmap_keys

if TYPE_CHECKING:
    from scintiflow.inference.engines import Engine, ScoringModel
    from scintiflow.storage import ObjectStore

log = logging.getLogger(__name__)

PREDICTION_COLUMNS: tuple[str, ...] = (
    "key",
    "sha256",
    "predicted_label",
    "p_normal",
    "p_graves",
    "p_subacute_thyroiditis",
    "p_thyroid_tumor",
    "confidence",
    "low_confidence",
    "model_version",
    "engine",
    "precision",
    "heatmap_key",
    "overlay_key",
    "scan_thumbnail_key",
    "overlay_thumbnail_key",
    "sc_key",
)
FAILURES_JSONL = "score_failures.jsonl"

ProgressFn = Callable[[int, int | None], None]


@dataclass(frozen=True, slots=True)
class PredictionRow:
    """One scored image (no identifiers: the key is a hash-named export, plus its SHA-256)."""

    key: str
    sha256: str
    predicted_label: str
    p_normal: float
    p_graves: float
    p_subacute_thyroiditis: float
    p_thyroid_tumor: float
    confidence: float
    low_confidence: bool
    model_version: str
    engine: str
    precision: str  # the network's arithmetic (`engine.precision`: fp32, int8, fp16, bf16)
    heatmap_key: str
    overlay_key: str
    # written by the nightly shard for the report ("" when not written, e.g. `scintiflow score`)
    scan_thumbnail_key: str = ""
    overlay_thumbnail_key: str = ""
    sc_key: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ScoreFailure:
    """A key that could not be scored, with a stable reason code."""

    key: str
    sha256: str | None
    reason: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True, eq=False)
class _Prepared:
    """One decoded, preprocessed image (or its failure)."""

    key: str
    sha256: str | None
    pixels: np.ndarray | None = field(default=None, repr=False)  # (rows, cols) counts
    x: np.ndarray | None = field(default=None, repr=False)  # (1, S, S) model input
    failure: ScoreFailure | None = None


def prepared(obj: DecodedObject, sm: ScoringModel) -> _Prepared:
    """A decoded object as the engine's input (or as its failure): no second fetch or decode."""
    from scintiflow.ml.preprocess import preprocess

    if obj.record is None:
        failure = ScoreFailure(
            obj.key, obj.sha256, obj.reason or "decode_failed", obj.message or ""
        )
        return _Prepared(obj.key, obj.sha256, failure=failure)
    pixels = obj.record.pixels
    return _Prepared(obj.key, obj.sha256, pixels=pixels, x=preprocess(pixels, sm.preprocess))


def results_prefix(night: str, run_id: str, results: str = "results") -> str:
    """`results/<night>/<run_id>`: where one nightly run's outputs go."""
    return f"{results.strip('/')}/{night}/{run_id}"


AfterOverlay = Callable[["_Prepared", "PredictionRow", bytes], list[Written]]
"""Called with an input, its row and its predicted-class overlay PNG once that is written
(the shard writes the report's thumbnails and the Secondary Capture from it)."""


def _write_heatmaps(
    dest: ObjectStore,
    item: _Prepared,
    maps: dict[int, np.ndarray],
    row: PredictionRow,
    names: Sequence[str],
    prefix: str,
    all_classes: bool,
    after: AfterOverlay | None = None,
) -> list[Written]:
    """Encode and write one input's map PNGs; what was written, with the writers' hashes."""
    from scintiflow.inference.explain import map_png16, overlay_png

    assert item.pixels is not None
    assert item.sha256 is not None
    pred = names.index(row.predicted_label)
    written: list[Written] = []
    for k, heat in maps.items():
        targets: list[str | None] = [None] if k == pred else []
        if all_classes:
            targets.append(names[k])
        raw, overlay = map_png16(heat), overlay_png(item.pixels, heat)  # encoded once
        for cls in targets:
            map_key, overlay_key = heatmap_keys(prefix, item.sha256, cls)
            written.append(put_bytes(dest, map_key, raw))
            written.append(put_bytes(dest, overlay_key, overlay))
            if cls is None and after is not None:
                written += after(item, row, overlay)
    return written


def _infer(
    items: list[_Prepared],
    engine: Engine,
    sm: ScoringModel,
    *,
    prefix: str,
    all_class_maps: bool,
    threshold: float,
) -> tuple[list[PredictionRow], list[tuple[_Prepared, dict[int, np.ndarray], PredictionRow]]]:
    """Run the engine on the good items; rows plus the heatmap work still to write."""
    from scintiflow.inference.explain import heatmaps

    good = [it for it in items if it.x is not None]
    if not good:
        return [], []
    x = np.stack([it.x for it in good if it.x is not None])  # (B, 1, S, S)
    probs, cams = engine.run(x)
    shapes = [
        (int(it.pixels.shape[0]), int(it.pixels.shape[1])) for it in good if it.pixels is not None
    ]
    maps = (
        heatmaps(probs, cams, shapes, all_classes=all_class_maps)
        if cams is not None
        else [{} for _ in good]
    )
    names = sm.classes
    rows: list[PredictionRow] = []
    writes: list[tuple[_Prepared, dict[int, np.ndarray], PredictionRow]] = []
    for it, p, m in zip(good, probs, maps, strict=True):
        pred = int(p.argmax())
        assert it.sha256 is not None
        map_key, overlay_key = heatmap_keys(prefix, it.sha256) if m else ("", "")
        by_class = {f"p_{c}": float(p[i]) for i, c in enumerate(names)}
        rows.append(
            PredictionRow(
                key=it.key,
                sha256=it.sha256,
                predicted_label=names[pred],
                p_normal=by_class.get("p_normal", float("nan")),
                p_graves=by_class.get("p_graves", float("nan")),
                p_subacute_thyroiditis=by_class.get("p_subacute_thyroiditis", float("nan")),
                p_thyroid_tumor=by_class.get("p_thyroid_tumor", float("nan")),
                confidence=float(p[pred]),
                low_confidence=bool(p[pred] < threshold),
                model_version=sm.version or "unregistered",
                engine=engine.name,
                precision=engine.precision,
                heatmap_key=map_key,
                overlay_key=overlay_key,
            )
        )
        if m:
            writes.append((it, m, rows[-1]))
    return rows, writes


def _failures(items: list[_Prepared]) -> list[ScoreFailure]:
    return [it.failure for it in items if it.failure is not None]


def _default_workers(workers: int | None) -> int:
    from scintiflow.ml.training import available_cores

    return workers or available_cores()


def score_prepared(
    items: Sequence[_Prepared],
    engine: Engine,
    sm: ScoringModel,
    dest: ObjectStore,
    prefix: str,
    *,
    batch_size: int = 32,
    workers: int = 1,
    all_class_maps: bool = False,
    low_confidence_threshold: float | None = None,
    after: AfterOverlay | None = None,
) -> tuple[list[PredictionRow], list[ScoreFailure], list[Written]]:
    """Score already decoded items in engine batches; each batch's PNGs are written while the
    next batch runs. Returns (rows, failures, every object written with its hash)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    threshold = (
        sm.low_confidence_threshold
        if low_confidence_threshold is None
        else low_confidence_threshold
    )
    rows: list[PredictionRow] = []
    written: list[Written] = []
    pending: list[Future[list[Written]]] = []
    with (
        _torch_threads_for(engine.name),
        ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="heatmap") as pool,
    ):
        for first in range(0, len(items), batch_size):
            batch = list(items[first : first + batch_size])
            batch_rows, writes = _infer(
                batch, engine, sm, prefix=prefix, all_class_maps=all_class_maps, threshold=threshold
            )
            for fut in pending:
                written += fut.result()
            pending = [
                pool.submit(
                    _write_heatmaps, dest, it, m, row, sm.classes, prefix, all_class_maps, after
                )
                for it, m, row in writes
            ]
            rows += batch_rows
        for fut in pending:
            written += fut.result()
    return rows, _failures(list(items)), written


@contextlib.contextmanager
def _torch_threads_for(engine_name: str) -> Iterator[None]:
    """Single-threaded torch while another engine scores; restored afterwards.

    Outside the torch engine, torch only resizes one image (or one batch of maps) at a time
    in the decode and heatmap threads. With its default intra-op pool every such call starts
    an OpenMP team whose threads then spin, on the cores the engine needs: measured on 2
    cores, preprocessing to 224 px took 18.9 ms of CPU per image that way and 0.63 ms with
    one thread.
    """
    if engine_name == "torch":
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def predictions_csv(rows: Sequence[PredictionRow]) -> bytes:
    """The rows as CSV (header `PREDICTION_COLUMNS`, probabilities with 6 decimals)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PREDICTION_COLUMNS)
    for row in rows:
        d = row.to_dict()
        writer.writerow([_csv_value(d[c]) for c in PREDICTION_COLUMNS])
    return buf.getvalue().encode("utf-8")


def predictions_jsonl(rows: Sequence[PredictionRow]) -> bytes:
    """The rows as JSON lines (full float precision, keys in `PREDICTION_COLUMNS` order)."""
    lines = [
        json.dumps({c: row.to_dict()[c] for c in PREDICTION_COLUMNS}, allow_nan=False)
        for row in rows
    ]
    return ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8")


def write_predictions(
    dest: ObjectStore,
    prefix: str,
    rows: Sequence[PredictionRow],
    failures: Sequence[ScoreFailure] = (),
) -> tuple[str, str, str | None]:
    """Write `predictions.csv`, `predictions.jsonl` (and `score_failures.jsonl` if any)."""
    base = prefix.strip("/")
    csv_key, jsonl_key = f"{base}/{PREDICTIONS_CSV}", f"{base}/{PREDICTIONS_JSONL}"
    dest.put(csv_key, predictions_csv(rows))
    dest.put(jsonl_key, predictions_jsonl(rows))
    failures_key = None
    if failures:
        failures_key = f"{base}/{FAILURES_JSONL}"
        body = "".join(json.dumps(f.to_dict()) + "\n" for f in failures)
        dest.put(failures_key, body.encode("utf-8"))
    return csv_key, jsonl_key, failures_key


def read_predictions(dest: ObjectStore, prefix: str) -> list[dict[str, Any]]:
    """`predictions.jsonl` of a run as dicts (for reports and tests)."""
    data = dest.get(f"{prefix.strip('/')}/{PREDICTIONS_JSONL}").decode("utf-8")
    return [json.loads(line) for line in data.splitlines() if line.strip()]
