"""The clinician report as its own step: content, order, PHI, XSS, no pixel reads, browser, CLI.

One module-scoped fixture folder laid out as the shards leave it: a simulated night with
sentinel identifiers and faults (one export rewritten with a script tag as the patient
name), and for every good export the shard's outputs written here by the test: prediction
rows, `thumbs/<sha>.scan.png` / `.overlay.png`, the full-size overlay and `sc/<sha>.dcm`.
Then `render_report` through a store that refuses any full `get` of an export (only ranged
header reads pass) and counts the bytes read. Every log record of the render is captured.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from typer.testing import CliRunner

from scintiflow import CLASSES
from scintiflow.outputs.report import (
    DEFAULT_BROWSER,
    DISCLAIMER,
    RenderedReport,
    ReportInput,
    build_report_input,
    drift_flagged,
    dump_dom,
    parse_run_prefix,
    pdf_page_count,
    pdf_timeout,
    priority,
    render_html,
    render_report,
    screenshot,
    worklist_order,
)
from scintiflow.outputs.report.reasons import ReportError
from scintiflow.sim import PHI_SENTINELS, SENTINEL_ACCESSION, SENTINEL_PATIENT_ID, write_night
from scintiflow.storage import KeyNotFoundError, LocalStore, layout

NIGHT = date(2026, 11, 27)
RUN_ID = "20261127T020000Z-f6f6f6"
EARLIER = "20261127T010000Z-a1a1a1"
PREFIX = f"results/{NIGHT}/{RUN_ID}"
XSS_NAME = "<script>alert(1)</script>"
DRIFT = {
    "flagged": True,
    "summary": "Mean total counts moved by 3.1 standard deviations.",
    "details": ["total_counts: PSI 0.41 (limit 0.25)", "<b>pixel spacing</b> shifted"],
}
WARN, REJECT = "low_counts", "not_dicom"

has_browser = pytest.mark.skipif(
    shutil.which(DEFAULT_BROWSER) is None, reason="headless Chromium is not installed"
)


class GuardedStore(LocalStore):
    """A real LocalStore that fails any full `get` of an export and counts ranged bytes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ranged = 0
        self.guard = False  # on while the report renders

    def get(self, key: str, *, if_match: str = "") -> bytes:
        if self.guard and key.startswith("exports/"):
            raise AssertionError("the report fetched a whole export")
        return super().get(key, if_match=if_match)

    def get_range(self, key: str, start: int, length: int, *, if_match: str = "") -> bytes:
        data = super().get_range(key, start, length, if_match=if_match)
        self.ranged += len(data) if key.startswith("exports/") else 0
        return data


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.exc_text or ''}")


@dataclass
class Run:
    store: LocalStore
    root: Path
    inp: ReportInput
    rendered: RenderedReport
    xss_key: str
    checks: dict[str, Any]
    exports_bytes: int
    ranged_bytes: int
    log_lines: list[str]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _shard_outputs(store: LocalStore, key: str, prefix: str, i: int) -> dict[str, Any]:
    """What a shard writes for one scored export (the test plays the shard); its row."""
    from scintiflow.outputs.secondary_capture import (
        build_secondary_capture,
        encode,
        read_source,
        sc_uids,
    )

    data = store.get(key)
    sha = hashlib.sha256(data).hexdigest()
    ds = dcmread(io.BytesIO(data))
    frame = np.asarray(ds.pixel_array, dtype=np.float64).reshape(-1, ds.Rows, ds.Columns)[0]
    grey = np.round(255 * frame / max(1.0, frame.max())).astype(np.uint8)
    overlay = np.stack([grey, grey // 2, 255 - grey], axis=-1)
    small = np.asarray(Image.fromarray(overlay).resize((64, 64)))
    scan_key, thumb_key = layout.thumbnail_keys(prefix, sha)
    map_key, overlay_key = layout.heatmap_keys(prefix, sha)
    store.put(scan_key, _png(np.asarray(Image.fromarray(grey).resize((64, 64)))))
    store.put(thumb_key, _png(small))
    store.put(overlay_key, _png(overlay))
    p = np.random.default_rng(i).dirichlet(np.full(len(CLASSES), 0.6 if i % 2 else 3.0))
    label = CLASSES[int(p.argmax())]
    header = read_source(data)
    series, sop = sc_uids(RUN_ID, str(header.StudyInstanceUID), sha)
    sc = build_secondary_capture(
        header, overlay, series_uid=series, sop_uid=sop, instance_number=1, model_name="thyroid",
        model_version="v-test", engine="onnxruntime", predicted_label=label,
        confidence=float(p.max()),
    )  # fmt: skip
    store.put(layout.sc_key(prefix, sha), encode(sc))
    return {
        "key": key, "sha256": sha, "predicted_label": label,
        **{f"p_{c}": float(v) for c, v in zip(CLASSES, p, strict=True)},
        "confidence": float(p.max()), "low_confidence": bool(p.max() < 0.6),
        "model_version": "v-test", "engine": "onnxruntime", "precision": "fp32",
        "heatmap_key": map_key, "overlay_key": overlay_key, "scan_thumbnail_key": scan_key,
        "overlay_thumbnail_key": thumb_key, "sc_key": layout.sc_key(prefix, sha),
    }  # fmt: skip


def _inject_xss_name(store: LocalStore, key: str) -> None:
    ds = dcmread(io.BytesIO(store.get(key)))
    ds.PatientName = XSS_NAME
    buf = io.BytesIO()
    ds.save_as(buf)
    store.put(key, buf.getvalue())


def _night(store: LocalStore) -> tuple[list[str], list[str]]:
    """(good keys, faulty keys) of a simulated night with sentinel identifiers."""
    write_night(
        store, night=NIGHT, n=10, sites=("A", "C"), seed=11, bad_fraction=0.25,
        phi_sentinel=True, multiview_fraction=0.2,
    )  # fmt: skip
    faults = csv.DictReader(io.StringIO(store.get(f"labels/{NIGHT}.faults.csv").decode()))
    bad = sorted(r["key"] for r in faults)
    every = sorted(o.key for o in store.list(f"exports/{NIGHT}/"))
    return [k for k in every if k not in bad], bad


def _fixture_folder(store: LocalStore) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """The shards' outputs, this run's and an earlier run's rows; (inputs, rows, xss key)."""
    good, bad = _night(store)
    xss_key = good[0]
    _inject_xss_name(store, xss_key)
    earlier = f"results/{NIGHT}/{EARLIER}"
    rows = [_shard_outputs(store, k, PREFIX, i) for i, k in enumerate(good[:-1])]
    carried = [{**_shard_outputs(store, good[-1], earlier, 99), "reported_in": EARLIER}]
    rows[1]["scan_thumbnail_key"] = ""  # the shard could not write this one's thumbnail
    store.put(rows[2]["sc_key"], b"")  # nor this one's SC
    rows[2]["sc_key"] = ""
    checks = {
        "inputs": len(good) + len(bad),
        "warned": {rows[0]["key"]: [WARN]},
        "quarantined": {k: [REJECT, WARN] for k in bad},
        "reasons": {},
        "docs": f"{PREFIX}/checks/docs/index.html",
    }
    store.put(f"{PREFIX}/{layout.PREDICTIONS_JSONL}", _jsonl(rows))
    store.put(f"{earlier}/{layout.PREDICTIONS_JSONL}", _jsonl(carried))
    store.put(f"{PREFIX}/{layout.CHECKS_JSON}", json.dumps(checks).encode())
    return {"checks": checks, "carried": carried, "bad": bad}, rows, xss_key


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _draft(n_carried: int = 1) -> dict[str, Any]:
    return {
        "night": str(NIGHT),
        "run_id": RUN_ID,
        "model": {"name": "thyroid", "version": "v-test", "low_confidence_threshold": 0.6},
        "engine": "onnxruntime",
        "counts": {"carried_forward": n_carried},
        "status": "complete",
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("report") / "bucket"
    store = GuardedStore(root)
    parts, rows, xss_key = _fixture_folder(store)
    quarantined = [{"key": k, "codes": [REJECT]} for k in parts["bad"]]
    inp = build_report_input(
        _draft(), rows, prefix=PREFIX, carried_rows=parts["carried"], quarantined=quarantined,
        checks=parts["checks"], drift=DRIFT,
    )  # fmt: skip
    keys = [r["key"] for r in (*rows, *parts["carried"])]
    exports_bytes = sum(len(LocalStore.get(store, k)) for k in keys)
    capture = _Capture()
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(capture)
    root_logger.setLevel(logging.DEBUG)
    try:
        store.ranged, store.guard = 0, True
        rendered = render_report(store, inp, dest_prefix=PREFIX, source=store, workers=2)
        yield Run(
            store, root, inp, rendered, xss_key, parts["checks"], exports_bytes, store.ranged,
            capture.lines,
        )  # fmt: skip
    finally:
        root_logger.removeHandler(capture)
        root_logger.setLevel(old_level)


def _html(run: Run) -> str:
    return run.store.get(run.rendered.html_key).decode("utf-8")


class _Dom(HTMLParser):
    """Worklist rows (data-key order), images, scripts, links and text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[dict[str, str]] = []
        self.imgs: list[dict[str, str]] = []
        self.hrefs: list[str] = []
        self.scripts = 0
        self.text: list[str] = []
        self.ids: set[str] = set()
        self.reasons: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "tr" and "data-key" in a:
            self.rows.append(a)
        if tag == "tr" and "data-reason" in a:
            self.reasons[a["data-reason"]] = int(a["data-files"])
        if tag == "img":
            self.imgs.append(a)
        if tag == "a":
            self.hrefs.append(a.get("href", ""))
        if tag == "script":
            self.scripts += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Dom:
    dom = _Dom()
    dom.feed(page)
    return dom


def _all_rows(run: Run) -> list[dict[str, Any]]:
    return [*run.inp.rows, *run.inp.carried_rows]


# --------------------------------------------------------------------------------------------
# Content (no browser)


def test_worklist_has_one_row_per_scored_study_in_priority_order(run: Run) -> None:
    dom = _parse(_html(run))
    scored = [r["key"] for r in _all_rows(run)]
    keys = [r["data-key"] for r in dom.rows]
    assert len(keys) == len(scored) == run.rendered.studies
    assert sorted(keys) == sorted(scored)
    by_key = {r["key"]: r for r in _all_rows(run)}
    tiers = [priority(by_key[k]) for k in keys]
    assert tiers == sorted(tiers)  # abnormal, then low-confidence normal, then the rest
    assert [int(r["data-priority"]) for r in dom.rows] == tiers
    for a, b in itertools.pairwise(keys):
        if priority(by_key[a]) == priority(by_key[b]):
            assert by_key[a]["p_normal"] <= by_key[b]["p_normal"]
    assert keys == [r["key"] for r in worklist_order(_all_rows(run))]
    assert len(set(tiers)) >= 2  # the night is varied enough for the order to mean something


def test_summary_counts_classes_flagged_and_quarantine(run: Run) -> None:
    page = _html(run)
    dom = _parse(page)
    rows = _all_rows(run)
    flagged = sum(1 for r in rows if r["predicted_label"] != "normal" or r["low_confidence"])
    assert re.search(rf'id="count-flagged">\s*<div class="n">{flagged}</div>', page)
    quarantined = len(run.checks["quarantined"])
    assert quarantined > 0
    assert re.search(rf'id="count-quarantined">\s*<div class="n">{quarantined}</div>', page)
    assert re.search(rf'id="count-inputs">\s*<div class="n">{run.checks["inputs"]}</div>', page)
    assert re.search(r'id="count-carried">\s*<div class="n">1<', page)
    for cls in CLASSES:
        n = sum(1 for r in rows if r["predicted_label"] == cls)
        assert re.search(rf'<tr data-class="{cls}"><td>{cls}</td><td>{n}</td>', page)
    from scintiflow.checks.reasons import REASONS

    assert dom.reasons == {REJECT: quarantined}  # only the reject code of each file counts
    assert REASONS[REJECT][1].replace("'", "&#39;") in page
    assert DISCLAIMER in page
    assert "v-test" in page
    assert "onnxruntime" in page
    assert str(NIGHT) in page
    assert "below 0.60" in page


def test_warnings_links_drift_banner_and_earlier_rows(run: Run) -> None:
    page = _html(run)
    dom = _parse(page)
    assert "drift" in dom.ids
    assert "Mean total counts moved by 3.1 standard deviations." in page
    assert "&lt;b&gt;pixel spacing&lt;/b&gt;" in page  # drift text is escaped too
    for href in (
        "predictions.csv",
        "manifest.json",
        "checks/checks.json",
        "checks/docs/index.html",
    ):
        assert href in dom.hrefs
    assert f'<span class="badge b-warn">{WARN}</span>' in page
    # the carried row links into the earlier run folder, where its shard wrote its outputs
    carried = run.inp.carried_rows[0]
    assert f"../{EARLIER}/sc/{carried['sha256']}.dcm" in dom.hrefs
    assert page.count('class="badge b-earlier"') == 1
    # without drift, no banner
    quiet = render_html(
        ReportInput.from_dict({**run.inp.to_dict(), "drift": None}), [], dest_prefix=PREFIX
    )
    assert 'id="drift"' not in quiet
    assert drift_flagged({"flagged": False}) is False


def test_sc_links_and_problem_codes_from_the_rows(run: Run) -> None:
    page = _html(run)
    dom = _parse(page)
    for row in _all_rows(run):
        if row["sc_key"]:
            assert posix_rel(row["sc_key"]) in dom.hrefs
    assert run.rendered.problems == {"sc_failed": 1, "thumbnail_unavailable": 1}
    assert page.count('<span class="badge b-err">sc_failed</span>') == 1
    assert page.count('<span class="badge b-err">thumbnail_unavailable</span>') == 1
    assert page.count('<div class="none">no scan</div>') == 1
    assert len(dom.imgs) == 2 * run.rendered.studies - 1  # a placeholder, not a broken image
    # the report wrote its two files and nothing else; their hashes are returned
    assert set(run.rendered.written) == {f"{PREFIX}/report.html", f"{PREFIX}/report.pdf"}
    for key, sha in run.rendered.written.items():
        assert hashlib.sha256(run.store.get(key)).hexdigest() == sha


def posix_rel(key: str) -> str:
    import posixpath

    return posixpath.relpath(key, PREFIX)


def test_no_pixel_data_is_read_only_headers(run: Run) -> None:
    # GuardedStore fails every full get of an export: the render above passed through it.
    # No module of the package imports publish, the pixel decoder or the SC writer.
    assert 0 < run.ranged_bytes * 3 < run.exports_bytes
    print(f"header reads: {run.ranged_bytes} of {run.exports_bytes} export bytes")
    import ast

    package = Path(__file__).parents[1] / "src/scintiflow/outputs/report"
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        forbidden = ("scintiflow.outputs.publish", "scintiflow.ingest.dicom", "secondary_capture")
        assert not {m for m in names if m and m.startswith(forbidden)}, path
        assert "pixel_array" not in path.read_text(), path


def test_identifiers_are_in_the_report_and_escaped(run: Run) -> None:
    page = _html(run)
    assert SENTINEL_PATIENT_ID in page
    assert SENTINEL_ACCESSION in page
    assert "SENTINEL, LEAK CANARY" in page  # PN formatted for people
    assert XSS_NAME not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    dom = _parse(page)
    assert dom.scripts == 0
    assert XSS_NAME in "".join(dom.text)  # shown as text


def test_no_phi_in_keys_logs_or_json(run: Run) -> None:
    keys = [o.key for o in run.store.list("")]
    assert not [k for k in keys if any(s in k for s in PHI_SENTINELS)]
    checked = 0
    for key in keys:
        if key.startswith(("exports/", "labels/")) or key.endswith(
            (".dcm", "report.html", "report.pdf")
        ):
            continue  # inputs, DICOM and the clinician's report carry identifiers by design
        data = run.store.get(key)
        assert not [s for s in PHI_SENTINELS if s.encode() in data], key
        assert b"SENTINEL" not in data, key
        checked += 1
    assert checked > 10
    text = "\n".join(run.log_lines)
    assert any("report:" in line for line in run.log_lines)
    assert not [s for s in (*PHI_SENTINELS, "SENTINEL", XSS_NAME) if s in text]
    blob = json.dumps(run.inp.to_dict()) + json.dumps(run.rendered.__dict__)
    assert not [s for s in (*PHI_SENTINELS, "SENTINEL", XSS_NAME) if s in blob]


def test_report_input_from_bare_values_and_an_empty_night(run: Run, tmp_path: Path) -> None:
    prefix = "results/2026-11-28/run-x"
    inp = build_report_input({}, run.inp.rows, prefix=prefix)
    assert (inp.night, inp.run_id) == ("2026-11-28", "run-x")
    assert inp.quarantined == 0
    assert inp.inputs is None
    assert inp.drift is None
    assert inp.model_version == "v-test"
    assert ReportInput.from_dict(json.loads(json.dumps(inp.to_dict()))) == inp
    with pytest.raises(ReportError) as exc:
        parse_run_prefix("results/last-night/run")
    assert exc.value.reason == "bad_run_prefix"
    # a night where nothing arrived renders a page that says so (and no PDF trouble)
    empty = build_report_input({"counts": {"inputs": 0}}, [], prefix=prefix)
    store = LocalStore(tmp_path)
    out = render_report(store, empty, dest_prefix=prefix, source=store, browser=None)
    page = store.get(out.html_key).decode()
    assert "No study was scored in this run: no export" in page
    assert 'data-key="' not in page
    assert out.studies == 0
    assert out.problems == {}
    # a draft, when given, names the night, model and drift
    draft = {"model": {"name": "thyroid", "version": "v1"}, "drift": DRIFT}
    inp = build_report_input(draft, run.inp.rows, prefix=prefix)
    assert (inp.model_name, inp.model_version, inp.drift) == ("thyroid", "v1", DRIFT)


def test_partial_night_banner_names_the_unaccounted_inputs(run: Run) -> None:
    draft = {
        **_draft(),
        "status": "partial",
        "counts": {"inputs": 12, "unaccounted": 3},
        "unaccounted": [{"reason": "shard_failed"}] * 2 + [{"reason": "shard_timeout"}],
    }
    inp = build_report_input(draft, run.inp.rows, prefix=PREFIX)
    page = render_html(inp, [], dest_prefix=PREFIX)
    dom = _parse(page)
    assert "partial" in dom.ids
    assert "Partial night: 3 inputs not accounted" in page
    assert 'data-unaccounted="shard_failed" data-files="2"' in page
    assert 'data-unaccounted="shard_timeout" data-files="1"' in page
    assert re.search(r'id="count-unaccounted">\s*<div class="n">3<', page)
    assert 'id="partial"' not in _html(run)


def test_deleted_export_and_drift_report_shape(run: Run, tmp_path: Path) -> None:
    copy = LocalStore(tmp_path / "bucket")
    gone = run.inp.rows[-1]["key"]  # an export deleted after scoring
    for info in run.store.list(""):
        if info.key != gone and not info.key.startswith(f"{PREFIX}/report"):
            copy.put(info.key, LocalStore.get(run.store, info.key))
    drift = {  # the shape of `scintiflow.pipeline.drift.compare`'s report
        "drift": True,
        "drifted_features": ["total_counts"],
        "n_images": 40,
        "features": {
            "total_counts": {"psi": 0.412, "ks": 0.31, "thresholds": {"psi": 0.25, "ks": 0.2}},
            "matrix": {"psi": 0.01, "thresholds": {"psi": 0.25}},
        },
    }
    inp = ReportInput.from_dict({**run.inp.to_dict(), "drift": drift})
    out = render_report(copy, inp, dest_prefix=PREFIX, source=copy, browser=None)
    page = copy.get(out.html_key).decode()
    assert "1 of 2 monitored input statistics" in page
    assert "total_counts: PSI 0.412 (limit 0.25), KS 0.31 (limit 0.2)" in page
    assert out.problems["source_unavailable"] == 1
    assert page.count("identifiers unavailable") == 1
    assert len(_parse(page).rows) == run.rendered.studies  # its row stays
    assert not copy.exists(f"{PREFIX}/report.pdf")  # browser=None: no PDF
    with pytest.raises(KeyNotFoundError):
        copy.get(gone)


@pytest.mark.s3
def test_renders_on_s3(run: Run, s3_endpoint: str, s3_bucket: str) -> None:
    from scintiflow.storage import S3Store

    s3 = S3Store(s3_bucket, "site", endpoint_url=s3_endpoint, max_attempts=2)
    for row in _all_rows(run):
        for key in (row["key"], row["scan_thumbnail_key"], row["overlay_thumbnail_key"]):
            if key:
                s3.put(key, LocalStore.get(run.store, key))
    out = render_report(s3, run.inp, dest_prefix=PREFIX, source=s3, browser=None, workers=2)
    page = s3.get(out.html_key).decode()
    assert [r["data-key"] for r in _parse(page).rows] == [
        r["key"] for r in worklist_order(_all_rows(run))
    ]
    assert SENTINEL_PATIENT_ID in page
    assert out.problems == run.rendered.problems
    assert out.written == {out.html_key: hashlib.sha256(page.encode()).hexdigest()}


def test_worklist_order_ranks_abnormal_then_low_confidence() -> None:
    rows = [
        {"key": "a", "predicted_label": "normal", "low_confidence": False, "p_normal": 0.9},
        {"key": "b", "predicted_label": "normal", "low_confidence": True, "p_normal": 0.5},
        {"key": "c", "predicted_label": "graves", "low_confidence": True, "p_normal": 0.3},
        {"key": "d", "predicted_label": "thyroid_tumor", "low_confidence": False, "p_normal": 0.1},
    ]
    assert [r["key"] for r in worklist_order(rows)] == ["d", "c", "b", "a"]


def test_pdf_timeout_scales_with_the_studies() -> None:
    assert pdf_timeout(0) == 60.0
    assert pdf_timeout(100) == pytest.approx(64.0)
    assert pdf_timeout(5000) == pytest.approx(260.0)  # a fixed 120 s timed out here
    assert pdf_timeout(10**6) == 900.0


def test_template_ships_as_package_data() -> None:
    import tomllib

    from scintiflow.outputs.report.page import TEMPLATE, template_text

    assert "<!DOCTYPE html>" in template_text()
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]["scintiflow"]
    assert f"outputs/report/templates/*{Path(TEMPLATE).suffix}" in data


def _cards(page: str) -> dict[str, str]:
    return dict(re.findall(r'id="count-([\w-]+)">\s*<div class="n">([^<]*)<', page))


def test_a_limited_page_lists_the_first_rows_and_keeps_every_count(run: Run) -> None:
    """The PDF of a large night: the first rows of the worklist, the counts of all."""
    from scintiflow.outputs.report.page import Study

    ordered = worklist_order(_all_rows(run))
    studies = [Study(row=r, rank=i + 1) for i, r in enumerate(ordered)]
    full = render_html(run.inp, studies, dest_prefix=PREFIX)
    short = render_html(run.inp, studies, dest_prefix=PREFIX, limit=2)
    assert len(studies) > 2
    assert [r["data-key"] for r in _parse(short).rows] == [r["key"] for r in ordered[:2]]
    assert f'data-omitted="{len(studies) - 2}"' in short
    assert 'id="omitted"' not in full
    assert _cards(short) == _cards(full)
    assert len(_cards(full)) >= 4


class _ThumbnailCount(LocalStore):
    """A real LocalStore that counts thumbnail reads (one per study and image)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.thumbnails = 0
        self._lock = threading.Lock()

    def get(self, key: str, *, if_match: str = "") -> bytes:
        if "/thumbs/" in key or key.startswith("thumbs/"):
            with self._lock:
                self.thumbnails += 1
        return super().get(key, if_match=if_match)


def test_rows_images_are_read_a_block_ahead_and_dropped_once_written(run: Run) -> None:
    """Memory flat in the night: at any point of the page, only the rows of the block being
    written and of the next one hold identifiers and thumbnails."""
    from concurrent.futures import ThreadPoolExecutor

    from scintiflow.outputs.report.page import Study
    from scintiflow.outputs.report.render import GATHER_BLOCK, _block_filler

    scored = [r for r in run.inp.rows if r.get("scan_thumbnail_key")]
    assert scored
    rows = [scored[i % len(scored)] for i in range(3 * GATHER_BLOCK + 5)]
    studies = [Study(row=r, rank=i + 1) for i, r in enumerate(rows)]
    store = _ThumbnailCount(run.root)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for i, study in enumerate(_block_filler(store, store, pool)(studies)):
            assert study is studies[i]
            assert study.identifiers is not None
            assert study.scan_uri
            assert study.overlay_uri
            assert all(s.identifiers is None and s.scan_uri is None for s in studies[:i])
            block = i // GATHER_BLOCK
            assert store.thumbnails <= 2 * min(len(studies), (block + 2) * GATHER_BLOCK)
    assert store.thumbnails == 2 * len(studies)
    assert all(s.identifiers is None and s.overlay_uri is None for s in studies)


def test_missing_browser_fails_the_pdf_with_a_reason_and_keeps_the_html(run: Run) -> None:
    dest = f"{PREFIX}/no-browser"
    out = render_report(
        run.store, run.inp, dest_prefix=dest, source=run.store, browser="/nonexistent/chromium"
    )
    assert out.pdf_error == "browser_unavailable"
    assert out.pdf_key is None
    assert run.store.exists(f"{dest}/report.html")
    assert not run.store.exists(f"{dest}/report.pdf")


# --------------------------------------------------------------------------------------------
# Real browser

_PROBE = (
    "<script>addEventListener('load', () => { for (const i of document.images) {"
    " i.setAttribute('data-probe', i.complete && i.naturalWidth > 0 ? 'ok' : 'broken'); } });"
    "</script>"
)


def _local_copy(run: Run) -> Path:
    """report.html as a file, in its run folder (a LocalStore is laid out like a download)."""
    folder = run.root.joinpath(*PREFIX.split("/"))
    assert (folder / "report.html").is_file()
    return folder / "report.html"


@pytest.mark.browser
@has_browser
def test_browser_dom_rows_order_and_no_broken_images(run: Run) -> None:
    report = _local_copy(run)
    dom = _parse(dump_dom(report))
    expected = [r["key"] for r in worklist_order(_all_rows(run))]
    assert [r["data-key"] for r in dom.rows] == expected
    assert dom.scripts == 0  # nothing from the data became a script element
    assert XSS_NAME in "".join(dom.text)
    probed = report.with_name("probe.html")
    page = report.read_text(encoding="utf-8")
    probed.write_text(page.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    imgs = _parse(dump_dom(probed)).imgs
    assert len(imgs) == 2 * len(expected) - 1  # scan + overlay per row, one placeholder
    assert [i.get("data-probe") for i in imgs] == ["ok"] * len(imgs)
    broken = report.with_name("broken.html")
    first_src = re.search(r'<img src="([^"]+)"', page)
    assert first_src is not None
    broken.write_text(
        page.replace(first_src.group(1), "missing.png", 1).replace("</body>", _PROBE + "</body>"),
        encoding="utf-8",
    )
    states = [i.get("data-probe") for i in _parse(dump_dom(broken)).imgs]
    assert states.count("broken") == 1  # the probe does see a broken image
    probed.unlink()
    broken.unlink()


@pytest.mark.browser
@has_browser
def test_browser_screenshot_is_not_blank(run: Run, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    screenshot(_local_copy(run), png, width=1280, height=1400)
    with Image.open(png) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    assert rgb.shape[:2] == (1400, 1280)
    assert rgb.std() > 10
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50
    print(f"report screenshot: {png}")


@pytest.mark.browser
@has_browser
def test_a_large_nights_pdf_lists_the_first_studies(run: Run) -> None:
    dest = f"{PREFIX}/capped"
    out = render_report(run.store, run.inp, dest_prefix=dest, source=run.store, pdf_max_studies=2)
    assert out.pdf_error is None
    assert (out.studies, out.pdf_studies) == (run.rendered.studies, 2)
    assert run.rendered.pdf_studies == run.rendered.studies  # under the limit: every row
    assert run.rendered.pdf_key is not None
    assert out.pdf_key is not None
    capped = pdf_page_count(run.store.get(out.pdf_key))
    assert capped < pdf_page_count(run.store.get(run.rendered.pdf_key))
    assert len(_parse(run.store.get(out.html_key).decode()).rows) == out.studies  # HTML: all


@pytest.mark.browser
@has_browser
def test_pdf_exists_with_pages(run: Run) -> None:
    assert run.rendered.pdf_error is None
    assert run.rendered.pdf_key == f"{PREFIX}/report.pdf"
    data = run.store.get(run.rendered.pdf_key)
    assert data.startswith(b"%PDF-")
    # about four worklist rows per A4 landscape page, plus the summary
    assert pdf_page_count(data) >= 1 + run.rendered.studies // 6


# --------------------------------------------------------------------------------------------
# CLI


def _copy_run_folder(run: Run, tmp_path: Path) -> tuple[Path, Path]:
    copy = tmp_path / "bucket"
    shutil.copytree(run.root, copy)
    folder = copy.joinpath(*PREFIX.split("/"))
    for name in ("report.html", "report.pdf"):
        (folder / name).unlink()
    (folder / "quarantined.jsonl").write_text(
        "".join(json.dumps({"key": k, "codes": [REJECT]}) + "\n" for k in run.checks["quarantined"])
    )
    return copy, folder


@pytest.mark.browser
@has_browser
def test_cli_rerenders_a_finished_run(run: Run, tmp_path: Path) -> None:
    from scintiflow.cli import app
    from scintiflow.settings import get_settings

    copy, folder = _copy_run_folder(run, tmp_path)
    get_settings.cache_clear()
    result = CliRunner().invoke(
        app, ["report", "--run", f"{copy}/{PREFIX}"], env={"COLUMNS": "240"}
    )
    assert result.exit_code == 0, result.output
    assert (folder / "report.pdf").is_file()
    assert (folder / "report.html").as_uri() in result.output
    assert not [s for s in PHI_SENTINELS if s in result.output]
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert [r["data-key"] for r in _parse(page).rows] == [
        r["key"]
        for r in worklist_order(run.inp.rows)  # no manifest: nothing carried
    ]
    assert SENTINEL_PATIENT_ID in page


def test_cli_renders_beside_a_published_report(run: Run, tmp_path: Path) -> None:
    """A run with a manifest keeps its published (hashed) report; the new one goes beside."""
    from scintiflow.cli import app
    from scintiflow.cli.report import RERENDERED_DIR
    from scintiflow.settings import get_settings

    copy, folder = _copy_run_folder(run, tmp_path)
    earlier_manifest = f"results/{NIGHT}/{EARLIER}/manifest.json"
    (copy / earlier_manifest).write_text(
        json.dumps({"predictions": {"jsonl": f"results/{NIGHT}/{EARLIER}/predictions.jsonl"}})
    )
    carried = run.inp.carried_rows[0]["key"]
    manifest = {
        **_draft(),
        "carried_forward": [{"run_id": EARLIER, "manifest": earlier_manifest, "keys": [carried]}],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    published = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    get_settings.cache_clear()
    result = CliRunner().invoke(
        app, ["report", "--run", f"{copy}/{PREFIX}", "--no-pdf"], env={"COLUMNS": "240"}
    )
    assert result.exit_code == 0, result.output
    assert {p: p.read_bytes() for p in published} == published  # nothing published changed
    beside = folder / RERENDERED_DIR
    assert (beside / "report.html").as_uri() in result.output
    page = (beside / "report.html").read_text(encoding="utf-8")
    assert len(_parse(page).rows) == run.rendered.studies  # the carried row is back
    assert f"../../{EARLIER}/sc/" in page


def test_cli_rejects_a_url_that_is_not_a_run_folder(tmp_path: Path) -> None:
    from scintiflow.cli import app

    result = CliRunner().invoke(app, ["report", "--run", str(tmp_path / "nothing")])
    assert result.exit_code != 0
    assert "results/<YYYY-MM-DD>/<run_id>" in result.output
