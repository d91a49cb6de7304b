"""Tasks of the nightly flow: stores by URL, small records and shard results in, small
records out (never pixels, never identifiers).

Settings are read here, once per process (`config`, the PHI hash key), and handed to the
domain functions; the PHI hash key never becomes a task parameter. Retries with exponential
backoff only on the pure I/O tasks, which are safe to repeat; a shard is safe to repeat too
(same keys, same outputs). `cache_policy=NO_CACHE`: nothing is hashed or persisted from
the inputs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from scintiflow.outputs.ledger import Outcome
from scintiflow.outputs.publish import PublishResult, RunDraft
from scintiflow.pipeline import night as steps
from scintiflow.pipeline.merge import NightMerge
from scintiflow.pipeline.model import ModelRef, store_for
from scintiflow.pipeline.night import NightBegun, NightConfig, NightReport
from scintiflow.pipeline.shard import ShardResult, ShardSpec


def _retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Retry anything but a permanent storage error (missing folder or bucket, access denied)
    and the tests' injected crash: those end the run at once."""
    from scintiflow.outputs.publish import InjectedFaultError
    from scintiflow.storage import StoreError

    exc = getattr(state, "data", None)
    if isinstance(exc, InjectedFaultError):
        return False
    return not (isinstance(exc, StoreError) and exc.permanent)


IO_RETRIES: dict[str, Any] = {
    "retry_condition_fn": _retryable,
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
}


@lru_cache(maxsize=1)
def config() -> NightConfig:
    """The night's settings of this process."""
    from scintiflow.settings import get_settings

    return NightConfig.from_settings(get_settings())


def _hash_key() -> bytes:
    from scintiflow.settings import get_settings

    return steps.phi_hash_key(get_settings())


def plan(
    night: str, run_id: str, keys: list[str], shard_size: int, batch_size: int
) -> list[tuple[ShardSpec, list[str]]]:
    """The run's shards: (spec, keys) in key order (plain function: no task run)."""
    parts = steps.shard_plan(keys, shard_size)
    specs = steps.shard_specs(config(), night, run_id, len(parts), batch_size)
    return list(zip(specs, parts, strict=True))


@task(name="resolve-model", cache_policy=NO_CACHE)
def resolve_model(registry: str, name: str, selector: str, engine: str) -> ModelRef:
    """Version id, architecture and engine that score the night (loads the model once)."""
    models = config().layout.models
    return steps.resolve_model(registry, name, selector, engine, models_prefix=models)


@task(name="begin-night", cache_policy=NO_CACHE, **IO_RETRIES)
def begin_night(source: str, dest: str, night: str, run_id: str) -> NightBegun:
    """The source exists; earlier runs that stopped after their manifest are completed; this
    run is registered (before it writes anything else)."""
    return steps.begin_night(store_for(source), store_for(dest), night, run_id, config())


@task(name="list-exports", cache_policy=NO_CACHE, **IO_RETRIES)
def list_exports(source: str, night: str) -> dict[str, str | None]:
    """The night's export keys with their listing fingerprints."""
    return steps.list_inputs(store_for(source), night, config())


@task(name="ledger-lookup", cache_policy=NO_CACHE, **IO_RETRIES)
def ledger_lookup(
    dest: str, listing: dict[str, str | None], model: ModelRef
) -> tuple[dict[str, Outcome], dict[str, str]]:
    """Inputs already done with this model version, from the listing alone."""
    return steps.carried_forward(store_for(dest), listing, model, config())


@task(name="process-shard", cache_policy=NO_CACHE)
def process_shard(
    source: str,
    dest: str,
    keys: list[str],
    spec: ShardSpec,
    model: ModelRef,
    pins: dict[str, str | None] | None = None,
) -> ShardResult:
    """One shard: fetch once (pinned to the listing), check, quarantine, score, heatmaps,
    thumbnails, SC."""
    source_store, dest_store = store_for(source), store_for(dest)
    return steps.run_shard(source_store, dest_store, keys, spec, model, _hash_key(), pins)


@task(name="merge", cache_policy=NO_CACHE, **IO_RETRIES)
def merge(
    source: str, dest: str, results: list[ShardResult], night: str, run_id: str, model: ModelRef
) -> NightMerge:
    """Duplicates, the night's suite and data docs, checks.json, drift."""
    src, out = store_for(source), store_for(dest)
    return steps.merge_night(src, out, results, config(), night, run_id, model)


@task(name="prepare-publish", cache_policy=NO_CACHE, **IO_RETRIES)
def prepare_publish(
    dest: str,
    night: str,
    run_id: str,
    merged: NightMerge | None,
    carried: dict[str, Outcome],
    known: dict[str, str],
    model: ModelRef,
    timings: dict[str, float],
    source: str,
    listing: dict[str, str | None],
    begun: NightBegun,
) -> RunDraft:
    """The run's tables and its manifest draft (accounting checked, withdrawn inputs listed)."""
    return steps.prepare_publish(
        store_for(dest),
        night,
        run_id,
        merged,
        carried,
        known,
        model,
        config(),
        timings=timings,
        source_url=source,
        listing=listing,
        begun=begun,
    )


@task(name="report", cache_policy=NO_CACHE, **IO_RETRIES)
def report(
    dest: str, source: str, draft: RunDraft, merged: NightMerge | None, model_name: str
) -> NightReport:
    """The clinician report: headers by ranged reads, the shards' thumbnails, HTML + PDF."""
    out, src = store_for(dest), store_for(source)
    return steps.render_night_report(out, src, draft, merged, model_name=model_name)


@task(name="publish", cache_policy=NO_CACHE, **IO_RETRIES)
def publish(
    dest: str, draft: RunDraft, report: NightReport, fail_before_manifest: bool
) -> PublishResult:
    """Verified by the writers' hashes, then the claim (with a lease) and the manifest
    (if_absent); safe to retry: a retried claim and manifest are recognised as this run's."""
    return steps.publish_night(
        store_for(dest), draft, report, config(), fail_before_manifest=fail_before_manifest
    )


@task(name="complete-run", cache_policy=NO_CACHE, **IO_RETRIES)
def complete_run(dest: str, published: PublishResult) -> int:
    """`latest.json`, ledger and index entries, all from the manifest (idempotent)."""
    return steps.complete_night(store_for(dest), published, config())
