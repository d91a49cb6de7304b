"""The nightly flow: begin -> list -> ledger -> shards -> merge -> report -> publish -> complete.

Wiring only; every step is a task in `tasks.nightly` around `scintiflow.pipeline.night`, and
the summaries and artifact tables come from `scintiflow.pipeline.summary`. Parameters (stored
by Prefect) are URLs, the night, a model selector and sizes: never pixels or patient
identifiers.
"""

from __future__ import annotations

import time
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from scintiflow.domain import new_run_id
from scintiflow.pipeline import summary as s
from scintiflow.pipeline.model import store_for
from scintiflow.pipeline.night import account, failed_shard, raise_if_partial
from tasks import nightly as t


@flow(name="nightly", log_prints=False)
def nightly(
    night: str | None = None,
    source: str = "./scintiflow-data",
    dest: str | None = None,
    model: str = "champion",
    engine: str = "auto",
    batch_size: int = 32,
    shard_size: int = 256,
    registry: str | None = None,
    model_name: str = "thyroid",
    fail_before_manifest: bool = False,
) -> dict[str, Any]:
    """Score one night's new exports and publish them atomically.

    `model`: `champion`, `latest`, `champion-or-latest` (demo: latest when no champion) or a
    version id in `registry` (default: `dest`). `shard_size` keys per shard task run,
    `batch_size` images per engine call. `night` defaults to the day before the scheduled
    start (UTC), so the 02:00 deployment scores the evening's exports.
    `fail_before_manifest` is a crash-injection hook for tests.
    """
    logger = get_run_logger()
    night = night or _default_night()
    started = time.perf_counter()
    dest = dest or source
    run_id = new_run_id()

    ref = t.resolve_model(registry or dest, model_name, model, engine)
    begun = t.begin_night(source, dest, night, run_id)
    listing = t.list_exports(source, night)
    carried, known = t.ledger_lookup(dest, listing, ref)
    todo = [k for k in listing if k not in carried]
    timings = {"list_ledger": round(time.perf_counter() - started, 3)}
    logger.info("night %s run %s: %d inputs, %d new", night, run_id, len(listing), len(todo))

    progress = cast(
        UUID,
        create_progress_artifact(
            0.0 if todo else 100.0,
            key="nightly-progress",
            description=f"night {night}, run {run_id}: {len(todo)} new inputs",
        ),
    )
    results = []
    for spec, keys in t.plan(night, run_id, todo, shard_size, batch_size):
        pins = {k: listing[k] for k in keys}
        state = t.process_shard(source, dest, keys, spec, ref, pins, return_state=True)
        if state.is_completed():
            results.append(state.result())
        else:  # its inputs end `shard_failed`: the night is partial, the next run retries them
            logger.error("shard %d failed: %s", spec.index, state.message)
            results.append(failed_shard(spec, keys))
        update_progress_artifact(progress, 100.0 * sum(len(r.keys) for r in results) / len(todo))
    timings |= s.stage_timings(results)

    t0 = time.perf_counter()
    merged = t.merge(source, dest, results, night, run_id, ref) if todo else None
    account(listing, merged, carried)
    timings["merge"] = round(time.perf_counter() - t0, 3)
    draft = t.prepare_publish(
        dest, night, run_id, merged, carried, known, ref, timings, source, listing, begun
    )
    t0 = time.perf_counter()
    report = t.report(dest, source, draft, merged, model_name)
    timings["report"] = round(time.perf_counter() - t0, 3)
    published = t.publish(dest, draft, report, fail_before_manifest)
    ledgered = t.complete_run(dest, published)

    timings["total"] = round(time.perf_counter() - started, 3)
    summary = s.night_summary(night, run_id, ref, published, merged, carried, len(listing))
    summary["ledger_entries_written"] = ledgered
    summary["completed_earlier_runs"] = list(begun.completed)
    summary["timings_s"] = timings
    _artifacts(summary, dest)
    logger.info(s.summary_line(summary))
    raise_if_partial(published, summary)
    return summary


def _default_night() -> str:
    from datetime import UTC, datetime, timedelta

    from prefect.runtime import flow_run

    start = flow_run.scheduled_start_time or datetime.now(UTC)
    return (start.astimezone(UTC).date() - timedelta(days=1)).isoformat()


def _artifacts(summary: dict[str, Any], dest: str) -> None:
    """What MLOps sees in the UI without opening the bucket (keys: lowercase and dashes)."""
    night, run_id = summary["night"], summary["run_id"]
    create_table_artifact(
        s.class_table(summary),
        key="nightly-class-counts",
        description=f"night {night}: predicted classes over the whole night",
    )
    create_table_artifact(
        s.reason_table(summary),
        key="nightly-quarantine-reasons",
        description=f"night {night}: quarantine reason codes over the whole night",
    )
    create_markdown_artifact(
        s.summary_markdown(summary), key="nightly-summary", description=f"night {night}"
    )
    store = store_for(dest)
    if summary["manifest"]:
        create_link_artifact(
            store.url_for(summary["manifest"]),
            link_text="manifest.json",
            key="nightly-manifest",
            description=f"night {night}, run {run_id}",
        )
    if summary["report"]:
        create_link_artifact(
            store.url_for(summary["report"]),
            link_text="clinician report",
            key="nightly-report",
            description=f"night {night}, run {run_id}",
        )
