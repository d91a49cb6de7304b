"""The nightly flow: list -> ledger -> check + quarantine -> score -> drift -> publish -> ledger.

Wiring only; every step is a task in `tasks.nightly` around `scintiflow.pipeline.night`. Parameters
(stored by Prefect) are URLs, the night, a model selector and sizes: never pixels or patient
identifiers.
"""

from __future__ import annotations

import time
from collections import Counter
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

from scintiflow import CLASSES
from scintiflow.checks.reasons import REASONS
from scintiflow.domain import new_run_id
from scintiflow.outputs.publish import run_prefix
from scintiflow.pipeline.night import assert_accounted, drop_night_state, shards
from scintiflow.settings import get_settings
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
    version id in `registry` (default: `dest`). `shard_size` keys per task run, `batch_size`
    images per engine call. `night` defaults to the day before the scheduled start (UTC), so
    the 02:00 deployment scores the evening's exports. `fail_before_manifest` is a
    crash-injection hook for tests.
    """
    logger = get_run_logger()
    night = night or _default_night()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    dest = dest or source
    run_id = new_run_id()
    prefix = run_prefix(night, run_id, get_settings().prefixes.results)

    ref = t.resolve_model(registry or dest, model_name, model, engine)
    keys = t.list_exports(source, night)
    hashes: dict[str, str | None] = {}
    for part in shards(keys, shard_size):
        hashes.update(t.hash_inputs(source, part))
    readable = {k: h for k, h in hashes.items() if h}
    carried = t.ledger_lookup(dest, readable, ref.version)
    todo = [k for k in keys if k not in carried]
    timings["list_hash_ledger"] = round(time.perf_counter() - started, 3)
    logger.info(
        "night %s run %s: %d inputs, %d already done with %s, %d new",
        night,
        run_id,
        len(keys),
        len(carried),
        ref.version,
        len(todo),
    )

    progress = cast(
        UUID,
        create_progress_artifact(
            0.0 if todo else 100.0,
            key="nightly-progress",
            description=f"night {night}, run {run_id}: {len(todo)} new inputs",
        ),
    )
    checked, rows, failures = [], [], []
    done = 0
    t_check = t_score = 0.0
    for part in shards(todo, shard_size):
        t0 = time.perf_counter()
        result = t.check_batch(source, dest, night, run_id, part)
        t1 = time.perf_counter()
        r, f = t.score_batch(source, dest, result.accepted, ref, prefix, batch_size)
        t_check += t1 - t0
        t_score += time.perf_counter() - t1
        checked.append(result)
        rows += r
        failures += f
        done += len(part)
        update_progress_artifact(progress, 100.0 * done / len(todo))
    timings["check"], timings["score"] = round(t_check, 3), round(t_score, 3)

    t0 = time.perf_counter()
    quarantined = {k: v for c in checked for k, v in c.quarantined.items()}
    quarantined.update(t.quarantine_failures(source, dest, night, run_id, failures))
    assert_accounted(keys, [r["key"] for r in rows], list(quarantined), list(carried))
    checks = t.write_checks_summary(dest, night, run_id, checked, len(todo)) if todo else None
    drift = (
        t.drift(source, ref, [r["key"] for r in rows], hashes, [r["predicted_label"] for r in rows])
        if rows
        else None
    )
    timings["checks_summary_drift"] = round(time.perf_counter() - t0, 3)
    timings["before_publish"] = round(time.perf_counter() - started, 3)
    published = t.publish(
        dest,
        night,
        run_id,
        rows,
        quarantined,
        carried,
        hashes,
        ref,
        timings,
        drift,
        checks,
        source,
        fail_before_manifest,
    )
    ledgered = 0
    if published.manifest_key is not None:
        ledgered = t.record_ledger(
            dest, night, run_id, published.manifest_key, rows, quarantined, ref.version
        )
    drop_night_state(run_id)
    timings["total"] = round(time.perf_counter() - started, 3)
    summary = _summary(night, run_id, ref, published, rows, quarantined, carried, keys, drift)
    summary["ledger_entries_written"] = ledgered
    summary["timings_s"] = timings
    _artifacts(summary, published, dest)
    logger.info(
        "night %s run %s: %d inputs = %d scored + %d quarantined (%d new); manifest %s",
        night,
        run_id,
        summary["inputs"],
        summary["scored"],
        summary["quarantined"],
        summary["new"],
        summary["manifest"] or f"not written (superseded by {published.superseded_by})",
    )
    return summary


def _default_night() -> str:
    from datetime import UTC, datetime, timedelta

    from prefect.runtime import flow_run

    start = flow_run.scheduled_start_time or datetime.now(UTC)
    return (start.astimezone(UTC).date() - timedelta(days=1)).isoformat()


def _summary(
    night: str,
    run_id: str,
    ref: Any,
    published: Any,
    rows: list[dict[str, Any]],
    quarantined: dict[str, Any],
    carried: dict[str, Any],
    keys: list[str],
    drift: dict[str, Any] | None,
) -> dict[str, Any]:
    manifest = published.manifest or {}
    counts = manifest.get("counts") or {}
    return {
        "night": night,
        "run_id": run_id,
        "inputs": len(keys),
        "scored": counts.get(
            "scored", len(rows) + sum(o.status == "scored" for o in carried.values())
        ),
        "quarantined": counts.get(
            "quarantined",
            len(quarantined) + sum(o.status == "quarantined" for o in carried.values()),
        ),
        "new": len(rows) + len(quarantined),
        "scored_new": len(rows),
        "quarantined_new": len(quarantined),
        "carried_forward": len(carried),
        "low_confidence_new": sum(bool(r["low_confidence"]) for r in rows),
        "model_version": ref.version,
        "model_note": ref.note,
        "engine": ref.engine,
        "manifest": published.manifest_key,
        "superseded_by": published.superseded_by,
        "class_counts": manifest.get("class_counts")
        or dict(Counter(r["predicted_label"] for r in rows)),
        "reason_counts": manifest.get("reason_counts")
        or dict(Counter(c for q in quarantined.values() for c in q["codes"])),
        "drift": None
        if drift is None
        else {"status": drift["status"], "features": drift["drifted_features"]},
        "report": manifest.get("report"),
        "run_prefix": published.run_prefix,
    }


def _artifacts(summary: dict[str, Any], published: Any, dest: str) -> None:
    """What MLOps sees in the UI without opening the bucket (keys: lowercase and dashes)."""
    from scintiflow.pipeline.night import store_for

    store = store_for(dest)
    night = summary["night"]
    create_table_artifact(
        [{"class": c, "images": summary["class_counts"].get(c, 0)} for c in CLASSES],
        key="nightly-class-counts",
        description=f"night {night}: predicted classes over the whole night",
    )
    create_table_artifact(
        [
            {"reason": code, "files": n, "meaning": REASONS.get(code, ("", ""))[1]}
            for code, n in sorted(summary["reason_counts"].items())
        ]
        or [{"reason": "(none)", "files": 0, "meaning": ""}],
        key="nightly-quarantine-reasons",
        description=f"night {night}: quarantine reason codes over the whole night",
    )
    t = summary["timings_s"]
    drift = summary["drift"]
    drift_text = "-" if drift is None else " ".join([drift["status"], ", ".join(drift["features"])])
    manifest_text = (
        summary["manifest"] or f"not written: superseded by run {summary['superseded_by']}"
    )
    lines = [
        f"# Night {night}, run `{summary['run_id']}`",
        "",
        "| | |",
        "|---|---|",
        f"| inputs | {summary['inputs']} |",
        f"| scored | {summary['scored']} ({summary['scored_new']} new) |",
        f"| quarantined | {summary['quarantined']} ({summary['quarantined_new']} new) |",
        f"| carried forward (ledger) | {summary['carried_forward']} |",
        f"| flagged low-confidence (new) | {summary['low_confidence_new']} |",
        f"| model version | `{summary['model_version']}` |",
        f"| engine | {summary['engine']} |",
        f"| drift | {drift_text.strip()} |",
        f"| manifest | {manifest_text} |",
        "",
        "Wall time per stage (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()),
    ]
    if summary["model_note"]:
        lines += ["", f"**Note:** {summary['model_note']}"]
    create_markdown_artifact("\n".join(lines), key="nightly-summary", description=f"night {night}")
    if published.manifest_key:
        create_link_artifact(
            store.url_for(published.manifest_key),
            link_text="manifest.json",
            key="nightly-manifest",
            description=f"night {night}, run {summary['run_id']}",
        )
    if summary["report"]:
        create_link_artifact(
            store.url_for(summary["report"]),
            link_text="clinician report",
            key="nightly-report",
            description=f"night {night}, run {summary['run_id']}",
        )
