"""The nightly job's batch-level steps, without Prefect: what `tasks/` wrap and `flows/` wire.

    keys = list_inputs(source, night)
    hashes = hash_keys(source, keys)                       # content hashes for the ledger
    done = ledger.lookup(dest, hashes, model.version)      # skipped, carried forward
    checked = check_shard(source, dest, shard, state=...)  # GX checks + quarantine
    rows, failed = score_shard(source, dest, checked.accepted, model, prefix=...)
    publish.publish_run(...)                               # manifest last
    ledger.record(...)                                     # only after the manifest

Every function takes keys and small records and returns small records (no pixels), so each
is one Prefect task over a batch. `run_night` runs the same steps in a plain loop: the
reference the flow is measured against (benchmarks/nightly.py) and tested with.

State that must live across the batches of ONE run (the GX validator and its local data-docs
folder, the duplicate tracker) is held in a process-local `NightState` keyed by run id:
batches of a run must execute in one process (true for the local and the one-pod-per-flow-run
Kubernetes setups; a fan-out over several workers needs the tracker in the store, [F7]).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scintiflow.domain import sha256_hex
from scintiflow.storage import StoreError

if TYPE_CHECKING:
    from scintiflow.checks.suite import ChecksValidator
    from scintiflow.checks.table import DuplicateTracker
    from scintiflow.inference.engines import Engine, ScoringModel
    from scintiflow.outputs.publish import PublishResult, QuarantinedInput
    from scintiflow.settings import Settings
    from scintiflow.storage import ObjectStore

log = logging.getLogger(__name__)

CHAMPION_OR_LATEST = "champion-or-latest"
NO_CHAMPION_NOTE = (
    "no champion has been promoted: scored with the latest registered version "
    "(demo fallback, not for clinical use)"
)


class NightInvariantError(AssertionError):
    """scored + quarantined != inputs for a night (a bug, never normal operation)."""


def _settings() -> Settings:
    from scintiflow.settings import get_settings

    return get_settings()


@lru_cache(maxsize=16)
def store_for(url: str) -> ObjectStore:
    """One store per URL per process (S3 clients are costly to build)."""
    from scintiflow.storage import open_store

    return open_store(url)


# ---------------------------------------------------------------------------------------
# Inputs and model


def list_inputs(source: ObjectStore, night: str) -> list[str]:
    """The night's export keys, in key order."""
    from scintiflow.checks.run import list_night

    return list_night(source, night, exports_prefix=_settings().prefixes.exports)


def hash_keys(source: ObjectStore, keys: Sequence[str], workers: int = 8) -> dict[str, str | None]:
    """Key -> SHA-256 of its bytes (None when the object cannot be read)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(key: str) -> str | None:
        try:
            return sha256_hex(source.get(key))
        except StoreError:
            return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(zip(keys, pool.map(one, keys), strict=True))


@dataclass(frozen=True)
class ModelRef:
    """Which model version scores the night (a small record: safe as a task parameter)."""

    registry: str
    name: str
    selector: str
    version: str
    arch: str
    engine: str
    note: str | None = None  # e.g. the no-champion fallback

    def to_dict(self) -> dict[str, Any]:
        return {
            "registry": self.registry,
            "name": self.name,
            "selector": self.selector,
            "version": self.version,
            "arch": self.arch,
            "engine": self.engine,
            "note": self.note,
        }


def resolve_model(registry_url: str, name: str, selector: str, engine: str) -> ModelRef:
    """Resolve `champion`/`latest`/`champion-or-latest`/an id to a version and an engine."""
    from scintiflow.inference.engines import select_engine
    from scintiflow.ml.registry import champion_version, read_version

    store = store_for(registry_url)
    models = _settings().prefixes.models
    note = None
    wanted = selector
    if selector == CHAMPION_OR_LATEST:
        wanted = "champion"
        if champion_version(store, name, models) is None:
            wanted, note = "latest", NO_CHAMPION_NOTE
    meta = read_version(store, name, wanted, models)
    sm = scoring_model(registry_url, name, meta.version)
    kind = select_engine(engine, sm)
    return ModelRef(registry_url, name, selector, meta.version, meta.arch, kind, note)


@lru_cache(maxsize=4)
def scoring_model(registry_url: str, name: str, version: str) -> ScoringModel:
    """A version loaded once per process (versions are immutable, so caching is safe)."""
    from scintiflow.inference.engines import load_scoring_model

    return load_scoring_model(store_for(registry_url), name, version, _settings().prefixes.models)


_ENGINE_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _engine(registry_url: str, name: str, version: str, kind: str) -> Engine:
    from scintiflow.inference.engines import open_engine

    return open_engine(kind, scoring_model(registry_url, name, version))


def engine_for(ref: ModelRef) -> Engine:
    """The opened engine of a model reference, once per process."""
    with _ENGINE_LOCK:
        return _engine(ref.registry, ref.name, ref.version, ref.engine)


# ---------------------------------------------------------------------------------------
# Checks and quarantine


@dataclass
class NightState:
    """What one run keeps across its batches: GX validator + docs folder, duplicate tracker."""

    validator: ChecksValidator
    tracker: DuplicateTracker
    docs_dir: Path
    lock: threading.Lock = field(default_factory=threading.Lock)


_STATES: dict[str, NightState] = {}
_STATES_LOCK = threading.Lock()


def night_state(run_id: str) -> NightState:
    """The run's state, created on first use (building the GX suite takes a moment)."""
    from scintiflow.checks.suite import ChecksValidator
    from scintiflow.checks.table import DuplicateTracker

    with _STATES_LOCK:
        state = _STATES.get(run_id)
        if state is None:
            docs = Path(tempfile.mkdtemp(prefix="scintiflow-docs-"))
            state = NightState(ChecksValidator(docs_dir=docs), DuplicateTracker(), docs)
            _STATES[run_id] = state
        return state


def drop_night_state(run_id: str) -> None:
    """Forget a run's state and its local docs folder."""
    with _STATES_LOCK:
        state = _STATES.pop(run_id, None)
    if state is not None:
        shutil.rmtree(state.docs_dir, ignore_errors=True)


@dataclass(frozen=True)
class CheckedShard:
    """A batch's verdicts: accepted keys (to score), quarantined keys with codes and where."""

    accepted: list[str]
    warned: dict[str, list[str]]
    quarantined: dict[str, dict[str, Any]]  # key -> {sha256, codes, location}
    reason_counts: dict[str, int]


def check_shard(
    source: ObjectStore, dest: ObjectStore, night: str, run_id: str, keys: Sequence[str]
) -> CheckedShard:
    """Check one batch (decode, table, one GX validation) and quarantine its rejects."""
    from scintiflow.checks.quarantine import RejectedFile, quarantine
    from scintiflow.checks.reasons import CHECK_VERSION
    from scintiflow.checks.run import check_keys

    state = night_state(run_id)
    with state.lock:  # the validator is not thread-safe; batches of a run check in turn
        table, outcome = check_keys(
            source, keys, validator=state.validator, tracker=state.tracker, run_name=run_id
        )
    shas = dict(zip(table["key"], table["sha256"], strict=True))
    placed = quarantine(
        source,
        night,
        (
            RejectedFile(k, _sha(shas[k]), codes, outcome.failing_values.get(k, {}))
            for k, codes in outcome.rejected.items()
        ),
        dest=dest,
        check_version=CHECK_VERSION,
        prefix=_settings().prefixes.quarantine,
        extra={"night": night, "run_id": run_id},
    )
    return CheckedShard(
        accepted=list(outcome.accepted),
        warned={k: list(v) for k, v in outcome.warned.items()},
        quarantined={
            k: {"sha256": _sha(shas[k]), "codes": list(c), "location": placed.locations[k]}
            for k, c in outcome.rejected.items()
        },
        reason_counts=outcome.reason_counts(),
    )


def _sha(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def quarantine_failures(
    source: ObjectStore,
    dest: ObjectStore,
    night: str,
    run_id: str,
    failures: Sequence[Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Accepted inputs that could not be scored after all (e.g. gone): quarantined too."""
    from scintiflow.checks.quarantine import RejectedFile, quarantine
    from scintiflow.checks.reasons import CHECK_VERSION

    if not failures:
        return {}
    placed = quarantine(
        source,
        night,
        [RejectedFile(f["key"], f["sha256"], (str(f["reason"]),)) for f in failures],
        dest=dest,
        check_version=CHECK_VERSION,
        prefix=_settings().prefixes.quarantine,
        extra={"night": night, "run_id": run_id, "stage": "score"},
    )
    return {
        f["key"]: {
            "sha256": f["sha256"],
            "codes": [str(f["reason"])],
            "location": placed.locations[f["key"]],
        }
        for f in failures
    }


def write_checks_summary(
    dest: ObjectStore,
    night: str,
    run_id: str,
    shards: Sequence[CheckedShard],
    inputs: int,
) -> dict[str, str]:
    """Upload the run's data docs and write `checks/checks.json`; returns both keys."""
    from scintiflow.checks.reasons import CHECK_VERSION, REASONS, severity
    from scintiflow.checks.thresholds import CheckThresholds
    from scintiflow.outputs.publish import run_prefix

    base = run_prefix(night, run_id, _settings().prefixes.results) + "/checks/"
    state = night_state(run_id)
    for path in sorted(p for p in state.docs_dir.rglob("*") if p.is_file()):
        dest.put(base + "docs/" + path.relative_to(state.docs_dir).as_posix(), path.read_bytes())
    reasons: Counter[str] = Counter()
    for s in shards:
        reasons.update(s.reason_counts)
    thresholds = CheckThresholds()
    doc = {
        "schema": "scintiflow.checks.suite/1",
        "check_version": CHECK_VERSION,
        "night": night,
        "run_id": run_id,
        "inputs": inputs,
        "accepted": sorted(k for s in shards for k in s.accepted),
        "warned": {k: v for s in shards for k, v in sorted(s.warned.items())},
        "quarantined": {k: v["codes"] for s in shards for k, v in sorted(s.quarantined.items())},
        "quarantine": {k: v["location"] for s in shards for k, v in sorted(s.quarantined.items())},
        "counts": {
            "inputs": inputs,
            "accepted": sum(len(s.accepted) for s in shards),
            "quarantined": sum(len(s.quarantined) for s in shards),
            "warned": sum(len(s.warned) for s in shards),
        },
        "reason_counts": dict(sorted(reasons.items())),
        "reasons": {
            c: {"severity": severity(c), "explanation": REASONS.get(c, ("", ""))[1]}
            for c in sorted(reasons)
        },
        "thresholds": thresholds.as_dict(),
        "thresholds_fingerprint": thresholds.fingerprint(),
        "docs": base + "docs/index.html",
    }
    dest.put(base + "checks.json", (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return {"checks": base + "checks.json", "docs": base + "docs/index.html"}


# ---------------------------------------------------------------------------------------
# Scoring and drift


def score_shard(
    source: ObjectStore,
    dest: ObjectStore,
    keys: Sequence[str],
    ref: ModelRef,
    prefix: str,
    *,
    batch_size: int = 32,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score a shard of accepted keys in engine batches: (row dicts, failure dicts)."""
    from scintiflow.inference.score import score_batch

    sm = scoring_model(ref.registry, ref.name, ref.version)
    engine = engine_for(ref)
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for first in range(0, len(keys), max(1, batch_size)):
        res = score_batch(source, keys[first : first + batch_size], engine, sm, dest, prefix)
        rows += [r.to_dict() for r in res.rows]
        failures += [f.to_dict() for f in res.failures]
    return rows, failures


def drift_check(
    source: ObjectStore,
    ref: ModelRef,
    keys: Sequence[str],
    hashes: Mapping[str, str | None],
    predicted: Sequence[str],
) -> dict[str, Any]:
    """Drift of this run's new accepted inputs and predictions vs the training reference."""
    from scintiflow.ml.registry import read_version
    from scintiflow.pipeline.drift import DriftThresholds, compare, decode_stats, night_statistics

    meta = read_version(store_for(ref.registry), ref.name, ref.version, _settings().prefixes.models)
    t = DriftThresholds()
    sample = sorted(keys, key=lambda k: (hashes.get(k) or "", k))[: t.sample]
    clip = float(meta.preprocess.get("clip_percentile", 99.5))
    stats = decode_stats(source, sample, clip, preferred_view=_settings().preferred_view)
    report = compare(meta.training_reference, night_statistics(stats, predicted, meta.classes), t)
    report["sampled"] = len(sample)
    return report


# ---------------------------------------------------------------------------------------
# Ledger after publish


def record_ledger(
    dest: ObjectStore,
    night: str,
    run_id: str,
    manifest_key: str,
    rows: Sequence[Mapping[str, Any]],
    quarantined: Mapping[str, Mapping[str, Any]],
    model_version: str,
) -> int:
    """Ledger entries for this run's new inputs (after its manifest exists)."""
    from scintiflow.outputs.ledger import Outcome, record

    items = [
        (
            str(r["key"]),
            str(r["sha256"]),
            Outcome("scored", night, run_id, manifest_key, (), str(r["predicted_label"])),
        )
        for r in rows
    ]
    items += [
        (
            k,
            str(q["sha256"]),
            Outcome("quarantined", night, run_id, manifest_key, tuple(q["codes"])),
        )
        for k, q in quarantined.items()
        if q.get("sha256")
    ]
    return len(record(dest, items, model_version, state_prefix=_settings().prefixes.state))


def quarantined_inputs(quarantined: Mapping[str, Mapping[str, Any]]) -> list[QuarantinedInput]:
    """Dicts from the batches -> `publish.QuarantinedInput`s."""
    from scintiflow.outputs.publish import QuarantinedInput

    return [
        QuarantinedInput(k, q.get("sha256"), tuple(q["codes"]), str(q["location"]))
        for k, q in sorted(quarantined.items())
    ]


def shards(keys: Sequence[str], size: int) -> list[list[str]]:
    """Consecutive batches of at most `size` keys."""
    size = max(1, size)
    return [list(keys[i : i + size]) for i in range(0, len(keys), size)]


def assert_accounted(
    inputs: Sequence[str],
    scored: Sequence[str],
    quarantined: Sequence[str],
    carried: Sequence[str],
) -> None:
    """The flow's invariant: every input ends scored or quarantined (ledger skips included)."""
    s, q, c = set(scored), set(quarantined), set(carried)
    if len(s) + len(q) + len(c) != len(inputs) or (s | q | c) != set(inputs) or s & q:
        raise NightInvariantError(
            f"scored ({len(s)}) + quarantined ({len(q)}) + carried forward ({len(c)}) "
            f"!= inputs ({len(inputs)})"
        )


def publish_night(
    dest: ObjectStore,
    night: str,
    run_id: str,
    *,
    rows: Sequence[Mapping[str, Any]],
    quarantined: Mapping[str, Mapping[str, Any]],
    carried: Mapping[str, Any],
    hashes: Mapping[str, str | None],
    ref: ModelRef,
    timings: Mapping[str, float],
    drift: Mapping[str, Any] | None,
    checks: Mapping[str, Any] | None,
    source_url: str | None = None,
    fail_before_manifest: bool = False,
) -> PublishResult:
    """`publish.publish_run` with the run's model reference and the report hook.

    `source_url` (the exports' store) goes into the manifest so the report can read the
    original DICOM objects when results go to another store.
    """
    from scintiflow.outputs.publish import publish_run

    return publish_run(
        dest,
        night=night,
        run_id=run_id,
        rows=rows,
        quarantined=quarantined_inputs(quarantined),
        carried=carried,
        hashes=hashes,
        model=ref.to_dict(),
        engine=ref.engine,
        results_prefix=_settings().prefixes.results,
        timings=timings,
        drift=drift,
        checks=checks,
        extra={"source_url": source_url} if source_url else None,
        render_report=report_renderer(),
        fail_before_manifest=fail_before_manifest,
    )


# ---------------------------------------------------------------------------------------
# The same night without Prefect


def run_night(
    night: str,
    source_url: str,
    dest_url: str | None = None,
    *,
    registry_url: str | None = None,
    model_name: str = "thyroid",
    model: str = "champion",
    engine: str = "auto",
    batch_size: int = 32,
    shard_size: int = 256,
    run_id: str | None = None,
) -> PublishResult:
    """The nightly job as a plain loop over the same batch functions (no orchestration)."""
    from scintiflow.domain import new_run_id
    from scintiflow.outputs.ledger import lookup
    from scintiflow.outputs.publish import run_prefix

    started = time.perf_counter()
    run_id = run_id or new_run_id()
    dest_url = dest_url or source_url
    source, dest = store_for(source_url), store_for(dest_url)
    ref = resolve_model(registry_url or dest_url, model_name, model, engine)
    keys = list_inputs(source, night)
    hashes = hash_keys(source, keys)
    carried = lookup(
        dest,
        {k: h for k, h in hashes.items() if h},
        ref.version,
        state_prefix=_settings().prefixes.state,
    )
    todo = [k for k in keys if k not in carried]
    prefix = run_prefix(night, run_id, _settings().prefixes.results)
    checked = [check_shard(source, dest, night, run_id, s) for s in shards(todo, shard_size)]
    quarantined = {k: v for c in checked for k, v in c.quarantined.items()}
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for c in checked:
        for s in shards(c.accepted, shard_size):
            r, f = score_shard(source, dest, s, ref, prefix, batch_size=batch_size)
            rows += r
            failures += f
    quarantined.update(quarantine_failures(source, dest, night, run_id, failures))
    assert_accounted(keys, [r["key"] for r in rows], list(quarantined), list(carried))
    checks = write_checks_summary(dest, night, run_id, checked, len(todo)) if todo else None
    drift = (
        drift_check(
            source, ref, [r["key"] for r in rows], hashes, [r["predicted_label"] for r in rows]
        )
        if rows
        else None
    )
    result = publish_night(
        dest,
        night,
        run_id,
        rows=rows,
        quarantined=quarantined,
        carried=carried,
        hashes=hashes,
        ref=ref,
        timings={"total": round(time.perf_counter() - started, 3)},
        drift=drift,
        checks=checks,
        source_url=source_url,
    )
    if result.manifest_key is not None:
        record_ledger(dest, night, run_id, result.manifest_key, rows, quarantined, ref.version)
    drop_night_state(run_id)
    return result


def report_renderer() -> Any:
    """The publish step's report hook: `scintiflow.outputs.report.render_run_report`.

    `publish_run` calls `render_run_report(store, run_prefix, manifest_draft)`, which writes
    `report.html`, `report.pdf` and the DICOM Secondary Captures into the run folder and
    returns the HTML's key. Imported here, lazily: Jinja2 and highdicom load only when a run
    publishes.
    """
    from scintiflow.outputs.report import render_run_report

    return render_run_report
