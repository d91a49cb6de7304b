"""Scoring by key stream: `score_keys` (what `benchmarks/score.py` measures) and
`score_batch` (one batch of keys), for tools and benchmarks that score objects outside a
nightly run. The nightly shard scores what it already decoded, with `score.score_prepared`.

    summary = score_keys(source, keys, engine, sm, dest, "results/2026-11-27/<run_id>",
                         patient_hash_key=key)

A thread pool fetches, hashes, decodes and preprocesses objects (`ingest.bounded_map`, a
bounded window); a producer thread packs them into batches and hands them over through a
queue of at most two batches; the caller's thread runs the engine; a second pool encodes and
writes each batch's PNGs while the next batch is inferred. Memory is bounded by (queued
batches + window) images whatever the number of keys; only the small prediction rows
accumulate.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scintiflow.inference.score import (
    PREDICTIONS_CSV,
    PREDICTIONS_JSONL,
    PredictionRow,
    ProgressFn,
    ScoreFailure,
    _default_workers,
    _failures,
    _infer,
    _Prepared,
    _torch_threads_for,
    _write_heatmaps,
    prepared,
    score_prepared,
    write_predictions,
)
from scintiflow.ingest.objects import bounded_map, decode_object
from scintiflow.storage.jsonio import Written

if TYPE_CHECKING:
    from scintiflow.inference.engines import Engine, ScoringModel
    from scintiflow.storage import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch produced: rows for scored images, failures for the rest."""

    rows: list[PredictionRow]
    failures: list[ScoreFailure]


@dataclass(frozen=True)
class ScoreSummary:
    """A finished run: rows, failures, where the tables went, throughput."""

    rows: list[PredictionRow]
    failures: list[ScoreFailure]
    engine: str
    model_version: str
    prefix: str
    predictions_csv_key: str
    predictions_jsonl_key: str
    failures_key: str | None
    seconds: float

    @property
    def images_per_s(self) -> float:
        return len(self.rows) / self.seconds if self.seconds > 0 else 0.0


def _prepare_one(
    store: ObjectStore,
    key: str,
    sm: ScoringModel,
    preferred_view: str,
    patient_hash_key: bytes,
) -> _Prepared:
    obj = decode_object(
        store, key, preferred_view=preferred_view, patient_hash_key=patient_hash_key
    )
    return prepared(obj, sm)


def _prepared_stream(
    store: ObjectStore,
    keys: Iterable[str],
    sm: ScoringModel,
    *,
    workers: int,
    preferred_view: str,
    patient_hash_key: bytes,
) -> Iterator[_Prepared]:
    return bounded_map(
        lambda key: _prepare_one(store, key, sm, preferred_view, patient_hash_key),
        keys,
        workers=workers,
    )


def _batches(items: Iterator[_Prepared], batch_size: int) -> Iterator[list[_Prepared]]:
    batch: list[_Prepared] = []
    for item in items:
        batch.append(item)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def score_batch(
    source: ObjectStore,
    keys: Sequence[str],
    engine: Engine,
    sm: ScoringModel,
    dest: ObjectStore,
    prefix: str,
    *,
    all_class_maps: bool = False,
    low_confidence_threshold: float | None = None,
    patient_hash_key: bytes,
    workers: int | None = None,
    preferred_view: str = "anterior",
) -> BatchResult:
    """Score ONE batch of keys (fetch and decode in a pool, one engine call), write its maps."""
    n_workers = _default_workers(workers)
    items = list(
        _prepared_stream(
            source,
            keys,
            sm,
            workers=n_workers,
            preferred_view=preferred_view,
            patient_hash_key=patient_hash_key,
        )
    )
    rows, failures, _ = score_prepared(
        items,
        engine,
        sm,
        dest,
        prefix,
        batch_size=max(1, len(items)),
        workers=n_workers,
        all_class_maps=all_class_maps,
        low_confidence_threshold=low_confidence_threshold,
    )
    return BatchResult(rows, failures)


_DONE = object()


def _fill(
    handoff: queue.Queue[Any], stop: threading.Event, stream: Iterator[_Prepared], size: int
) -> None:
    """The producer: batches into the hand-off queue until done or stopped; errors too."""
    try:
        for batch in _batches(stream, size):
            while not stop.is_set():
                try:
                    handoff.put(batch, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        handoff.put(_DONE)
    except BaseException as exc:  # surface producer errors in the caller's thread
        handoff.put(exc)


def _drain(handoff: queue.Queue[Any]) -> Iterator[list[_Prepared]]:
    """The consumer's side: batches until done; a producer error is raised here."""
    while True:
        got = handoff.get()
        if got is _DONE:
            return
        if isinstance(got, BaseException):
            raise got
        yield got


def score_keys(
    source: ObjectStore,
    keys: Iterable[str],
    engine: Engine,
    sm: ScoringModel,
    dest: ObjectStore,
    prefix: str,
    *,
    batch_size: int = 32,
    all_class_maps: bool = False,
    low_confidence_threshold: float | None = None,
    patient_hash_key: bytes,
    workers: int | None = None,
    preferred_view: str = "anterior",
    total: int | None = None,
    progress: ProgressFn | None = None,
    write_tables: bool = True,
) -> ScoreSummary:
    """Stream `keys` through decode -> preprocess -> engine -> heatmaps, batch by batch.

    Decoding overlaps inference (a producer thread fills a queue of at most two batches);
    each batch's PNGs are written while the next batch runs. Ends by writing the prediction
    tables (unless `write_tables=False`). `progress(done, total)` after every batch.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    started = time.perf_counter()
    n_workers = _default_workers(workers)
    view, hkey = preferred_view, patient_hash_key
    threshold = (
        sm.low_confidence_threshold
        if low_confidence_threshold is None
        else low_confidence_threshold
    )
    handoff: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        stream = _prepared_stream(
            source, keys, sm, workers=n_workers, preferred_view=view, patient_hash_key=hkey
        )
        _fill(handoff, stop, stream, batch_size)

    with _torch_threads_for(engine.name):
        producer = threading.Thread(target=produce, name="score-producer", daemon=True)
        producer.start()
        rows: list[PredictionRow] = []
        failures: list[ScoreFailure] = []
        done = 0
        pending: list[Future[list[Written]]] = []
        try:
            with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="heatmap") as pool:
                for batch in _drain(handoff):
                    batch_rows, writes = _infer(
                        batch,
                        engine,
                        sm,
                        prefix=prefix,
                        all_class_maps=all_class_maps,
                        threshold=threshold,
                    )
                    for fut in pending:  # the previous batch's PNGs: written while this one ran
                        fut.result()
                    pending = [
                        pool.submit(
                            _write_heatmaps, dest, it, m, row, sm.classes, prefix, all_class_maps
                        )
                        for it, m, row in writes
                    ]
                    rows.extend(batch_rows)
                    failures.extend(_failures(batch))
                    done += len(batch)
                    if progress is not None:
                        progress(done, total)
                for fut in pending:
                    fut.result()
        finally:
            stop.set()
            producer.join(timeout=5)
    csv_key, jsonl_key, failures_key = (
        write_predictions(dest, prefix, rows, failures)
        if write_tables
        else (f"{prefix}/{PREDICTIONS_CSV}", f"{prefix}/{PREDICTIONS_JSONL}", None)
    )
    summary = ScoreSummary(
        rows=rows,
        failures=failures,
        engine=engine.name,
        model_version=sm.version or "unregistered",
        prefix=prefix,
        predictions_csv_key=csv_key,
        predictions_jsonl_key=jsonl_key,
        failures_key=failures_key,
        seconds=time.perf_counter() - started,
    )
    log.info(
        "scored %d images (%d failed) with %s in %.1f s",
        len(rows),
        len(failures),
        engine.name,
        summary.seconds,
    )
    return summary
