"""The clinician's nightly report: one page per run, plus the heatmaps as DICOM objects.

    inp = build_report_input(store, "results/2026-11-27/<run_id>")   # PHI-free, from files
    out = render_report(store, inp)   # report.html, report.pdf, sc/<sha256>.dcm

`ReportInput` is a plain, PHI-free value built from what a finished run folder holds
(`predictions.jsonl`, `score_failures.jsonl`, `checks/checks.json`, `manifest.json`, each
when present), so the CLI and the nightly flow build it the same way and it may travel as a
Prefect parameter. Patient and study identifiers are read from the ORIGINAL DICOM objects
(by each prediction's key) only while rendering, and go into `report.html`/`report.pdf` (for
the clinical team) and the Secondary Capture objects (which belong to the patient's record):
never into keys, log records, exceptions or JSON.

`report.html` is self-contained: inline CSS (with print rules), no script, the thumbnails as
data URIs, and relative links to the run's other files (`predictions.csv`, `manifest.json`,
full-size overlays, the SC objects), so it opens from a bucket download without a server.
Every string from outside (DICOM values, reason texts, drift messages) passes Jinja2's
autoescape. `report.pdf` is the same page printed by headless Chromium; when the browser is
missing or fails, the PDF step fails with a reason code and the HTML still exists.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import posixpath
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from scintiflow import CLASSES
from scintiflow.storage import KeyNotFoundError, ObjectStore, StoreError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
REPORT_PDF = "report.pdf"
MANIFEST_JSON = "manifest.json"
CHECKS_JSON = "checks/checks.json"
CHECKS_DOCS = "checks/docs/index.html"
QUARANTINED_JSONL = "quarantined.jsonl"
DEFAULT_BROWSER = "/usr/bin/chromium"
BROWSER_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Headless Chromium with nothing that reaches the network."""
THUMB_SIZE = 128  # px: thumbnails larger than this are downscaled (keeps report.html small)
DISCLAIMER = "Decision support, not a diagnosis: every result must be reviewed by a physician."
PRIORITY_LABELS: Final[tuple[str, ...]] = ("abnormal", "low confidence", "routine")
NORMAL_CLASS = "normal"

REPORT_REASONS: Final[dict[str, str]] = {
    "missing_predictions": "The run folder has no predictions.jsonl: it was not scored.",
    "bad_run_prefix": "The run prefix is not <results>/<YYYY-MM-DD>/<run_id>.",
    "bad_run_file": "A file of the run folder is not valid JSON.",
    "browser_unavailable": "The headless browser (Chromium) is not installed at the given path.",
    "browser_failed": "The headless browser exited with an error.",
    "browser_timeout": "The headless browser did not finish in time.",
    "pdf_empty": "The browser finished but wrote no PDF.",
    "source_unavailable": "The original DICOM object could not be read (moved or deleted).",
    "source_unreadable": "The original DICOM object could not be decoded again.",
    "overlay_unavailable": "The run has no heatmap overlay for this image.",
    "sc_failed": "The heatmap could not be written as a DICOM Secondary Capture.",
}
"""Reason codes of the report step: code -> plain-language explanation."""


class ReportError(Exception):
    """The report step failed; `reason` is one of `REPORT_REASONS` (message holds no PHI)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


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
        data = store.get(key)
    except KeyNotFoundError:
        return None
    try:
        return json.loads(data)
    except ValueError:
        raise ReportError(f"{key} is not valid JSON", reason="bad_run_file") from None


def _read_jsonl(store: ObjectStore, key: str) -> list[dict[str, Any]]:
    try:
        data = store.get(key).decode("utf-8")
    except KeyNotFoundError:
        return []
    try:
        return [json.loads(line) for line in data.splitlines() if line.strip()]
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
        manifest = _read_json(store, f"{prefix}/{MANIFEST_JSON}") or {}
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
        "manifest.json": f"{prefix}/{MANIFEST_JSON}",
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


# --------------------------------------------------------------------------------------------
# Identifiers and thumbnails (read at render time only)


@dataclass(frozen=True)
class Identifiers:
    """What the clinician needs to find the patient and study. PHI: report.html only."""

    patient_name: str = ""
    patient_id: str = ""
    birth_date: str = ""
    sex: str = ""
    accession: str = ""
    study_date: str = ""
    study_description: str = ""


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _person_name(ds: Dataset) -> str:
    raw = _text(ds, "PatientName")
    parts = [p.strip() for p in raw.split("^")]
    if len(parts) == 1:
        return raw
    family, given = parts[0], " ".join(p for p in parts[1:] if p)
    return f"{family}, {given}" if family and given else family or given


def _dicom_date(value: str) -> str:
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def read_identifiers(ds: Dataset) -> Identifiers:
    """Patient/study identifiers of a DICOM header, formatted for people (never logged)."""
    return Identifiers(
        patient_name=_person_name(ds),
        patient_id=_text(ds, "PatientID"),
        birth_date=_dicom_date(_text(ds, "PatientBirthDate")),
        sex=_text(ds, "PatientSex"),
        accession=_text(ds, "AccessionNumber"),
        study_date=_dicom_date(_text(ds, "StudyDate")),
        study_description=_text(ds, "StudyDescription"),
    )


def _png_data_uri(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)  # no text chunks
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fit(image: Any, size: int) -> Any:
    from PIL import Image

    if max(image.size) <= size:
        return image
    scale = size / max(image.size)
    target = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    return image.resize(target, Image.Resampling.LANCZOS)


def scan_thumbnail(pixels: np.ndarray, size: int = THUMB_SIZE) -> str:
    """The scan in grey (windowed like the overlay) as a PNG data URI, at most `size` px."""
    from PIL import Image

    from scintiflow.inference.explain import scan_grey

    grey = np.round(255.0 * scan_grey(pixels)).astype(np.uint8)
    return _png_data_uri(_fit(Image.fromarray(grey, mode="L"), size))


def overlay_thumbnail(png: bytes, size: int = THUMB_SIZE) -> str:
    """The overlay PNG as a data URI, at most `size` px."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return _png_data_uri(_fit(img.convert("RGB"), size))


@dataclass
class _Study:
    """One worklist row while rendering (holds identifiers: never logged or serialised)."""

    row: Mapping[str, Any]
    rank: int
    identifiers: Identifiers | None = None
    header: Dataset | None = None
    frame: int | None = None
    scan_uri: str | None = None
    overlay_uri: str | None = None
    problems: list[str] = field(default_factory=list)  # report reason codes
    sc_key: str | None = None


def _gather(source: ObjectStore, results: ObjectStore, study: _Study, preferred_view: str) -> None:
    """Read the original object (identifiers, scan thumbnail) and the overlay thumbnail."""
    from scintiflow.ingest.dicom import decode_dicom
    from scintiflow.outputs.secondary_capture import read_source, source_frame_number

    row = study.row
    try:
        data = source.get(str(row["key"]))
    except StoreError:
        study.problems.append("source_unavailable")
    else:
        try:
            study.header = read_source(data)
            study.identifiers = read_identifiers(study.header)
            record = decode_dicom(data, preferred_view=preferred_view, patient_hash_key=None)
            study.scan_uri = scan_thumbnail(record.pixels)
            study.frame = source_frame_number(record.frames, record.frame_index)
        except Exception:  # a decode error or a pydicom one: its message may quote tag values
            study.problems.append("source_unreadable")
    overlay_key = str(row.get("overlay_key") or "")
    if not overlay_key:
        study.problems.append("overlay_unavailable")
        return
    try:
        study.overlay_uri = overlay_thumbnail(results.get(overlay_key))
    except Exception:  # missing or not a readable PNG
        study.problems.append("overlay_unavailable")


def _write_sc(
    results: ObjectStore, study: _Study, inp: ReportInput, dest_prefix: str, instance: int
) -> str | None:
    """Build and write the Secondary Capture of one study's overlay; its key, or None."""
    if study.header is None or study.overlay_uri is None:
        return None
    try:
        return _build_and_put_sc(results, study, inp, dest_prefix, instance)
    except Exception:  # its message may quote a DICOM value: keep only the reason code
        study.problems.append("sc_failed")
        return None


def _build_and_put_sc(
    results: ObjectStore, study: _Study, inp: ReportInput, dest_prefix: str, instance: int
) -> str:
    from scintiflow.outputs.secondary_capture import (
        build_secondary_capture,
        encode,
        png_rgb,
        sc_key,
        sc_uids,
    )

    row = study.row
    assert study.header is not None
    sha = str(row["sha256"])
    series_uid, sop_uid = sc_uids(inp.run_id, str(study.header.StudyInstanceUID), sha)
    ds = build_secondary_capture(
        study.header,
        png_rgb(results.get(str(row["overlay_key"]))),
        series_uid=series_uid,
        sop_uid=sop_uid,
        instance_number=instance,
        model_name=inp.model_name,
        model_version=str(row.get("model_version") or inp.model_version),
        engine=str(row.get("engine") or inp.engine),
        predicted_label=str(row["predicted_label"]),
        confidence=float(row["confidence"]),
        source_frame=study.frame,
    )
    key = sc_key(dest_prefix, sha)
    results.put(key, encode(ds))
    return key


# --------------------------------------------------------------------------------------------
# HTML

_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="scintiflow {{ version }}">
<title>Thyroid scintigraphy, night {{ inp.night }}</title>
<style>
:root { --ink: #1d2433; --muted: #5b6478; --line: #d9dee8; --abn: #b42318; --low: #b54708;
        --ok: #067647; --bar: #3e63dd; --bg-abn: #fef3f2; --bg-low: #fffaeb; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); margin: 24px; }
header h1 { font-size: 22px; margin: 0 0 4px; }
.meta { color: var(--muted); margin: 0 0 8px; }
.disclaimer { border-left: 4px solid var(--low); background: var(--bg-low); padding: 6px 10px;
              margin: 8px 0 16px; font-weight: 600; }
.drift { border: 2px solid var(--abn); background: var(--bg-abn); padding: 8px 12px;
         margin: 0 0 16px; }
.drift strong { color: var(--abn); }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin: 0 0 16px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; min-width: 110px; }
.card .n { font-size: 20px; font-weight: 700; }
.card .l { color: var(--muted); font-size: 12px; }
.card.abn .n { color: var(--abn); } .card.low .n { color: var(--low); }
h2 { font-size: 17px; margin: 20px 0 8px; border-bottom: 1px solid var(--line); }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 6px; text-align: left;
         vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
thead { display: table-header-group; }
tr.p0 { background: var(--bg-abn); } tr.p1 { background: var(--bg-low); }
.ids div { white-space: nowrap; } .ids .name { font-weight: 700; }
.small { font-size: 11px; color: var(--muted); word-break: break-all; }
.imgs { display: flex; gap: 4px; }
.imgs figure { margin: 0; text-align: center; }
.imgs img, .imgs .none { width: 112px; height: 112px; display: block; background: #000;
                         object-fit: contain; }
.imgs .none { color: #ccc; font-size: 11px; padding-top: 44px; text-align: center; }
.imgs figcaption { font-size: 11px; color: var(--muted); }
.pred { font-weight: 700; }
.bars { width: 300px; }
.bar { display: flex; align-items: center; gap: 4px; font-size: 11px; margin: 2px 0; }
.bar .c { width: 128px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.bar .t { flex: 1; height: 9px; background: #eef0f5; border-radius: 2px; }
.bar .f { height: 9px; background: var(--bar); border-radius: 2px; }
.bar.top .f { background: var(--ink); }
.bar .v { width: 34px; text-align: right; }
.badge { display: inline-block; border-radius: 3px; padding: 0 5px; font-size: 11px;
         font-weight: 600; margin: 1px 0; white-space: nowrap; }
.b-abn { background: var(--abn); color: #fff; } .b-low { background: var(--low); color: #fff; }
.b-earlier { background: #e4e7ec; color: #344054; }
.b-warn { background: #fdf0c4; color: #5d3b00; } .b-ok { background: #dcfae6; color: var(--ok); }
.b-err { background: #eee; color: #444; }
ul.plain { margin: 4px 0; padding-left: 18px; }
code { font-size: 12px; }
footer { margin-top: 24px; color: var(--muted); font-size: 12px; }
* { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
@page { size: A4 landscape; margin: 10mm; }
@media print {
  body { margin: 0; font-size: 11px; }
  tr { break-inside: avoid; page-break-inside: avoid; }
  h2 { break-after: avoid; }
  a { color: inherit; text-decoration: none; }
}
</style>
</head>
<body>
<header>
<h1>Thyroid scintigraphy, night {{ inp.night }}</h1>
<p class="meta">Run <code>{{ inp.run_id }}</code> &middot; model
{% if inp.model_name %}{{ inp.model_name }} {% endif %}<code>{{ inp.model_version }}</code>
&middot; engine <code>{{ inp.engine }}</code> &middot; rendered {{ rendered_at }}</p>
<p class="disclaimer" id="disclaimer">{{ disclaimer }}</p>
</header>
{% if drift %}
<section class="drift" id="drift">
<strong>Input drift detected.</strong> {{ drift.summary }}
{% if drift.details %}<ul class="plain">
{% for d in drift.details %}<li>{{ d }}</li>{% endfor %}
</ul>{% endif %}
Tonight's images differ from the data the model was trained on: read its results with extra
care.
</section>
{% endif %}
<section id="summary">
<h2>Summary</h2>
<div class="cards">
{% for c in cards %}<div class="card {{ c.css }}" id="count-{{ c.id }}">
<div class="n">{{ c.n }}</div><div class="l">{{ c.label }}</div></div>
{% endfor %}
</div>
<table class="counts" id="class-counts">
<thead><tr><th>predicted class</th><th>studies</th><th>of which low confidence</th></tr></thead>
<tbody>
{% for c in inp.classes %}<tr data-class="{{ c }}"><td>{{ c }}</td><td>{{ per_class[c] }}</td>
<td>{{ per_class_low[c] }}</td></tr>
{% endfor %}</tbody>
</table>
</section>
<section id="worklist-section">
<h2>Worklist: abnormal and low-confidence first</h2>
{% if studies %}
<table id="worklist-table">
<thead><tr><th>#</th><th>patient</th><th>study</th><th>scan and heatmap</th>
<th>class probabilities</th><th>confidence</th><th>checks</th></tr></thead>
<tbody id="worklist">
{% for s in studies %}
<tr class="p{{ s.priority }}" data-key="{{ s.key }}" data-priority="{{ s.priority }}">
<td>{{ s.rank }}</td>
<td class="ids">{% if s.ids %}
<div class="name">{{ s.ids.patient_name or "(no name)" }}</div>
<div>ID {{ s.ids.patient_id or "(none)" }}</div>
<div>born {{ s.ids.birth_date or "?" }}{% if s.ids.sex %}, {{ s.ids.sex }}{% endif %}</div>
{% else %}<div class="small">identifiers unavailable</div>{% endif %}</td>
<td>{% if s.ids %}<div>acc. {{ s.ids.accession or "(none)" }}</div>
<div>{{ s.ids.study_date }}</div>{% endif %}
<div class="small">{{ s.file }}</div></td>
<td><div class="imgs">
<figure>{% if s.scan_uri %}<img src="{{ s.scan_uri }}" alt="scan">
{%- else %}<div class="none">no scan</div>{% endif %}<figcaption>scan</figcaption></figure>
<figure>{% if s.overlay_uri %}<a href="{{ s.overlay_href }}">
<img src="{{ s.overlay_uri }}" alt="heatmap overlay"></a>
{%- else %}<div class="none">no heatmap</div>{% endif %}
<figcaption>where the model looked
{%- if s.sc_href %} &middot; <a href="{{ s.sc_href }}">DICOM</a>{% endif %}</figcaption>
</figure>
</div></td>
<td class="bars"><div class="pred">{{ s.label }}</div>
{% for b in s.bars %}<div class="bar{% if b.top %} top{% endif %}">
<span class="c">{{ b.name }}</span><span class="t">
<span class="f" style="display:block;width:{{ b.width }}%"></span></span>
<span class="v">{{ b.text }}</span></div>
{% endfor %}</td>
<td>{{ s.confidence }}<br>
{% if s.priority == 0 %}<span class="badge b-abn">abnormal</span><br>{% endif %}
{% if s.low %}<span class="badge b-low">low confidence</span>{% endif %}
{% if s.earlier %}<br><span class="badge b-earlier"
 title="first reported by run {{ s.earlier }}">earlier run</span>{% endif %}</td>
<td>{% for w in s.warnings %}<span class="badge b-warn">{{ w.code }}</span>
<span class="small">{{ w.text }}</span><br>{% endfor %}
{% for p in s.problems %}<span class="badge b-err">{{ p.code }}</span>
<span class="small">{{ p.text }}</span><br>{% endfor %}
{% if not s.warnings and not s.problems %}<span class="badge b-ok">passed</span>{% endif %}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p>No study was scored in this run.</p>
{% endif %}
</section>
<section id="quarantine">
<h2>Quarantined and not scored</h2>
{% if inp.quarantine or inp.failures %}
<table>
<thead><tr><th>reason code</th><th>files</th><th>what it means</th></tr></thead>
<tbody>
{% for r in reason_rows %}<tr data-reason="{{ r.code }}" data-files="{{ r.n }}">
<td><code>{{ r.code }}</code>{{ r.note }}</td><td>{{ r.n }}</td><td>{{ r.text }}</td></tr>
{% endfor %}
</tbody>
</table>
<p class="small">Quarantined files were kept aside unchanged, each with a reason file; a file
may carry several codes.</p>
{% else %}
<p>No file was quarantined{% if not checked %} (no data-check results in this run){% endif %}.</p>
{% endif %}
</section>
<section id="links">
<h2>Files of this run</h2>
<ul class="plain">
{% for label, href in links %}<li><a href="{{ href }}">{{ label }}</a></li>
{% endfor %}
</ul>
</section>
<footer>scintiflow {{ version }} &middot; {{ disclaimer }}</footer>
</body>
</html>
"""


def _relative(key: str, base: str) -> str:
    return posixpath.relpath(key, base.strip("/") or ".")


def _drift_view(drift: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not drift_flagged(drift):
        return None
    assert drift is not None
    details: list[str] = []
    features = drift.get("features")
    if isinstance(features, Mapping):  # `scintiflow.pipeline.drift.compare`'s report
        drifted = [str(n) for n in drift.get("drifted_features") or [] if n in features]
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
    raw = drift.get("details", drift.get("reasons", []))
    if isinstance(raw, Mapping):
        raw = [f"{k}: {v}" for k, v in raw.items()]
    if isinstance(raw, list | tuple):
        for item in raw:
            if isinstance(item, Mapping):
                details.append(", ".join(f"{k}: {v}" for k, v in item.items()))
            else:
                details.append(str(item))
    return {"summary": str(drift.get("summary", "") or ""), "details": details}


def render_html(inp: ReportInput, studies: Sequence[_Study], *, dest_prefix: str) -> str:
    """The report page (Jinja2, autoescape on, no script) for studies in worklist order."""
    from jinja2 import Environment, StrictUndefined

    from scintiflow import __version__

    env = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    reasons = inp.reasons
    views: list[dict[str, Any]] = []
    for s in studies:
        row = s.row
        probs = [(c, float(row.get(f"p_{c}", float("nan")))) for c in inp.classes]
        top = str(row.get("predicted_label"))
        sha = str(row.get("sha256", ""))
        views.append(
            {
                "key": str(row["key"]),
                "file": posixpath.basename(str(row["key"])),
                "rank": s.rank,
                "priority": priority(row),
                "ids": s.identifiers,
                "scan_uri": s.scan_uri,
                "overlay_uri": s.overlay_uri,
                "overlay_href": _relative(str(row.get("overlay_key") or ""), dest_prefix)
                if row.get("overlay_key")
                else "",
                "sc_href": _relative(s.sc_key, dest_prefix) if s.sc_key else "",
                "label": top,
                "bars": [
                    {
                        "name": c,
                        "top": c == top,
                        "width": f"{max(0.0, min(1.0, p)) * 100:.1f}" if math.isfinite(p) else "0",
                        "text": f"{p:.2f}" if math.isfinite(p) else "n/a",
                    }
                    for c, p in probs
                ],
                "confidence": f"{float(row.get('confidence', float('nan'))):.2f}",
                "low": bool(row.get("low_confidence")),
                "warnings": [
                    {"code": c, "text": reasons.get(c, "")}
                    for c in inp.warnings.get(str(row["key"]), ())
                ],
                "problems": [{"code": p, "text": REPORT_REASONS.get(p, "")} for p in s.problems],
                "sha": sha,
                "earlier": str(row.get("reported_in") or ""),
            }
        )
    per_class = Counter(str(s.row.get("predicted_label")) for s in studies)
    per_class_low = Counter(
        str(s.row.get("predicted_label")) for s in studies if s.row.get("low_confidence")
    )
    links = [(label, _relative(key, dest_prefix)) for label, key in inp.links.items()]
    flagged = sum(1 for v in views if v["priority"] < 2)
    low = sum(1 for v in views if v["low"])
    threshold = inp.low_confidence_threshold
    cards = [
        *(
            [{"id": "inputs", "css": "", "n": inp.inputs, "label": "files received"}]
            if inp.inputs is not None
            else []
        ),
        {"id": "scored", "css": "", "n": len(views), "label": "scored"},
        {
            "id": "flagged",
            "css": "abn",
            "n": flagged,
            "label": "flagged (abnormal or low confidence)",
        },
        {
            "id": "low",
            "css": "low",
            "n": low,
            "label": "low confidence"
            + (f" (below {threshold:.2f})" if threshold is not None else ""),
        },
        {"id": "quarantined", "css": "", "n": inp.quarantined, "label": "quarantined"},
    ]
    if inp.carried_forward:
        cards.append(
            {
                "id": "carried",
                "css": "",
                "n": inp.carried_forward,
                "label": "files already reported by an earlier run tonight (included above)",
            }
        )
    not_scored = sum(inp.failures.values())
    if not_scored:
        cards.append({"id": "not-scored", "css": "", "n": not_scored, "label": "not scorable"})
    reason_rows = [
        {"code": c, "n": n, "note": "", "text": inp.reasons.get(c, "")}
        for c, n in inp.quarantine.items()
    ] + [
        {"code": c, "n": n, "note": " (not scorable)", "text": inp.reasons.get(c, "")}
        for c, n in inp.failures.items()
    ]
    return env.from_string(_TEMPLATE).render(
        cards=cards,
        reason_rows=reason_rows,
        inp=inp,
        studies=views,
        version=__version__,
        disclaimer=DISCLAIMER,
        rendered_at=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        drift=_drift_view(inp.drift),
        per_class={c: per_class.get(c, 0) for c in inp.classes},
        per_class_low={c: per_class_low.get(c, 0) for c in inp.classes},
        checked=inp.inputs is not None,
        links=links,
    )


# --------------------------------------------------------------------------------------------
# Headless Chromium


def _browser_path(browser: str | os.PathLike[str]) -> str:
    import shutil

    path = shutil.which(os.fspath(browser))
    if path is None:
        raise ReportError(
            f"no headless browser at {os.fspath(browser)!r} (install Debian's chromium)",
            reason="browser_unavailable",
        )
    return path


def run_browser(
    args: Sequence[str],
    target: Path,
    *,
    browser: str | os.PathLike[str] = DEFAULT_BROWSER,
    timeout_s: float = 120.0,
) -> bytes:
    """Run headless Chromium on a local HTML file with a fresh profile; its stdout.

    Raises `ReportError` (`browser_unavailable`, `browser_failed`, `browser_timeout`); the
    browser's own output is not quoted (it can echo page content).
    """
    exe = _browser_path(browser)
    with tempfile.TemporaryDirectory(prefix="scintiflow-chromium-") as profile:
        cmd = [
            exe,
            *BROWSER_FLAGS,
            f"--user-data-dir={profile}",
            *args,
            target.resolve().as_uri(),
        ]
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a timeout kills every child
        )
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise ReportError(
                f"the browser did not finish within {timeout_s:.0f} s", reason="browser_timeout"
            ) from None
        finally:
            if proc.poll() is None:  # pragma: no cover - defensive
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if proc.returncode != 0:
        raise ReportError(
            f"the browser exited with status {proc.returncode}", reason="browser_failed"
        )
    return out


def print_pdf(
    html_path: Path,
    pdf_path: Path,
    *,
    browser: str | os.PathLike[str] = DEFAULT_BROWSER,
    timeout_s: float = 120.0,
) -> None:
    """Print a local HTML file to PDF with headless Chromium (`--print-to-pdf`)."""
    pdf_path.unlink(missing_ok=True)
    run_browser(
        [f"--print-to-pdf={pdf_path.resolve()}", "--no-pdf-header-footer"],
        html_path,
        browser=browser,
        timeout_s=timeout_s,
    )
    if not pdf_path.is_file() or not pdf_path.read_bytes()[:5] == b"%PDF-":
        raise ReportError("the browser wrote no PDF", reason="pdf_empty")


def screenshot(
    html_path: Path,
    png_path: Path,
    *,
    width: int = 1280,
    height: int = 1600,
    browser: str | os.PathLike[str] = DEFAULT_BROWSER,
    timeout_s: float = 120.0,
) -> None:
    """A PNG screenshot of a local HTML file (headless Chromium `--screenshot`)."""
    png_path.unlink(missing_ok=True)
    run_browser(
        [
            f"--screenshot={png_path.resolve()}",
            f"--window-size={width},{height}",
            "--hide-scrollbars",
        ],
        html_path,
        browser=browser,
        timeout_s=timeout_s,
    )
    if not png_path.is_file():
        raise ReportError("the browser wrote no screenshot", reason="browser_failed")


def dump_dom(
    html_path: Path,
    *,
    browser: str | os.PathLike[str] = DEFAULT_BROWSER,
    timeout_s: float = 120.0,
) -> str:
    """The DOM after load, serialised by headless Chromium (`--dump-dom`)."""
    return run_browser(["--dump-dom"], html_path, browser=browser, timeout_s=timeout_s).decode(
        "utf-8", "replace"
    )


# --------------------------------------------------------------------------------------------
# Render


@dataclass(frozen=True)
class RenderedReport:
    """What `render_report` wrote (keys in the results store) and what it could not do."""

    html_key: str
    pdf_key: str | None
    sc_keys: dict[str, str]  # sha256 -> key of its Secondary Capture
    studies: int
    pdf_error: str | None = None  # a `REPORT_REASONS` code when the PDF step failed
    problems: dict[str, int] = field(default_factory=dict)  # reason code -> studies

    @property
    def keys(self) -> dict[str, str]:
        """Every written object: name relative to the report folder -> store key."""
        base = posixpath.dirname(self.html_key)
        written = [self.html_key, *([self.pdf_key] if self.pdf_key else []), *self.sc_keys.values()]
        return {_relative(k, base): k for k in written}


def render_report(
    store: ObjectStore,
    inp: ReportInput,
    *,
    dest_prefix: str | None = None,
    source: ObjectStore | None = None,
    browser: str | os.PathLike[str] | None = DEFAULT_BROWSER,
    secondary_capture: bool = True,
    workers: int | None = None,
    preferred_view: str | None = None,
    pdf_timeout_s: float = 120.0,
) -> RenderedReport:
    """Write `report.html`, `report.pdf` and `sc/<sha256>.dcm` under `dest_prefix`.

    `store` holds the run's results (overlays) and receives the outputs; `source` holds the
    original exports (default: `inp.source_url` when set, else `store`). `browser=None` skips
    the PDF. A failed PDF step is logged with its reason code and returned in `pdf_error`;
    the HTML and SC objects are written first, so they exist either way.
    """
    from scintiflow.settings import get_settings
    from scintiflow.storage import open_store

    settings = get_settings()
    dest = (dest_prefix or inp.prefix).strip("/")
    if source is None:
        source = open_store(inp.source_url) if inp.source_url else store
    view = preferred_view or settings.preferred_view
    n_workers = workers or settings.decode_workers or min(8, os.cpu_count() or 1)
    ordered = worklist_order([*inp.rows, *inp.carried_rows])
    studies = [_Study(row=r, rank=i + 1) for i, r in enumerate(ordered)]
    new = [s for s in studies if not s.row.get("reported_in")]
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="report") as pool:
        list(pool.map(lambda s: _gather(source, store, s, view), studies))
        if secondary_capture:
            numbers = _instance_numbers(new)
            keys = pool.map(lambda s: _write_sc(store, s, inp, dest, numbers.get(id(s), 1)), new)
            for study, key in zip(new, keys, strict=True):
                study.sc_key = key
    for study in studies:  # an earlier run's SC object stays where that run wrote it
        if study.row.get("reported_in"):
            study.sc_key = _earlier_sc_key(store, dest, study.row)
    html_text = render_html(inp, studies, dest_prefix=dest)
    html_key = f"{dest}/{REPORT_HTML}"
    store.put(html_key, html_text.encode("utf-8"))
    sc_keys = {str(s.row["sha256"]): s.sc_key for s in new if s.sc_key}
    problems = Counter(p for s in studies for p in s.problems)
    pdf_key: str | None = None
    pdf_error: str | None = None
    if browser is not None:
        try:
            pdf_key = _print_to_store(
                store, html_text, f"{dest}/{REPORT_PDF}", browser, pdf_timeout_s
            )
        except ReportError as exc:
            pdf_error = exc.reason
            log.warning("report: PDF not written (%s): %s", exc.reason, exc)
    for study in studies:  # identifiers and headers are not kept past rendering
        study.identifiers = None
        study.header = None
    log.info(
        "report: %d studies, %d secondary captures, pdf %s, problems %s",
        len(studies),
        len(sc_keys),
        "written" if pdf_key else (pdf_error or "skipped"),
        dict(problems) or "none",
    )
    return RenderedReport(
        html_key=html_key,
        pdf_key=pdf_key,
        sc_keys=sc_keys,
        studies=len(studies),
        pdf_error=pdf_error,
        problems=dict(problems),
    )


def _earlier_sc_key(store: ObjectStore, dest: str, row: Mapping[str, Any]) -> str | None:
    """The SC object an earlier run of the night wrote for this row, when it exists."""
    from scintiflow.outputs.secondary_capture import sc_key

    night_folder = posixpath.dirname(dest)
    key = sc_key(f"{night_folder}/{row['reported_in']}", str(row["sha256"]))
    return key if store.exists(key) else None


def render_run_report(
    store: ObjectStore,
    run_prefix: str,
    manifest_draft: Mapping[str, Any] | None = None,
    *,
    source: ObjectStore | None = None,
    browser: str | os.PathLike[str] | None = DEFAULT_BROWSER,
) -> str:
    """The publish step's hook: render a run folder's report; the key of `report.html`.

    Reads the folder (`build_report_input`, with the manifest draft in place of the
    not-yet-written manifest) and writes `report.html`, `report.pdf` and `sc/` into it.
    `source` holds the original exports (default: the draft's `source_url`, else `store`).
    """
    inp = build_report_input(store, run_prefix, manifest=manifest_draft)
    return render_report(store, inp, source=source, browser=browser).html_key


def _instance_numbers(studies: Sequence[_Study]) -> dict[int, int]:
    """Instance Number per study object: 1.. within each source study, in key order."""
    by_study: dict[str, list[_Study]] = {}
    for s in studies:
        if s.header is not None:
            by_study.setdefault(str(s.header.StudyInstanceUID), []).append(s)
    numbers: dict[int, int] = {}
    for members in by_study.values():
        for i, s in enumerate(sorted(members, key=lambda m: str(m.row["key"]))):
            numbers[id(s)] = i + 1
    return numbers


def _print_to_store(
    store: ObjectStore,
    html_text: str,
    key: str,
    browser: str | os.PathLike[str],
    timeout_s: float,
) -> str:
    """Print the page to PDF in a private temp folder (it holds PHI; removed after)."""
    with tempfile.TemporaryDirectory(prefix="scintiflow-report-") as tmp:
        html_path, pdf_path = Path(tmp) / REPORT_HTML, Path(tmp) / REPORT_PDF
        html_path.write_text(html_text, encoding="utf-8")
        print_pdf(html_path, pdf_path, browser=browser, timeout_s=timeout_s)
        store.put(key, pdf_path.read_bytes())
    return key


def pdf_page_count(data: bytes) -> int:
    """Pages of a PDF as Chromium writes it (counts `/Type /Page` objects)."""
    import re

    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


__all__ = [
    "BROWSER_FLAGS",
    "DEFAULT_BROWSER",
    "DISCLAIMER",
    "REPORT_REASONS",
    "Identifiers",
    "RenderedReport",
    "ReportError",
    "ReportInput",
    "build_report_input",
    "drift_flagged",
    "dump_dom",
    "parse_run_prefix",
    "pdf_page_count",
    "print_pdf",
    "priority",
    "read_identifiers",
    "render_html",
    "render_report",
    "render_run_report",
    "run_browser",
    "screenshot",
    "worklist_order",
]
