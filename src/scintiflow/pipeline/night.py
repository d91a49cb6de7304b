"""The nightly job's steps, without Prefect: what `tasks/` wrap and `flows/` wire.

    listing = list_inputs(source, night, cfg)              # key -> listing fingerprint
    carried, known = carried_forward(dest, listing, ref, cfg)  # unchanged + done: not fetched
    results = [run_shard(source, dest, keys, spec, ref, hash_key) for spec, keys in shards]
    merged = merge_night(source, dest, results, cfg, night, run_id, ref)
    draft = prepare_publish(dest, merged, carried, known, ref, ...)   # tables + manifest draft
    report = render_night_report(dest, source, draft, merged)          # its own step
    published = publish_night(dest, draft, report)                     # manifest last
    record_ledger(dest, published, merged, listing, ref)               # only after the manifest

Every step takes stores, small records and the shards' results (no pixels), so each is one
Prefect task; `run_night` runs the same steps in a plain loop (the reference the flow is
measured against, and what the tests compare it with). Settings are read once at the edge
(`NightConfig.from_settings`, `phi_hash_key`) and handed down.
"""

from __future__ import annotations

import time
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


class NightInvariantError(AssertionError):
    """scored + quarantined + carried != inputs for a night (a bug, never normal operation)."""


@dataclass(frozen=True)
class NightConfig:
    """What the night's steps need from the settings (no secret: safe as a task parameter)."""

    layout: Layout = field(default_factory=Layout)
    preferred_view: str = "anterior"
    workers: int = 2
    thresholds: CheckThresholds = field(default_factory=CheckThresholds)

    @classmethod
    def from_settings(cls, settings: Settings) -> NightConfig:
        import os

        return cls(
            layout=Layout.from_prefixes(settings.prefixes),
            preferred_view=settings.preferred_view,
            workers=settings.decode_workers or min(8, os.cpu_count() or 1),
        )


def phi_hash_key(settings: Settings) -> bytes:
    """The key of the keyed hashes (Patient ID, SOP Instance UID): from the settings only."""
    return settings.phi_hash_key.get_secret_value().encode()


# ---------------------------------------------------------------------------------------
# List and ledger


def list_inputs(source: ObjectStore, night: str, cfg: NightConfig) -> dict[str, str | None]:
    """The night's export keys (key order) -> listing fingerprint (ETag or mtime, with size)."""
    return {info.key: info.fingerprint for info in source.list(cfg.layout.exports_night(night))}


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
        )
        for i in range(count)
    ]


def run_shard(
    source: ObjectStore,
    dest: ObjectStore,
    keys: Sequence[str],
    spec: ShardSpec,
    ref: ModelRef,
    hash_key: bytes,
) -> ShardResult:
    """`process_shard` with the run's model, loaded and opened once per process."""
    return process_shard(
        source, dest, keys, spec, hash_key=hash_key, engine=engine_for(ref), model=model_for(ref)
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
) -> None:
    """The flow's invariant: every input ends scored or quarantined (ledger skips included)."""
    s, q, c = set(scored), set(quarantined), set(carried)
    if len(s) + len(q) + len(c) != len(inputs) or (s | q | c) != set(inputs) or s & q:
        raise NightInvariantError(
            f"scored ({len(s)}) + quarantined ({len(q)}) + carried forward ({len(c)}) "
            f"!= inputs ({len(inputs)})"
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
) -> RunDraft:
    """Write the run's tables and draft its manifest (accounting checked first)."""
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
    )


@dataclass(frozen=True)
class NightReport:
    """What the report step wrote: the page's key and every object with its hash."""

    html_key: str | None
    outputs: dict[str, dict[str, Any]]
    pdf_error: str | None = None


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
    return NightReport(
        out.html_key, {k: {"sha256": v} for k, v in out.written.items()}, out.pdf_error
    )


def publish_night(
    dest: ObjectStore,
    draft: RunDraft,
    report: NightReport,
    *,
    fail_before_manifest: bool = False,
) -> PublishResult:
    """Verify what the steps wrote (by their hashes, one listing), claim, manifest, latest."""
    from scintiflow.outputs.publish import finish_run

    return finish_run(
        dest,
        draft,
        report_key=report.html_key,
        report_outputs=report.outputs,
        fail_before_manifest=fail_before_manifest,
    )


def record_ledger(
    dest: ObjectStore,
    published: PublishResult,
    merged: NightMerge | None,
    listing: Mapping[str, str | None],
    ref: ModelRef,
    cfg: NightConfig,
) -> int:
    """Ledger entries and listing-index entries for the run's new inputs (after its manifest)."""
    from scintiflow.outputs.ledger import Outcome, record, record_index

    if published.manifest_key is None or merged is None or published.manifest is None:
        return 0
    night, run_id, mkey = (
        published.manifest["night"],
        published.manifest["run_id"],
        published.manifest_key,
    )
    items = [
        (
            str(r["key"]),
            str(r["sha256"]),
            Outcome("scored", night, run_id, mkey, (), str(r["predicted_label"])),
        )
        for r in merged.rows
    ]
    items += [
        (k, str(q["sha256"]), Outcome("quarantined", night, run_id, mkey, tuple(q["codes"])))
        for k, q in merged.quarantined.items()
        if q.get("sha256")
    ]
    written = record(dest, items, ref.version, state_prefix=cfg.layout.state)
    record_index(
        dest,
        [(k, listing.get(k), sha) for k, sha, _ in items],
        state_prefix=cfg.layout.state,
    )
    return len(written)


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
    listing = list_inputs(source, night, cfg)
    carried, known = carried_forward(dest, listing, ref, cfg)
    todo = [k for k in listing if k not in carried]
    plan = shard_plan(todo, shard_size)
    specs = shard_specs(cfg, night, run_id, len(plan), batch_size)
    results = [
        run_shard(source, dest, keys, spec, ref, hash_key)
        for spec, keys in zip(specs, plan, strict=True)
    ]
    merged = merge_night(source, dest, results, cfg, night, run_id, ref) if todo else None
    if merged is not None:
        scored = [str(r["key"]) for r in merged.rows]
        assert_accounted(list(listing), scored, list(merged.quarantined), list(carried))
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
    )
    report = render_night_report(dest, source, draft, merged, model_name=ref.name, browser=browser)
    published = publish_night(dest, draft, report)
    record_ledger(dest, published, merged, listing, ref, cfg)
    return published
