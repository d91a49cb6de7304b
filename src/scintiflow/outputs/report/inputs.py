"""What the report shows, PHI-free: `ReportInput`, built from a finished run folder, and the
worklist order (abnormal and low-confidence first).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from scintiflow import CLASSES
from scintiflow.outputs.report.reasons import NORMAL_CLASS, REPORT_REASONS, ReportError
from scintiflow.storage import ObjectStore
from scintiflow.storage.jsonio import read_json_or_none, read_jsonl
from scintiflow.storage.layout import CHECKS_DOCS, CHECKS_JSON, MANIFEST, QUARANTINED_JSONL

# --------------------------------------------------------------------------------------------
# Input: what a finished run folder holds (no identifiers)


@dataclass(frozen=True)
class ReportInput:
    """Everything the report shows except identifiers and pixels. PHI-free by construction.

    `rows` are prediction rows (`score.PREDICTION_COLUMNS` dicts); `warnings` maps an accepted
    key to its check warn codes; `quarantine` counts quarantined files per reject code;
    `failures` counts keys that could not be scored per reason; `reasons` explains every code
    that occurs; `drift` is the flow's drift report (`scintiflow.pipeline.drift.compare`'s
    dict, or any dict with `flagged`/`drift`, `summary`, `details`) or None; `links` maps a
    label to a key in the results store.
    """

    night: str
    run_id: str
    prefix: str
    model_version: str
    engine: str
    rows: tuple[dict[str, Any], ...]
    model_name: str | None = None
    classes: tuple[str, ...] = CLASSES
    inputs: int | None = None
    carried_forward: int = 0  # inputs of the night already published by an earlier run
    # Earlier runs' rows of the same night (a late-exports run reports the whole night); each
    # carries `reported_in` (the earlier run id). Their SC objects stay where they were written.
    carried_rows: tuple[dict[str, Any], ...] = ()
    quarantined: int = 0
    quarantine: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    drift: dict[str, Any] | None = None
    links: dict[str, str] = field(default_factory=dict)
    source_url: str | None = None
    low_confidence_threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReportInput:
        """Inverse of `to_dict`."""
        d = dict(data)
        d["rows"] = tuple(dict(r) for r in d.get("rows", ()))
        d["carried_rows"] = tuple(dict(r) for r in d.get("carried_rows", ()))
        d["classes"] = tuple(d.get("classes", CLASSES))
        d["warnings"] = {k: tuple(v) for k, v in dict(d.get("warnings", {})).items()}
        return cls(**d)


def parse_run_prefix(prefix: str) -> tuple[str, str]:
    """(night, run_id) from `<results>/<YYYY-MM-DD>/<run_id>`; `ReportError` otherwise."""
    parts = prefix.strip("/").split("/")
    if len(parts) < 3:
        raise ReportError(
            "a run prefix is <results>/<YYYY-MM-DD>/<run_id>", reason="bad_run_prefix"
        )
    night, run_id = parts[-2], parts[-1]
    try:
        date.fromisoformat(night)
    except ValueError:
        raise ReportError(
            "the run prefix's night is not a YYYY-MM-DD date", reason="bad_run_prefix"
        ) from None
    return night, run_id


def _read_json(store: ObjectStore, key: str) -> Any:
    try:
        return read_json_or_none(store, key)
    except ValueError:
        raise ReportError(f"{key} is not valid JSON", reason="bad_run_file") from None


def _read_jsonl(store: ObjectStore, key: str) -> list[dict[str, Any]]:
    try:
        return read_jsonl(store, key)
    except ValueError:
        raise ReportError(f"{key} is not valid JSON lines", reason="bad_run_file") from None


def _reason_text(code: str, explained: Mapping[str, Any]) -> str:
    from scintiflow.checks.reasons import REASONS

    entry = explained.get(code)
    if isinstance(entry, Mapping) and entry.get("explanation"):
        return str(entry["explanation"])
    if code in REASONS:
        return REASONS[code][1]
    return REPORT_REASONS.get(code, "")


def _manifest_field(manifest: Mapping[str, Any], *names: str) -> Any:
    """The first of `names` present in the manifest (top level or under `model`)."""
    model = manifest.get("model") if isinstance(manifest.get("model"), Mapping) else {}
    for name in names:
        if manifest.get(name) not in (None, ""):
            return manifest[name]
        if model and model.get(name.removeprefix("model_")) not in (None, ""):
            return model[name.removeprefix("model_")]
    return None


def build_report_input(
    store: ObjectStore,
    run_prefix: str,
    *,
    manifest: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    drift: Mapping[str, Any] | None = None,
    source_url: str | None = None,
    low_confidence_threshold: float | None = None,
) -> ReportInput:
    """Read a finished run folder into a `ReportInput` (no identifiers, no pixels).

    Needs `predictions.jsonl`; uses `score_failures.jsonl`, `quarantined.jsonl`,
    `checks/checks.json` and `manifest.json` when present (night, run id, model, engine,
    drift, carried-forward count and source store come from the manifest when it names them,
    else from the prefix and the prediction rows). `manifest` replaces the stored one (the
    publish step passes its draft: the manifest is written after the report). Arguments
    override the manifest.
    """
    from scintiflow.inference.score import FAILURES_JSONL, PREDICTIONS_CSV, PREDICTIONS_JSONL

    prefix = run_prefix.strip("/")
    night, run_id = parse_run_prefix(prefix)
    rows = _read_jsonl(store, f"{prefix}/{PREDICTIONS_JSONL}")
    if not rows and not store.exists(f"{prefix}/{PREDICTIONS_JSONL}"):
        raise ReportError(f"no {PREDICTIONS_JSONL} under {prefix}", reason="missing_predictions")
    if manifest is None:
        manifest = _read_json(store, f"{prefix}/{MANIFEST}") or {}
    checks = _read_json(store, f"{prefix}/{CHECKS_JSON}") or {}
    failures = _read_jsonl(store, f"{prefix}/{FAILURES_JSONL}")
    published_quarantine = _read_jsonl(store, f"{prefix}/{QUARANTINED_JSONL}")

    explained = checks.get("reasons", {}) if isinstance(checks.get("reasons"), Mapping) else {}
    quarantined = {str(k): list(v) for k, v in dict(checks.get("quarantined", {})).items()}
    for item in published_quarantine:  # the publish step's list also holds scoring failures
        quarantined.setdefault(str(item.get("key")), list(item.get("codes") or ["unknown"]))
    carried_rows, carried_quarantined = _carried_forward(store, manifest, run_id)
    for key, file_codes in carried_quarantined.items():
        quarantined.setdefault(key, file_codes)
    quarantine: Counter[str] = Counter()
    for file_codes in quarantined.values():
        rejects = [c for c in file_codes if _severity(c, explained) == "reject"] or file_codes
        quarantine.update(set(rejects))
    warnings = {str(k): tuple(v) for k, v in dict(checks.get("warned", {})).items()}
    failure_counts = Counter(str(f.get("reason") or "unknown") for f in failures)
    codes = set(quarantine) | set(failure_counts) | {c for v in warnings.values() for c in v}
    links = {
        "predictions.csv": f"{prefix}/{PREDICTIONS_CSV}",
        "predictions.jsonl": f"{prefix}/{PREDICTIONS_JSONL}",
        "manifest.json": f"{prefix}/{MANIFEST}",
    }
    if checks:
        links["checks.json"] = f"{prefix}/{CHECKS_JSON}"
        if store.exists(f"{prefix}/{CHECKS_DOCS}"):
            links["data docs"] = f"{prefix}/{CHECKS_DOCS}"
    if failures:
        links["score_failures.jsonl"] = f"{prefix}/{FAILURES_JSONL}"
    if published_quarantine:
        links["quarantined.jsonl"] = f"{prefix}/{QUARANTINED_JSONL}"
    first = rows[0] if rows else {}
    manifest_drift = _manifest_field(manifest, "drift")
    counts = manifest.get("counts") if isinstance(manifest.get("counts"), Mapping) else {}
    inputs = counts.get("inputs") if counts else None
    if not isinstance(inputs, int):
        inputs = checks.get("inputs")
    carried = counts.get("carried_forward") if counts else None
    threshold = low_confidence_threshold
    if threshold is None:
        threshold = _manifest_field(manifest, "low_confidence_threshold")
    return ReportInput(
        night=str(_manifest_field(manifest, "night") or night),
        run_id=str(_manifest_field(manifest, "run_id") or run_id),
        prefix=prefix,
        model_name=model_name or _manifest_field(manifest, "model_name"),
        model_version=str(
            _manifest_field(manifest, "model_version") or first.get("model_version") or "unknown"
        ),
        engine=str(_manifest_field(manifest, "engine") or first.get("engine") or "unknown"),
        rows=tuple(rows),
        inputs=int(inputs) if isinstance(inputs, int) else None,
        carried_forward=int(carried) if isinstance(carried, int) else 0,
        carried_rows=tuple(carried_rows),
        quarantined=len(quarantined),
        quarantine=dict(sorted(quarantine.items(), key=lambda kv: (-kv[1], kv[0]))),
        warnings=warnings,
        failures=dict(sorted(failure_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        reasons={c: _reason_text(c, explained) for c in sorted(codes)},
        drift=dict(drift) if drift is not None else _as_dict(manifest_drift),
        links=links,
        source_url=source_url or _manifest_field(manifest, "source_url", "source"),
        low_confidence_threshold=float(threshold) if threshold is not None else None,
    )


def _carried_forward(
    store: ObjectStore, manifest: Mapping[str, Any], run_id: str
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Earlier runs' prediction rows and quarantined inputs of the night, by reference.

    The manifest's `inputs` say which run holds each input's result; its `carried_forward`
    refs name those runs' manifests, whose predictions tables are read for the carried keys.
    """
    from scintiflow.outputs.publish import carried_rows

    raw = manifest.get("inputs")
    inputs: list[Any] = raw if isinstance(raw, list) else []
    quarantined = {
        str(i["key"]): [str(c) for c in i.get("codes") or ["unknown"]]
        for i in inputs
        if isinstance(i, Mapping)
        and i.get("status") == "quarantined"
        and str(i.get("run_id")) != run_id
    }
    rows = [{**row, "reported_in": run} for run, row in carried_rows(store, manifest)]
    return rows, quarantined


def _as_dict(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _severity(code: str, explained: Mapping[str, Any]) -> str:
    from scintiflow.checks.reasons import severity

    entry = explained.get(code)
    if isinstance(entry, Mapping) and entry.get("severity"):
        return str(entry["severity"])
    return severity(code)


# --------------------------------------------------------------------------------------------
# The worklist: abnormal and low-confidence first


def priority(row: Mapping[str, Any]) -> int:
    """0: predicted abnormal (any class but normal); 1: normal but low confidence; 2: routine."""
    if row.get("predicted_label") != NORMAL_CLASS:
        return 0
    return 1 if row.get("low_confidence") else 2


def worklist_order(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows in reading order: by `priority`, then by P(normal) ascending (most abnormal-looking
    first), then by key (stable and deterministic)."""
    return sorted(
        rows,
        key=lambda r: (priority(r), float(r.get(f"p_{NORMAL_CLASS}", 0.0)), str(r.get("key"))),
    )


def drift_flagged(drift: Mapping[str, Any] | None) -> bool:
    """Whether a drift summary says drift was detected (`flagged`, `drift` or `detected`)."""
    if not drift:
        return False
    return any(bool(drift.get(k)) for k in ("flagged", "drift", "detected", "drift_detected"))
