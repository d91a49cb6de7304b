"""The report page: Jinja2 (autoescape on, no script) from `templates/report.html.j2`.

`report.html` is self-contained: inline CSS with print rules, the thumbnails as data URIs,
relative links to the run's other files, so it opens from a bucket download. Every string
from outside (DICOM values, reason texts, drift messages) passes Jinja2's autoescape.
"""

from __future__ import annotations

import math
import posixpath
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

from scintiflow.outputs.report.identifiers import Identifiers
from scintiflow.outputs.report.inputs import ReportInput, drift_flagged, priority
from scintiflow.outputs.report.reasons import REPORT_REASONS

TEMPLATE = "report.html.j2"
"""The page template, package data in `scintiflow/outputs/report/templates/`."""
DISCLAIMER = "Decision support, not a diagnosis: every result must be reviewed by a physician."


@dataclass
class Study:
    """One worklist row while rendering (holds identifiers: never logged or serialised)."""

    row: Mapping[str, Any]
    rank: int
    identifiers: Identifiers | None = None
    scan_uri: str | None = None
    overlay_uri: str | None = None
    problems: list[str] = field(default_factory=list)  # report reason codes


def template_text() -> str:
    """The page template's source (from the installed package)."""
    return files("scintiflow.outputs.report").joinpath("templates", TEMPLATE).read_text("utf-8")


def relative(key: str, base: str) -> str:
    """`key` as a link relative to the folder `base` (both store keys)."""
    return posixpath.relpath(key, base.strip("/") or ".")


def _drift_features(drift: Mapping[str, Any], features: Mapping[str, Any]) -> dict[str, Any]:
    """The banner of `scintiflow.pipeline.drift.compare`'s report: drifted statistics."""
    drifted = [str(n) for n in drift.get("drifted_features") or [] if n in features]
    details: list[str] = []
    for name in drifted:
        f: Mapping[str, Any] = features[name] if isinstance(features[name], Mapping) else {}
        raw_limits = f.get("thresholds")
        limits: Mapping[str, Any] = raw_limits if isinstance(raw_limits, Mapping) else {}
        metrics = [
            f"{m.upper()} {f[m]:.3g}" + (f" (limit {limits[m]:.3g})" if m in limits else "")
            for m in ("psi", "ks")
            if isinstance(f.get(m), int | float)
        ]
        details.append(f"{name}: " + ", ".join(metrics) if metrics else name)
    summary = str(drift.get("summary") or "") or (
        f"{len(drifted)} of {len(features)} monitored input statistics moved beyond their "
        f"limits over {drift.get('n_images', '?')} images."
    )
    return {"summary": summary, "details": details}


def drift_view(drift: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Summary and detail lines of the drift banner; None when no drift was flagged."""
    if drift is None or not drift_flagged(drift):
        return None
    features = drift.get("features")
    if isinstance(features, Mapping):
        return _drift_features(drift, features)
    details: list[str] = []
    raw = drift.get("details", drift.get("reasons", []))
    if isinstance(raw, Mapping):
        raw = [f"{k}: {v}" for k, v in raw.items()]
    for item in raw if isinstance(raw, list | tuple) else []:
        if isinstance(item, Mapping):
            details.append(", ".join(f"{k}: {v}" for k, v in item.items()))
        else:
            details.append(str(item))
    return {"summary": str(drift.get("summary", "") or ""), "details": details}


def _bars(row: Mapping[str, Any], classes: Sequence[str]) -> list[dict[str, Any]]:
    top = str(row.get("predicted_label"))
    bars = []
    for c in classes:
        p = float(row.get(f"p_{c}", float("nan")))
        ok = math.isfinite(p)
        bars.append(
            {
                "name": c,
                "top": c == top,
                "width": f"{max(0.0, min(1.0, p)) * 100:.1f}" if ok else "0",
                "text": f"{p:.2f}" if ok else "n/a",
            }
        )
    return bars


def _study_view(s: Study, inp: ReportInput, dest_prefix: str) -> dict[str, Any]:
    row = s.row
    overlay_key = str(row.get("overlay_key") or "")
    sc_key = str(row.get("sc_key") or "")
    return {
        "key": str(row["key"]),
        "file": posixpath.basename(str(row["key"])),
        "rank": s.rank,
        "priority": priority(row),
        "ids": s.identifiers,
        "scan_uri": s.scan_uri,
        "overlay_uri": s.overlay_uri,
        "overlay_href": relative(overlay_key, dest_prefix) if overlay_key else "",
        "sc_href": relative(sc_key, dest_prefix) if sc_key else "",
        "label": str(row.get("predicted_label")),
        "bars": _bars(row, inp.classes),
        "confidence": f"{float(row.get('confidence', float('nan'))):.2f}",
        "low": bool(row.get("low_confidence")),
        "warnings": [
            {"code": c, "text": inp.reasons.get(c, "")}
            for c in inp.warnings.get(str(row["key"]), ())
        ],
        "problems": [{"code": p, "text": REPORT_REASONS.get(p, "")} for p in s.problems],
        "sha": str(row.get("sha256", "")),
        "earlier": str(row.get("reported_in") or ""),
    }


def _card(id_: str, n: int | None, label: str, css: str = "") -> dict[str, Any]:
    return {"id": id_, "css": css, "n": n, "label": label}


def _cards(inp: ReportInput, studies: Sequence[Study]) -> list[dict[str, Any]]:
    threshold = inp.low_confidence_threshold
    below = f" (below {threshold:.2f})" if threshold is not None else ""
    cards = [_card("inputs", inp.inputs, "files received")] if inp.inputs is not None else []
    cards += [
        _card("scored", len(studies), "scored"),
        _card(
            "flagged",
            sum(1 for s in studies if priority(s.row) < 2),
            "flagged (abnormal or low confidence)",
            "abn",
        ),
        _card(
            "low",
            sum(1 for s in studies if s.row.get("low_confidence")),
            "low confidence" + below,
            "low",
        ),
        _card("quarantined", inp.quarantined, "quarantined"),
    ]
    if inp.carried_forward:
        label = "files already reported by an earlier run tonight (included above)"
        cards.append(_card("carried", inp.carried_forward, label))
    if inp.failures:
        cards.append(_card("not-scored", sum(inp.failures.values()), "not scorable"))
    if inp.unaccounted:
        cards.append(_card("unaccounted", inp.unaccounted, "not accounted for yet", "low"))
    return cards


def _partial_view(inp: ReportInput) -> dict[str, Any] | None:
    if inp.status != "partial" and not inp.unaccounted:
        return None
    reasons = [
        {"code": c, "n": n, "text": inp.reasons.get(c, "")}
        for c, n in inp.unaccounted_reasons.items()
    ]
    return {"n": inp.unaccounted, "reasons": reasons}


def page_chunks(
    inp: ReportInput,
    studies: Sequence[Study],
    *,
    dest_prefix: str,
    limit: int | None = None,
    fill: Callable[[Sequence[Study]], Iterable[Study]] | None = None,
) -> Iterator[str]:
    """The report page, piece by piece, for studies in worklist order; links relative to
    `dest_prefix`.

    `limit`: list only the first `limit` studies of the worklist (the PDF of a large night);
    the counts still cover every study, and the page says how many rows are left out.
    `fill` gives the listed studies their identifiers and thumbnails as the page reaches
    them (`render.render_report` reads a block ahead and drops them once written), so a
    page of any size is written without holding its rows' images; without it the studies
    are rendered as they are."""
    from jinja2 import Environment, StrictUndefined

    from scintiflow import __version__

    env = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    listed = list(studies if limit is None else studies[:limit])
    per_class = Counter(str(s.row.get("predicted_label")) for s in studies)
    per_class_low = Counter(
        str(s.row.get("predicted_label")) for s in studies if s.row.get("low_confidence")
    )
    reason_rows = [
        {"code": c, "n": n, "note": "", "text": inp.reasons.get(c, "")}
        for c, n in inp.quarantine.items()
    ] + [
        {"code": c, "n": n, "note": " (not scorable)", "text": inp.reasons.get(c, "")}
        for c, n in inp.failures.items()
    ]
    filled = fill(listed) if fill is not None else listed
    views = (_study_view(s, inp, dest_prefix) for s in filled)
    return env.from_string(template_text()).generate(
        cards=_cards(inp, studies),
        reason_rows=reason_rows,
        inp=inp,
        studies=views,
        listed=len(listed),
        omitted=len(studies) - len(listed),
        version=__version__,
        disclaimer=DISCLAIMER,
        rendered_at=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        drift=drift_view(inp.drift),
        partial=_partial_view(inp),
        per_class={c: per_class.get(c, 0) for c in inp.classes},
        per_class_low={c: per_class_low.get(c, 0) for c in inp.classes},
        checked=inp.inputs is not None,
        links=[(label, relative(key, dest_prefix)) for label, key in inp.links.items()],
    )


def render_html(
    inp: ReportInput, studies: Sequence[Study], *, dest_prefix: str, limit: int | None = None
) -> str:
    """The whole page as one string (`page_chunks` without `fill`: tests and small pages)."""
    return "".join(page_chunks(inp, studies, dest_prefix=dest_prefix, limit=limit))


__all__ = [
    "DISCLAIMER",
    "TEMPLATE",
    "Study",
    "drift_view",
    "page_chunks",
    "relative",
    "render_html",
]
