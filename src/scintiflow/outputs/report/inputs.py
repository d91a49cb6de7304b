"""What the report shows, except identifiers and pixels: `ReportInput`, PHI-free.

Built from values the caller already holds (the manifest draft, this run's prediction rows,
the rows carried forward from earlier runs of the night, the quarantined inputs, the checks
document, the drift report): `build_report_input` reads no storage at all, so the report
task gets everything handed in and the CLI reads a finished run folder the same way
(`scintiflow.cli.report`). A `ReportInput` may travel as a Prefect parameter.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any, Final

from scintiflow import CLASSES
from scintiflow.outputs.report.reasons import REPORT_REASONS, ReportError
from scintiflow.storage import layout

NORMAL_CLASS = "normal"
PRIORITY_LABELS: Final[tuple[str, ...]] = ("abnormal", "low confidence", "routine")


@dataclass(frozen=True)
class ReportInput:
    """Everything the report shows except identifiers and pixels. PHI-free by construction.

    `rows` are this run's prediction rows; `carried_rows` earlier runs' rows of the same night
    (each with `reported_in`, the earlier run id); `warnings` maps an accepted key to its
    check warn codes; `quarantine` counts quarantined files per reject code; `failures`
    counts inputs that could not be scored per reason; `reasons` explains every code that
    occurs; `drift` is the drift report or None; `links` maps a label to a results key.
    `status` is the manifest draft's (`complete` or `partial`); a partial night has
    `unaccounted` inputs with no outcome yet, counted per reason in `unaccounted_reasons`.
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
    carried_forward: int = 0
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
    status: str = "complete"
    unaccounted: int = 0
    unaccounted_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def studies(self) -> int:
        """Worklist rows: this run's and the carried ones."""
        return len(self.rows) + len(self.carried_rows)

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
    try:
        date.fromisoformat(parts[-2])
    except ValueError:
        raise ReportError(
            "the run prefix's night is not a YYYY-MM-DD date", reason="bad_run_prefix"
        ) from None
    return parts[-2], parts[-1]


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


# --------------------------------------------------------------------------------------------
# Building the input


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _draft_field(draft: Mapping[str, Any], *names: str) -> Any:
    """The first of `names` present in the draft (top level or under `model`)."""
    model = _mapping(draft.get("model"))
    for name in names:
        if draft.get(name) not in (None, ""):
            return draft[name]
        if model.get(name.removeprefix("model_")) not in (None, ""):
            return model[name.removeprefix("model_")]
    return None


def _reason_text(code: str, explained: Mapping[str, Any]) -> str:
    from scintiflow.checks.reasons import REASONS

    entry = _mapping(explained.get(code))
    if entry.get("explanation"):
        return str(entry["explanation"])
    if code in REASONS:
        return REASONS[code][1]
    return REPORT_REASONS.get(code, "")


def _severity(code: str, explained: Mapping[str, Any]) -> str:
    from scintiflow.checks.reasons import severity

    entry = _mapping(explained.get(code))
    return str(entry["severity"]) if entry.get("severity") else severity(code)


def _quarantined_codes(
    draft: Mapping[str, Any],
    checks: Mapping[str, Any],
    quarantined: Sequence[Mapping[str, Any]],
    run_id: str,
) -> dict[str, list[str]]:
    """Input key -> codes: the checks doc's, this run's list, earlier runs' (the draft's)."""
    codes = {str(k): list(v) for k, v in _mapping(checks.get("quarantined")).items()}
    for item in quarantined:
        codes.setdefault(str(item.get("key")), list(item.get("codes") or ["unknown"]))
    raw = draft.get("inputs")
    for i in raw if isinstance(raw, list) else []:
        if (
            isinstance(i, Mapping)
            and i.get("status") == "quarantined"
            and str(i.get("run_id")) != run_id
        ):
            codes.setdefault(str(i["key"]), [str(c) for c in i.get("codes") or ["unknown"]])
    return codes


def _unaccounted(draft: Mapping[str, Any]) -> tuple[int, dict[str, int]]:
    """(inputs with no outcome, per reason) of a partial night's draft.

    The draft may say it as `counts.unaccounted` (a number), `unaccounted` (a list of
    `{"reason": ...}` items, or a number) and `unaccounted_reasons` (reason -> inputs).
    """
    raw = draft.get("unaccounted")
    items = [i for i in raw if isinstance(i, Mapping)] if isinstance(raw, list) else []
    reasons: Counter[str] = Counter(str(i.get("reason") or "unknown") for i in items)
    for code, n in _mapping(draft.get("unaccounted_reasons")).items():
        reasons[str(code)] = max(reasons[str(code)], int(n))
    count = _mapping(draft.get("counts")).get("unaccounted")
    if not isinstance(count, int):
        count = raw if isinstance(raw, int) else max(len(items), sum(reasons.values()))
    return int(count), dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))


def _links(prefix: str, checks: Mapping[str, Any], quarantined: bool) -> dict[str, str]:
    links = {
        "predictions.csv": f"{prefix}/{layout.PREDICTIONS_CSV}",
        "predictions.jsonl": f"{prefix}/{layout.PREDICTIONS_JSONL}",
        "manifest.json": f"{prefix}/{layout.MANIFEST}",
    }
    if checks:
        links["checks.json"] = f"{prefix}/{layout.CHECKS_JSON}"
        if checks.get("docs"):
            links["data docs"] = str(checks["docs"])
    if quarantined:
        links["quarantined.jsonl"] = f"{prefix}/{layout.QUARANTINED_JSONL}"
    return links


def _by_count(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def build_report_input(
    draft: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    *,
    prefix: str,
    carried_rows: Sequence[Mapping[str, Any]] = (),
    quarantined: Sequence[Mapping[str, Any]] = (),
    checks: Mapping[str, Any] | None = None,
    drift: Mapping[str, Any] | None = None,
    failures: Sequence[Mapping[str, Any]] = (),
    model_name: str | None = None,
    low_confidence_threshold: float | None = None,
) -> ReportInput:
    """A `ReportInput` from values in hand; reads nothing (no storage, no identifiers).

    `draft`: the manifest draft (night, run id, model, engine, counts, `inputs`, `status`,
    drift and source URL when it names them); `rows`: this run's prediction rows;
    `carried_rows`: earlier runs' rows of the night, each with `reported_in`; `quarantined`:
    `{"key", "codes"}` items of this run; `checks`: the night's checks document; `drift`
    overrides the draft's; `failures`: `{"key", "reason"}` items of inputs not scorable.
    """
    prefix = prefix.strip("/")
    night, run_id = parse_run_prefix(prefix)
    checks = checks or {}
    explained = _mapping(checks.get("reasons"))
    run_id = str(_draft_field(draft, "run_id") or run_id)
    codes = _quarantined_codes(draft, checks, quarantined, run_id)
    quarantine: Counter[str] = Counter()
    for file_codes in codes.values():
        rejects = [c for c in file_codes if _severity(c, explained) == "reject"] or file_codes
        quarantine.update(set(rejects))
    warnings = {str(k): tuple(v) for k, v in _mapping(checks.get("warned")).items()}
    failure_counts = Counter(str(f.get("reason") or "unknown") for f in failures)
    unaccounted, unaccounted_reasons = _unaccounted(draft)
    used = {*quarantine, *failure_counts, *unaccounted_reasons}
    used |= {c for v in warnings.values() for c in v}
    first = rows[0] if rows else (carried_rows[0] if carried_rows else {})
    counts = _mapping(draft.get("counts"))
    inputs = counts.get("inputs", checks.get("inputs"))
    threshold = low_confidence_threshold
    if threshold is None:
        threshold = _draft_field(draft, "low_confidence_threshold")
    given_drift = drift if drift is not None else _draft_field(draft, "drift")
    return ReportInput(
        night=str(_draft_field(draft, "night") or night),
        run_id=run_id,
        prefix=prefix,
        model_name=model_name or _draft_field(draft, "model_name"),
        model_version=str(
            _draft_field(draft, "model_version") or first.get("model_version") or "unknown"
        ),
        engine=str(_draft_field(draft, "engine") or first.get("engine") or "unknown"),
        rows=tuple(dict(r) for r in rows),
        inputs=int(inputs) if isinstance(inputs, int) else None,
        carried_forward=int(counts.get("carried_forward") or 0),
        carried_rows=tuple(dict(r) for r in carried_rows),
        quarantined=len(codes),
        quarantine=_by_count(quarantine),
        warnings=warnings,
        failures=_by_count(failure_counts),
        reasons={c: _reason_text(c, explained) for c in sorted(used)},
        drift=dict(given_drift) if isinstance(given_drift, Mapping) else None,
        links=_links(prefix, checks, bool(quarantined)),
        source_url=_draft_field(draft, "source_url", "source"),
        low_confidence_threshold=float(threshold) if threshold is not None else None,
        status=str(draft.get("status") or "complete"),
        unaccounted=unaccounted,
        unaccounted_reasons=unaccounted_reasons,
    )


__all__ = [
    "NORMAL_CLASS",
    "PRIORITY_LABELS",
    "ReportInput",
    "build_report_input",
    "drift_flagged",
    "parse_run_prefix",
    "priority",
    "worklist_order",
]
