"""The shard: the night's unit of work, a pure function of its keys and small settings.

    result = process_shard(source, dest, keys, spec, hash_key=key, engine=engine, model=sm)

For each object, `process_shard` fetches it once (conditional on the listing's fingerprint
when `pins` gives it: an object replaced since the listing is a storage error), hashes it
once and decodes it once, then builds its check row; the suite's row expectations (one GX
validation of the shard's table) decide quarantine before scoring, and rejected files are
copied aside from the bytes in hand.
Accepted images are scored in engine batches; each one's heatmap PNGs, the report's two
thumbnails and its DICOM Secondary Capture are written into the run folder. The returned
`ShardResult` holds no pixels and no identifiers: check rows (image facts), keyed hashes of
SOP Instance UIDs (for the merge's duplicate rule), prediction rows, quarantined inputs with
reason codes, drift features, every written object with its hash, and timings.

Nothing is shared between shards in memory (the GX suite is rebuilt per process and holds no
state between validations), so a shard can run in any process, in any order, twice: the
same keys give the same rows and the same PNG bytes. What needs the whole night (duplicates,
data docs, `checks.json`, drift, the accounting) is `pipeline.merge`.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

from scintiflow.checks.table import DuplicateTracker, checks_row
from scintiflow.checks.thresholds import CheckThresholds
from scintiflow.ingest.objects import DecodedObject, bounded_map, read_object
from scintiflow.storage import ChangedSinceListingError
from scintiflow.storage.jsonio import Written, put_bytes
from scintiflow.storage.layout import sc_key, thumbnail_keys

if TYPE_CHECKING:
    from scintiflow.checks.suite import CheckOutcome, ChecksValidator
    from scintiflow.inference.engines import Engine, ScoringModel
    from scintiflow.inference.score import PredictionRow, _Prepared
    from scintiflow.storage import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardSpec:
    """What a shard needs besides its keys, the stores, the engine and the PHI hash key.

    Small and serialisable (a Prefect task parameter): no secret, no identifier.
    """

    night: str
    run_id: str
    run_prefix: str  # results/<night>/<run_id>
    index: int = 0
    quarantine_prefix: str = "quarantine"
    preferred_view: str = "anterior"
    batch_size: int = 32
    workers: int = 2
    thresholds: CheckThresholds = field(default_factory=CheckThresholds)
    secondary_capture: bool = True
    all_class_maps: bool = False  # a map per class, not only the predicted one
    read_retries: int = 2  # extra reads of an object after a storage error
    retry_delay_s: float = 2.0  # before the first retry; doubled for each next one


@dataclass
class ShardResult:
    """What one shard did. JSON-ready values only; no pixels, no patient identifiers.

    `check_rows`: one checks-table row per key (duplicate flags unset: the merge sets them);
    `sop_tokens`: key -> keyed hash of its SOP Instance UID (None when absent), used only by
    the merge's duplicate rule; `rows`: prediction rows of the scored keys; `quarantined`:
    key -> {sha256, codes, location}; `warned`: accepted key -> warn codes; `drift`: key ->
    drift features of a scored image; `outputs`: key -> {sha256, size} of everything written
    (heatmaps, thumbnails, SC, quarantine copies) so publish verifies without reading back;
    `storage_errors`: key -> storage error code of the inputs the store did not give after
    the retries (no check row, not quarantined: the night ends partial, the next run retries).
    """

    index: int
    keys: list[str]
    check_rows: list[dict[str, Any]]
    sop_tokens: dict[str, str | None]
    rows: list[dict[str, Any]] = field(default_factory=list)
    quarantined: dict[str, dict[str, Any]] = field(default_factory=dict)
    warned: dict[str, list[str]] = field(default_factory=dict)
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    storage_errors: dict[str, str] = field(default_factory=dict)

    @property
    def scored(self) -> list[str]:
        return [str(r["key"]) for r in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Recorder(DuplicateTracker):
    """Flags nothing (duplicates are the merge's decision); remembers the row's UID hash."""

    def __init__(self) -> None:
        super().__init__()
        self.sop_token: str | None = None

    def is_duplicate_bytes(self, sha256: str | None) -> bool:
        return False

    def is_duplicate_sop(self, uid_hash: str | None) -> bool:
        self.sop_token = uid_hash
        return False


@dataclass(eq=False)
class _Fetched:
    """One object after its only fetch: bytes (kept until quarantine or SC), decode, row."""

    obj: DecodedObject
    data: bytes | None
    row: dict[str, Any]
    sop_token: str | None
    item: _Prepared | None = None


def release_free_heap() -> bool:
    """Hand the C heap's free pages back to the system (glibc `malloc_trim(0)`); False
    where the C library has no such call (musl, macOS).

    A shard frees about as much as it allocates (decoded images, batches, PNG and DICOM
    bytes, from several threads), but glibc keeps freed pages in its per-thread arenas and
    reuses them unevenly: without this a 3,000-study night's resident set grew 124 MiB over
    six shards, with it 28 MiB (docs/benchmarks.md, scale)."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


@lru_cache(maxsize=1)
def _libc() -> Any:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


@lru_cache(maxsize=4)
def row_validator(thresholds: CheckThresholds) -> ChecksValidator:
    """The GX suite for a shard's table, built once per process (no data docs)."""
    from scintiflow.checks.suite import ChecksValidator

    return ChecksValidator(thresholds)


def _fetch_one(
    source: ObjectStore,
    key: str,
    view: str,
    hash_key: bytes,
    model: ScoringModel | None,
    retries: tuple[int, float] = (0, 0.0),
    pin: str = "",
) -> _Fetched:
    """Fetch, hash and decode one object once; its check row and (if decoded) model input.

    A storage error (not an input fault) is retried `retries[0]` times with a growing delay
    from `retries[1]` seconds; if it persists the object is returned with `storage_error`.
    `pin`: the listing's fingerprint of the key (reads are conditional on it)."""
    count, delay = retries
    read = partial(
        read_object, source, key, patient_hash_key=hash_key, preferred_view=view, pin=pin
    )
    obj, data = read()
    for attempt in range(count):
        if not obj.storage_error or obj.reason == ChangedSinceListingError.reason:
            break  # a changed object stays changed: the next run lists it again
        time.sleep(delay * 2**attempt)
        obj, data = read()
    if obj.storage_error:
        log.warning("an input was not read after %d retries (%s)", count, obj.reason)
        return _Fetched(obj, None, {}, None)
    fetched = _Fetched(obj, data, *_row(obj, hash_key))
    if model is not None and obj.record is not None:
        from scintiflow.inference.score import prepared

        fetched.item = prepared(obj, model)
    return fetched


def _row(obj: DecodedObject, hash_key: bytes) -> tuple[dict[str, Any], str | None]:
    recorder = _Recorder()
    row = checks_row(obj, uid_hash_key=hash_key, tracker=recorder)
    return row, recorder.sop_token


def process_shard(
    source: ObjectStore,
    dest: ObjectStore,
    keys: Sequence[str],
    spec: ShardSpec,
    *,
    hash_key: bytes,
    engine: Engine | None = None,
    model: ScoringModel | None = None,
    pins: Mapping[str, str | None] | None = None,
) -> ShardResult:
    """Check, quarantine and (with an engine) score one shard of keys; see the module doc.

    Without `engine`/`model` the shard only checks and quarantines (`scintiflow check`).
    `pins`: key -> listing fingerprint; each read is conditional on it.
    """
    from scintiflow.inference.score import _torch_threads_for

    started = time.perf_counter()
    with _torch_threads_for(engine.name if engine is not None else "none"):
        everything = read_shard(
            source,
            keys,
            hash_key=hash_key,
            preferred_view=spec.preferred_view,
            workers=spec.workers,
            model=model,
            retries=(spec.read_retries, spec.retry_delay_s),
            pins=pins,
        )
        t_read = time.perf_counter()
        fetched, not_read = split_unread(everything)
        result = ShardResult(
            index=spec.index,
            keys=list(keys),
            check_rows=[_plain_row(f.row) for f in fetched],
            sop_tokens={f.obj.key: f.sop_token for f in fetched},
            storage_errors=not_read,
        )
        accepted = _check_and_quarantine(source, dest, fetched, spec, result)
        t_check = time.perf_counter()
        if engine is not None and model is not None:
            _score(source, dest, accepted, spec, engine, model, result)
    # GX's validation raises and catches thousands of pydantic errors per shard; their
    # tracebacks are reference cycles that only a full collection frees, and with torch, ORT
    # and GX loaded Python's own full collections are rare: without this the resident set
    # grew about 30 MiB per shard of 256 (docs/benchmarks.md, scale).
    gc.collect()
    release_free_heap()
    done = time.perf_counter()
    result.timings = {
        "read_decode": round(t_read - started, 4),
        "check": round(t_check - t_read, 4),
        "score": round(done - t_check, 4),
    }
    return result


def read_shard(
    source: ObjectStore,
    keys: Sequence[str],
    *,
    hash_key: bytes,
    preferred_view: str = "anterior",
    workers: int = 2,
    model: ScoringModel | None = None,
    retries: tuple[int, float] = (0, 0.0),
    pins: Mapping[str, str | None] | None = None,
) -> list[_Fetched]:
    """Fetch, hash and decode every key once (thread pool, key order kept); its check row.

    `retries`: (count, first delay in s) for storage errors; `pins`: key -> listing
    fingerprint (reads conditional on it)."""
    pins = pins or {}
    return list(
        bounded_map(
            lambda k: _fetch_one(
                source, k, preferred_view, hash_key, model, retries, pins.get(k) or ""
            ),
            keys,
            workers=max(1, workers),
        )
    )


def split_unread(fetched: Sequence[_Fetched]) -> tuple[list[_Fetched], dict[str, str]]:
    """(the objects read, key -> storage error of those the store did not give)."""
    read = [f for f in fetched if not f.obj.storage_error]
    return read, {f.obj.key: str(f.obj.reason) for f in fetched if f.obj.storage_error}


def validate_rows(
    fetched: Sequence[_Fetched], thresholds: CheckThresholds, run_name: str
) -> tuple[Any, CheckOutcome]:
    """The shard's table and ONE GX validation of its row expectations."""
    from scintiflow.checks.table import rows_to_table

    table = rows_to_table([f.row for f in fetched])
    return table, row_validator(thresholds).validate(table, run_name=run_name)


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars -> JSON values (the row travels between processes)."""
    from scintiflow.checks.suite import _plain

    return {k: _plain(v) for k, v in row.items()}


def _check_and_quarantine(
    source: ObjectStore,
    dest: ObjectStore,
    fetched: list[_Fetched],
    spec: ShardSpec,
    result: ShardResult,
) -> list[_Fetched]:
    """One GX validation of the shard's rows; rejects copied aside from the bytes in hand."""
    if not fetched:  # every key of the shard hit a storage error
        return []
    from scintiflow.checks.quarantine import RejectedFile, quarantine
    from scintiflow.checks.reasons import CHECK_VERSION

    _, outcome = validate_rows(fetched, spec.thresholds, spec.run_id)
    by_key = {f.obj.key: f for f in fetched}
    rejected = [
        RejectedFile(k, by_key[k].obj.sha256, codes, outcome.failing_values.get(k, {}))
        for k, codes in outcome.rejected.items()
    ]
    held = {
        f.obj.sha256: f.data
        for f in fetched
        if f.obj.key in outcome.rejected and f.obj.sha256 and f.data is not None
    }
    placed = quarantine(
        source,
        spec.night,
        rejected,
        dest=dest,
        check_version=CHECK_VERSION,
        prefix=spec.quarantine_prefix,
        extra={"night": spec.night, "run_id": spec.run_id},
        held=held,
    )
    result.quarantined = {
        r.key: {"sha256": r.sha256, "codes": list(r.codes), "location": placed.locations[r.key]}
        for r in rejected
    }
    result.warned = {k: list(v) for k, v in outcome.warned.items()}
    return [f for f in fetched if f.obj.key not in outcome.rejected]


def _score(
    source: ObjectStore,
    dest: ObjectStore,
    accepted: list[_Fetched],
    spec: ShardSpec,
    engine: Engine,
    model: ScoringModel,
    result: ShardResult,
) -> None:
    """Engine batches; per image its heatmaps, thumbnails and SC; drift features."""
    from scintiflow.inference.score import score_prepared

    by_key = {f.obj.key: f for f in accepted}
    sc_written: dict[str, str] = {}

    def after(item: _Prepared, row: PredictionRow, overlay: bytes) -> list[Written]:
        written = _write_thumbnails(dest, item, overlay, spec.run_prefix)
        if spec.secondary_capture:
            sc = _write_sc(dest, by_key[row.key], row, overlay, spec, model)
            if sc is not None:
                sc_written[row.key] = sc.key
                written.append(sc)
        return written

    items = [f.item for f in accepted if f.item is not None]
    rows, failures, written = score_prepared(
        items,
        engine,
        model,
        dest,
        spec.run_prefix,
        batch_size=spec.batch_size,
        workers=max(1, spec.workers),
        all_class_maps=spec.all_class_maps,
        after=after,
    )
    clip = float(model.preprocess.clip_percentile)
    result.rows = [_report_columns(r, spec.run_prefix, sc_written.get(r.key, "")) for r in rows]
    result.drift = {r.key: _drift_features(by_key[r.key], clip) for r in rows}
    result.outputs.update({w.key: {"sha256": w.sha256, "size": w.size} for w in written})
    if failures:  # decoded but not scorable (not expected: the checks decoded them)
        _quarantine_failures(source, dest, failures, spec, result)


def _write_thumbnails(
    dest: ObjectStore, item: _Prepared, overlay: bytes, prefix: str
) -> list[Written]:
    """The report's pictures: the scan and the overlay, at most `THUMB_SIZE` px."""
    from scintiflow.outputs.thumbnails import overlay_thumbnail, scan_thumbnail

    assert item.pixels is not None
    assert item.sha256 is not None
    scan_key, overlay_key = thumbnail_keys(prefix, item.sha256)
    return [
        put_bytes(dest, scan_key, scan_thumbnail(item.pixels)),
        put_bytes(dest, overlay_key, overlay_thumbnail(overlay)),
    ]


def _report_columns(row: PredictionRow, prefix: str, sc: str) -> dict[str, Any]:
    """The prediction row plus where the report finds its thumbnails and SC."""
    from dataclasses import replace

    scan_key, overlay_key = thumbnail_keys(prefix, row.sha256) if row.overlay_key else ("", "")
    return replace(
        row, scan_thumbnail_key=scan_key, overlay_thumbnail_key=overlay_key, sc_key=sc
    ).to_dict()


def _drift_features(f: _Fetched, clip: float) -> dict[str, Any]:
    from scintiflow.pipeline.drift import image_stats

    rec = f.obj.record
    assert rec is not None
    return asdict(image_stats(rec.pixels, rec.pixel_spacing_mm, clip))


def _write_sc(
    dest: ObjectStore,
    f: _Fetched,
    row: PredictionRow,
    overlay: bytes,
    spec: ShardSpec,
    model: ScoringModel,
) -> Written | None:
    """The overlay as a DICOM Secondary Capture in the source's study (None when it fails)."""
    from scintiflow.outputs.secondary_capture import (
        build_secondary_capture,
        encode,
        png_rgb,
        read_source,
        sc_uids,
        source_frame_number,
    )

    rec = f.obj.record
    if f.data is None or rec is None:
        return None
    try:
        header = read_source(f.data)
        series_uid, sop_uid = sc_uids(spec.run_id, str(header.StudyInstanceUID), row.sha256)
        number = header.get("InstanceNumber")
        ds = build_secondary_capture(
            header,
            png_rgb(overlay),
            series_uid=series_uid,
            sop_uid=sop_uid,
            instance_number=int(number) if number not in (None, "") else 1,
            model_name=model.name or None,
            model_version=row.model_version,
            engine=row.engine,
            predicted_label=row.predicted_label,
            confidence=row.confidence,
            source_frame=source_frame_number(rec.frames, rec.frame_index),
        )
        return put_bytes(dest, sc_key(spec.run_prefix, row.sha256), encode(ds))
    except Exception:  # its message may quote a DICOM value: the reason code only
        log.warning("shard %d: a secondary capture was not written (sc_failed)", spec.index)
        return None


def _quarantine_failures(
    source: ObjectStore,
    dest: ObjectStore,
    failures: Sequence[Any],
    spec: ShardSpec,
    result: ShardResult,
) -> None:
    from scintiflow.checks.quarantine import RejectedFile, quarantine
    from scintiflow.checks.reasons import CHECK_VERSION

    placed = quarantine(
        source,
        spec.night,
        [RejectedFile(x.key, x.sha256, (x.reason,)) for x in failures],
        dest=dest,
        check_version=CHECK_VERSION,
        prefix=spec.quarantine_prefix,
        extra={"night": spec.night, "run_id": spec.run_id, "stage": "score"},
    )
    for x in failures:
        result.quarantined[x.key] = {
            "sha256": x.sha256,
            "codes": [x.reason],
            "location": placed.locations[x.key],
            "stage": "score",  # accepted by the checks, not scorable after all
        }
