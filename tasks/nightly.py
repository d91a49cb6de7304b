"""Tasks of the nightly flow: one batch of keys in, small records out (never pixels).

Parameters are URLs, keys, content hashes and small records (Prefect stores task inputs);
retries with exponential backoff only on the pure I/O tasks, which are safe to repeat.
`cache_policy=NO_CACHE`: nothing is hashed or persisted from the inputs.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from scintiflow.outputs import ledger
from scintiflow.outputs.publish import PublishResult
from scintiflow.pipeline import night as nightly
from scintiflow.pipeline.night import CheckedShard, ModelRef, store_for

IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
}


@task(name="list-exports", cache_policy=NO_CACHE, **IO_RETRIES)
def list_exports(source: str, night: str) -> list[str]:
    """The night's export keys."""
    return nightly.list_inputs(store_for(source), night)


@task(name="hash-inputs", cache_policy=NO_CACHE, **IO_RETRIES)
def hash_inputs(source: str, keys: list[str]) -> dict[str, str | None]:
    """Content hashes of one batch of keys (for the ledger)."""
    return nightly.hash_keys(store_for(source), keys)


@task(name="ledger-lookup", cache_policy=NO_CACHE, **IO_RETRIES)
def ledger_lookup(dest: str, hashes: dict[str, str], model_version: str) -> dict[str, Any]:
    """Input key -> recorded outcome, for inputs already done with this model version."""
    prefix = nightly._settings().prefixes.state
    return dict(ledger.lookup(store_for(dest), hashes, model_version, state_prefix=prefix))


@task(name="resolve-model", cache_policy=NO_CACHE)
def resolve_model(registry: str, name: str, selector: str, engine: str) -> ModelRef:
    """Version id, architecture and engine that score the night (loads the model once)."""
    return nightly.resolve_model(registry, name, selector, engine)


@task(name="check-batch", cache_policy=NO_CACHE)
def check_batch(source: str, dest: str, night: str, run_id: str, keys: list[str]) -> CheckedShard:
    """Data checks of one batch; rejects are quarantined."""
    return nightly.check_shard(store_for(source), store_for(dest), night, run_id, keys)


@task(name="score-batch", cache_policy=NO_CACHE)
def score_batch(
    source: str, dest: str, keys: list[str], model: ModelRef, prefix: str, batch_size: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Probabilities + heatmaps of one batch of accepted keys: (rows, failures)."""
    src, out = store_for(source), store_for(dest)
    return nightly.score_shard(src, out, keys, model, prefix, batch_size=batch_size)


@task(name="quarantine-failures", cache_policy=NO_CACHE, **IO_RETRIES)
def quarantine_failures(
    source: str, dest: str, night: str, run_id: str, failures: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Accepted inputs that could not be scored are quarantined with their reason."""
    src, out = store_for(source), store_for(dest)
    return nightly.quarantine_failures(src, out, night, run_id, failures)


@task(name="write-checks-summary", cache_policy=NO_CACHE, **IO_RETRIES)
def write_checks_summary(
    dest: str, night: str, run_id: str, shards: list[CheckedShard], inputs: int
) -> dict[str, str]:
    """Data docs + checks.json of the run."""
    return nightly.write_checks_summary(store_for(dest), night, run_id, shards, inputs)


@task(name="drift", cache_policy=NO_CACHE)
def drift(
    source: str,
    model: ModelRef,
    keys: list[str],
    hashes: dict[str, str | None],
    predicted: list[str],
) -> dict[str, Any]:
    """PSI/KS of the night's inputs and predictions against the training reference."""
    return nightly.drift_check(store_for(source), model, keys, hashes, predicted)


@task(name="record-ledger", cache_policy=NO_CACHE, **IO_RETRIES)
def record_ledger(
    dest: str,
    night: str,
    run_id: str,
    manifest_key: str,
    rows: list[dict[str, Any]],
    quarantined: dict[str, dict[str, Any]],
    model_version: str,
) -> int:
    """Ledger entries for the run's new inputs; only after the manifest exists."""
    out = store_for(dest)
    return nightly.record_ledger(out, night, run_id, manifest_key, rows, quarantined, model_version)


@task(name="publish", cache_policy=NO_CACHE)
def publish(
    dest: str,
    night: str,
    run_id: str,
    rows: list[dict[str, Any]],
    quarantined: dict[str, dict[str, Any]],
    carried: dict[str, Any],
    hashes: dict[str, str | None],
    model: ModelRef,
    timings: dict[str, float],
    drift: dict[str, Any] | None,
    checks: dict[str, str] | None,
    source: str,
    fail_before_manifest: bool,
) -> PublishResult:
    """Outputs verified, then claim + manifest (if_absent), then latest.json."""
    return nightly.publish_night(
        store_for(dest),
        night,
        run_id,
        rows=rows,
        quarantined=quarantined,
        carried=carried,
        hashes=hashes,
        ref=model,
        timings=timings,
        drift=drift,
        checks=checks,
        source_url=source,
        fail_before_manifest=fail_before_manifest,
    )
