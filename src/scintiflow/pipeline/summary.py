"""What a nightly run reports about itself: the flow's return value and the Prefect UI's
artifacts (tables and markdown), built here so the flow only hands them to Prefect.

No identifiers: keys are hash-named exports, counts, codes, versions and timings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from scintiflow import CLASSES
from scintiflow.checks.reasons import REASONS

if TYPE_CHECKING:
    from scintiflow.outputs.ledger import Outcome
    from scintiflow.outputs.publish import PublishResult
    from scintiflow.pipeline.merge import NightMerge
    from scintiflow.pipeline.model import ModelRef
    from scintiflow.pipeline.shard import ShardResult


def stage_timings(results: Sequence[ShardResult]) -> dict[str, float]:
    """Seconds per stage summed over the shards (read+decode, checks, scoring)."""
    total: Counter[str] = Counter()
    for r in results:
        total.update(r.timings)
    return {
        "check": round(total["read_decode"] + total["check"], 3),
        "score": round(total["score"], 3),
    }


def night_summary(
    night: str,
    run_id: str,
    ref: ModelRef,
    published: PublishResult,
    merged: NightMerge | None,
    carried: Mapping[str, Outcome],
    inputs: int,
) -> dict[str, Any]:
    """The flow's return value: counts over the whole night and this run's share."""
    manifest = published.manifest or {}
    counts = manifest.get("counts") or {}
    rows = [] if merged is None else merged.rows
    quarantined = {} if merged is None else merged.quarantined
    drift = None if merged is None else merged.drift
    return {
        "night": night,
        "run_id": run_id,
        "inputs": inputs,
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
        "status": published.status,
        "storage_errors": counts.get("storage_errors", 0),
        "withdrawn": counts.get("withdrawn", 0),
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


def class_table(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Predicted classes over the whole night (the `nightly-class-counts` artifact)."""
    return [{"class": c, "images": summary["class_counts"].get(c, 0)} for c in CLASSES]


def reason_table(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Quarantine reason codes over the whole night, with their meaning."""
    return [
        {"reason": code, "files": n, "meaning": REASONS.get(code, ("", ""))[1]}
        for code, n in sorted(summary["reason_counts"].items())
    ] or [{"reason": "(none)", "files": 0, "meaning": ""}]


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The `nightly-summary` artifact: one table a person reads at a glance."""
    t = summary["timings_s"]
    drift = summary["drift"]
    drift_text = "-" if drift is None else " ".join([drift["status"], ", ".join(drift["features"])])
    manifest_text = (
        summary["manifest"] or f"not written: superseded by run {summary['superseded_by']}"
    )
    lines = [
        f"# Night {summary['night']}, run `{summary['run_id']}`",
        "",
        "| | |",
        "|---|---|",
        f"| inputs | {summary['inputs']} |",
        f"| scored | {summary['scored']} ({summary['scored_new']} new) |",
        f"| quarantined | {summary['quarantined']} ({summary['quarantined_new']} new) |",
        f"| carried forward (ledger) | {summary['carried_forward']} |",
        f"| not read (storage errors, retried next run) | {summary['storage_errors']} |",
        f"| withdrawn since the last run | {summary['withdrawn']} |",
        f"| flagged low-confidence (new) | {summary['low_confidence_new']} |",
        f"| model version | `{summary['model_version']}` |",
        f"| engine | {summary['engine']} |",
        f"| drift | {drift_text.strip()} |",
        f"| manifest | {manifest_text} |",
        f"| status | {summary['status'] or '-'} |",
        "",
        "Wall time per stage (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()),
    ]
    if summary["model_note"]:
        lines += ["", f"**Note:** {summary['model_note']}"]
    return "\n".join(lines)


def summary_line(summary: Mapping[str, Any]) -> str:
    """The flow's last log line."""
    manifest = summary["manifest"] or f"not written (superseded by {summary['superseded_by']})"
    unread = f" + {summary['storage_errors']} not read" if summary["storage_errors"] else ""
    return (
        f"night {summary['night']} run {summary['run_id']}: {summary['inputs']} inputs = "
        f"{summary['scored']} scored + {summary['quarantined']} quarantined{unread} "
        f"({summary['new']} new); manifest {manifest} ({summary['status'] or 'none'})"
    )
