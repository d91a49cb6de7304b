"""The nightly job's steps, without Prefect: what `tasks/` wrap and `flows/` wire.

    begun = begin_night(source, dest, night, run_id, cfg)  # source exists; finish crashed runs
    listing = list_inputs(source, night, cfg)              # key -> listing fingerprint
    carried, known = carried_forward(dest, listing, ref, cfg)  # unchanged + done: not fetched
    results = [run_shard(source, dest, keys, spec, ref, hash_key) for spec, keys in shards]
    merged = merge_night(source, dest, results, cfg, night, run_id, ref)
    draft = prepare_publish(dest, merged, carried, known, ref, ...)   # tables + manifest draft
    report = render_night_report(dest, source, draft, merged)          # its own step
    published = publish_night(dest, draft, report, cfg)                # claim, manifest
    complete_night(dest, published, cfg)        # latest.json, ledger, index: from the manifest
    raise_if_partial(published)                 # storage errors: the operator is alerted

Every step takes stores, small records and the shards' results (no pixels), so each is one
Prefect task; `run_night` runs the same steps in a plain loop (the reference the flow is
measured against, and what the tests compare it with). Settings are read once at the edge
(`NightConfig.from_settings`, `phi_hash_key`) and handed down.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scintiflow.checks.thresholds import CheckThresholds
from scintiflow.outputs.report.browser import DEFAULT_BROWSER
from scintiflow.pipeline.model import ModelRef, engine_for, model_for, resolve_model, store_for
from scintiflow.pipeline.shard import ShardResult, ShardSpec, process_shard
from scintiflow.storage.layout import Layout

if TYPE_CHECKING:
    from scintiflow.outputs.ledger import Outcome
    from scintiflow.outputs.publish import PublishResult, RunDraft
    from scintiflow.pipeline.merge import NightMerge
    from scintiflow.settings import Settings
    from scintiflow.storage import ObjectStore

log = logging.getLogger(__name__)


class NightInvariantError(AssertionError):
    """scored + quarantined + carried != inputs for a night (a bug, never normal operation)."""


class NightPartialError(RuntimeError):
    """The night was published `partial`: some inputs were not read (storage errors, a failed
    shard). They are listed in the manifest and retried by the next run. `summary`: the
    flow's summary, for the caller that reports it."""

    def __init__(self, message: str, summary: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = dict(summary or {})


@dataclass(frozen=True)
class NightConfig:
    """What the night's steps need from the settings (no secret: safe as a task parameter)."""

    layout: Layout = field(default_factory=Layout)
    preferred_view: str = "anterior"
    workers: int = 2
    thresholds: CheckThresholds = field(default_factory=CheckThresholds)
    read_retries: int = 2
    retry_delay_s: float = 2.0
    lease_s: float = 120.0

    @classmethod
    def from_settings(cls, settings: Settings) -> NightConfig:
        import os

        return cls(
            layout=Layout.from_prefixes(settings.prefixes),
            preferred_view=settings.preferred_view,
            workers=settings.decode_workers or min(8, os.cpu_count() or 1),
            read_retries=settings.read_retries,
            retry_delay_s=settings.read_retry_delay_s,
            lease_s=settings.publish_lease_s,
        )


def phi_hash_key(settings: Settings) -> bytes:
    """The key of the keyed hashes (Patient ID, SOP Instance UID): from the settings only."""
    return settings.phi_hash_key.get_secret_value().encode()


# ---------------------------------------------------------------------------------------
# Begin, list and ledger


@dataclass(frozen=True)
class NightBegun:
    """What `begin_night` found: earlier runs it completed, runs without a manifest."""

    completed: tuple[str, ...]
    runs_without_manifest: tuple[dict[str, Any], ...]


def begin_night(
    source: ObjectStore, dest: ObjectStore, night: str, run_id: str, cfg: NightConfig
) -> NightBegun:
    """Before anything of the run is written: the source must exist (a missing folder or bucket
    is an error, not an empty night); earlier runs of the night that stopped after their
    manifest are completed; then this run is registered."""
    from scintiflow.outputs.runs import complete_unfinished, register_run

    source.check_root()
    found = complete_unfinished(
        dest, night, state_prefix=cfg.layout.state, results_prefix=cfg.layout.results
    )
    register_run(dest, night, run_id, cfg.layout.results)
    return NightBegun(found.completed, found.without_manifest)


def list_inputs(source: ObjectStore, night: str, cfg: NightConfig) -> dict[str, str | None]:
    """The night's export keys (key order) -> listing fingerprint (ETag or mtime, with size).
    An empty night is not an error (it is published complete with 0 inputs), but it is logged."""
    prefix = cfg.layout.exports_night(night)
    listing: dict[str, str | None] = {info.key: info.fingerprint for info in source.list(prefix)}
    if not listing:
        log.warning("night %s: no exports under %s", night, prefix)
    return listing


def withdrawn_inputs(
    dest: ObjectStore, night: str, listing: Mapping[str, str | None], cfg: NightConfig
) -> list[dict[str, Any]]:
    """Inputs of the night's latest manifest that are no longer listed (deleted since), with
    that run's reference; earlier withdrawals still absent are kept."""
    from scintiflow.outputs.publish import read_latest
    from scintiflow.storage import KeyNotFoundError

    try:
        latest = read_latest(dest, night, cfg.layout.results)
    except KeyNotFoundError:
        return []
    out = {
        str(i["key"]): {
            "key": i["key"],
            "sha256": i.get("sha256"),
            "status": i["status"],
            "run_id": i.get("run_id"),
            "seen_in": latest["run_id"],
        }
        for i in latest.get("inputs") or []
        if i["key"] not in listing and i["status"] in ("scored", "quarantined")
    }
    for w in latest.get("withdrawn") or []:
        if w["key"] not in listing:
            out.setdefault(str(w["key"]), dict(w))
    return [out[k] for k in sorted(out)]


def carried_forward(
    dest: ObjectStore, listing: Mapping[str, str | None], ref: ModelRef, cfg: NightConfig
) -> tuple[dict[str, Outcome], dict[str, str]]:
    """(key -> outcome, key -> content hash) for inputs already done with this model version,
    found from the listing alone: nothing is downloaded from the exports."""
    from scintiflow.outputs.ledger import lookup_listed

    return lookup_listed(dest, listing, ref.version, state_prefix=cfg.layout.state)


def shard_plan(keys: Sequence[str], size: int) -> list[list[str]]:
    """Consecutive shards of at most `size` keys, in key order."""
    size = max(1, size)
    return [list(keys[i : i + size]) for i in range(0, len(keys), size)]


def shard_specs(
    cfg: NightConfig, night: str, run_id: str, count: int, batch_size: int
) -> list[ShardSpec]:
    """One spec per shard of the run."""
    return [
        ShardSpec(
            night=night,
            run_id=run_id,
            run_prefix=cfg.layout.run_prefix(night, run_id),
            index=i,
            quarantine_prefix=cfg.layout.quarantine,
            preferred_view=cfg.preferred_view,
            batch_size=batch_size,
            workers=cfg.workers,
            thresholds=cfg.thresholds,
            read_retries=cfg.read_retries,
            retry_delay_s=cfg.retry_delay_s,
        )
        for i in range(count)
    ]


def failed_shard(spec: ShardSpec, keys: Sequence[str]) -> ShardResult:
    """The result of a shard that failed as a whole: its keys were not processed
    (`shard_failed`), so the night ends partial and the next run retries them."""
    return ShardResult(
        index=spec.index,
        keys=list(keys),
        check_rows=[],
        sop_tokens={},
        storage_errors=dict.fromkeys(keys, "shard_failed"),
    )


def run_shard(
    source: ObjectStore,
    dest: ObjectStore,
    keys: Sequence[str],
    spec: ShardSpec,
    ref: ModelRef,
    hash_key: bytes,
    pins: Mapping[str, str | None] | None = None,
) -> ShardResult:
    """`process_shard` with the run's model, loaded and opened once per process; `pins`:
    the listing's fingerprints of `keys` (reads conditional on them)."""
    return process_shard(
        source,
        dest,
        keys,
        spec,
        hash_key=hash_key,
        engine=engine_for(ref),
        model=model_for(ref),
        pins=pins,
    )


def merge_night(
    source: ObjectStore,
    dest: ObjectStore,
    results: Sequence[ShardResult],
    cfg: NightConfig,
    night: str,
    run_id: str,
    ref: ModelRef,
) -> NightMerge:
    """Duplicates, the night's suite and data docs, checks.json, drift (`pipeline.merge`)."""
    from scintiflow.pipeline.merge import MergeSpec, merge_shards
    from scintiflow.pipeline.model import training_reference

    spec = MergeSpec(
        night=night,
        run_id=run_id,
        run_prefix=cfg.layout.run_prefix(night, run_id),
        quarantine_prefix=cfg.layout.quarantine,
        thresholds=cfg.thresholds,
        classes=tuple(model_for(ref).classes),
    )
    return merge_shards(source, dest, results, spec, reference=training_reference(ref))


def assert_accounted(
    inputs: Sequence[str],
    scored: Sequence[str],
    quarantined: Sequence[str],
    carried: Sequence[str],
    not_read: Sequence[str] = (),
) -> None:
    """The flow's invariant: every input ends scored, quarantined, carried forward or listed
    as not read (a storage error), exactly once."""
    s, q, c, u = set(scored), set(quarantined), set(carried), set(not_read)
    parts = (s, q, c, u)
    if sum(map(len, parts)) != len(inputs) or set().union(*parts) != set(inputs):
        raise NightInvariantError(
            f"scored ({len(s)}) + quarantined ({len(q)}) + carried forward ({len(c)}) "
            f"+ not read ({len(u)}) != inputs ({len(inputs)})"
        )


def account(
    listing: Mapping[str, Any], merged: NightMerge | None, carried: Mapping[str, Any]
) -> None:
    """`assert_accounted` for a merged night."""
    if merged is None:
        assert_accounted(list(listing), [], [], list(carried))
        return
    assert_accounted(
        list(listing),
        [str(r["key"]) for r in merged.rows],
        list(merged.quarantined),
        list(carried),
        list(merged.storage_errors),
    )


# ---------------------------------------------------------------------------------------
# Report, publish, ledger


def prepare_publish(
    dest: ObjectStore,
    night: str,
    run_id: str,
    merged: NightMerge | None,
    carried: Mapping[str, Outcome],
    known: Mapping[str, str],
    ref: ModelRef,
    cfg: NightConfig,
    *,
    timings: Mapping[str, float],
    source_url: str | None = None,
    listing: Mapping[str, str | None] | None = None,
    begun: NightBegun | None = None,
) -> RunDraft:
    """Write the run's tables and draft its manifest (accounting checked first). `listing`:
    the night's listing (fingerprints for the ledger index; withdrawn inputs)."""
    from scintiflow.outputs.publish import QuarantinedInput, prepare_run

    quarantined: dict[str, dict[str, Any]] = {} if merged is None else merged.quarantined
    return prepare_run(
        dest,
        night=night,
        run_id=run_id,
        rows=[] if merged is None else merged.rows,
        quarantined=[
            QuarantinedInput(k, q.get("sha256"), tuple(q["codes"]), str(q["location"]))
            for k, q in sorted(quarantined.items())
        ],
        carried=carried,
        hashes={**known, **({} if merged is None else merged.hashes)},
        model=ref.to_dict(),
        engine=ref.engine,
        results_prefix=cfg.layout.results,
        outputs=None if merged is None else merged.outputs,
        superseded=() if merged is None else merged.superseded,
        timings=timings,
        drift=None if merged is None else merged.drift,
        checks=None if merged is None else merged.checks,
        extra={"source_url": source_url} if source_url else None,
        storage_errors=None if merged is None else merged.storage_errors,
        fingerprints=dict(listing or {}),
        withdrawn=[] if listing is None else withdrawn_inputs(dest, night, listing, cfg),
        runs_without_manifest=[] if begun is None else list(begun.runs_without_manifest),
    )


@dataclass(frozen=True)
class NightReport:
    """What the report step wrote: the page's key and every object with its hash."""

    html_key: str | None
    outputs: dict[str, dict[str, Any]]
    pdf_error: str | None = None
    pdf_studies: int = 0


def render_night_report(
    dest: ObjectStore,
    source: ObjectStore,
    draft: RunDraft,
    merged: NightMerge | None,
    *,
    model_name: str | None = None,
    browser: str | None = DEFAULT_BROWSER,
) -> NightReport:
    """The clinician report of the run (nothing when the run has no new inputs)."""
    from scintiflow.outputs.publish import carried_rows
    from scintiflow.outputs.report import build_report_input, render_report

    if merged is None or not (merged.rows or merged.quarantined):
        return NightReport(None, {})
    carried = [{**r, "reported_in": run} for run, r in carried_rows(dest, draft.manifest)]
    inp = build_report_input(
        draft.manifest,
        merged.rows,
        prefix=draft.prefix,
        carried_rows=carried,
        quarantined=[{"key": k, "codes": q["codes"]} for k, q in merged.quarantined.items()],
        checks=merged.checks_document,
        drift=merged.drift,
        model_name=model_name,
    )
    out = render_report(dest, inp, dest_prefix=draft.prefix, source=source, browser=browser)
    written = {k: {"sha256": v} for k, v in out.written.items()}
    return NightReport(out.html_key, written, out.pdf_error, out.pdf_studies)


def publish_night(
    dest: ObjectStore,
    draft: RunDraft,
    report: NightReport,
    cfg: NightConfig,
    *,
    fail_before_manifest: bool = False,
) -> PublishResult:
    """Verify what the steps wrote (by their hashes, one listing), claim, manifest."""
    from scintiflow.outputs.publish import finish_run

    return finish_run(
        dest,
        draft,
        report_key=report.html_key,
        report_outputs=report.outputs,
        report_pdf_error=report.pdf_error,
        report_pdf_studies=report.pdf_studies,
        fail_before_manifest=fail_before_manifest,
        lease_s=cfg.lease_s,
    )


def complete_night(dest: ObjectStore, published: PublishResult, cfg: NightConfig) -> int:
    """`latest.json`, ledger and index entries, from the manifest alone; a run that lost the
    claim completes the holder's run (it may have died after its manifest). Returns the
    number of inputs ledgered."""
    from scintiflow.outputs.runs import complete_run, ledger_items

    key = published.to_complete
    if key is None or not dest.exists(key):
        return 0
    manifest = complete_run(
        dest, key, state_prefix=cfg.layout.state, results_prefix=cfg.layout.results
    )
    return len(ledger_items(manifest, key)) if published.manifest_key else 0


def raise_if_partial(published: PublishResult, summary: Mapping[str, Any] | None = None) -> None:
    """Raise `NightPartialError` when the manifest written is `partial`."""
    if published.manifest is not None and published.status == "partial":
        errors = published.manifest.get("storage_errors") or {}
        counts = Counter(str(v) for v in errors.values())
        codes = ", ".join(f"{c} x{n}" for c, n in sorted(counts.items()))
        raise NightPartialError(
            f"night {published.manifest['night']} run {published.manifest['run_id']} is "
            f"partial: {len(errors)} inputs not read ({codes}); the next run retries them",
            summary,
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
    settings: Settings,
    browser: str | None = DEFAULT_BROWSER,
) -> PublishResult:
    """The nightly job as a plain loop over the same steps (no orchestration); `settings`
    are read once by the caller (the process's edge) and handed down."""
    cfg = NightConfig.from_settings(settings)
    hash_key = phi_hash_key(settings)
    dest_url = dest_url or source_url
    ref = resolve_model(
        registry_url or dest_url, model_name, model, engine, models_prefix=cfg.layout.models
    )
    return night_loop(
        night,
        store_for(source_url),
        store_for(dest_url),
        ref,
        cfg=cfg,
        hash_key=hash_key,
        batch_size=batch_size,
        shard_size=shard_size,
        run_id=run_id,
        source_url=source_url,
        browser=browser,
    )


def night_loop(
    night: str,
    source: ObjectStore,
    dest: ObjectStore,
    ref: ModelRef,
    *,
    cfg: NightConfig,
    hash_key: bytes,
    batch_size: int = 32,
    shard_size: int = 256,
    run_id: str | None = None,
    source_url: str | None = None,
    browser: str | None = DEFAULT_BROWSER,
) -> PublishResult:
    """`run_night` on stores in hand (tests wrap them, e.g. to count reads)."""
    from scintiflow.domain import new_run_id

    started = time.perf_counter()
    run_id = run_id or new_run_id()
    begun = begin_night(source, dest, night, run_id, cfg)
    listing = list_inputs(source, night, cfg)
    carried, known = carried_forward(dest, listing, ref, cfg)
    todo = [k for k in listing if k not in carried]
    plan = shard_plan(todo, shard_size)
    specs = shard_specs(cfg, night, run_id, len(plan), batch_size)
    results = []
    for spec, keys in zip(specs, plan, strict=True):
        try:
            pins = {k: listing[k] for k in keys}
            results.append(run_shard(source, dest, keys, spec, ref, hash_key, pins))
        except Exception as exc:  # the shard's keys are retried by the next run
            log.error(
                "shard %d failed (%s): its inputs end shard_failed", spec.index, type(exc).__name__
            )
            results.append(failed_shard(spec, keys))
    merged = merge_night(source, dest, results, cfg, night, run_id, ref) if todo else None
    account(listing, merged, carried)
    timings = {"before_publish": round(time.perf_counter() - started, 3)}
    draft = prepare_publish(
        dest,
        night,
        run_id,
        merged,
        carried,
        known,
        ref,
        cfg,
        timings=timings,
        source_url=source_url,
        listing=listing,
        begun=begun,
    )
    report = render_night_report(dest, source, draft, merged, model_name=ref.name, browser=browser)
    published = publish_night(dest, draft, report, cfg)
    complete_night(dest, published, cfg)
    return published
