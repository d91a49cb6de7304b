"""The clinician report of a real scoring run: content, order, PHI, XSS, real browser, PDF, CLI.

One module-scoped run: a simulated night with sentinel identifiers and faults, one export
rewritten with a script tag as the patient name, the real data checks (GX), a registered
random-init ShuffleNetV2 (64 px) scored with ONNX Runtime, then `render_report`. Every log
record of the whole run is captured for the PHI checks.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom import dcmread
from typer.testing import CliRunner

from scintiflow import CLASSES
from scintiflow.inference.score import results_prefix
from scintiflow.outputs.report import (
    DEFAULT_BROWSER,
    DISCLAIMER,
    RenderedReport,
    ReportError,
    ReportInput,
    build_report_input,
    drift_flagged,
    dump_dom,
    parse_run_prefix,
    pdf_page_count,
    priority,
    render_html,
    render_report,
    screenshot,
    worklist_order,
)
from scintiflow.sim import PHI_SENTINELS, SENTINEL_ACCESSION, SENTINEL_PATIENT_ID, write_night
from scintiflow.storage import LocalStore, ObjectStore

NIGHT = date(2026, 11, 27)
RUN_ID = "20261127T020000Z-f6f6f6"
PREFIX = results_prefix(str(NIGHT), RUN_ID)
XSS_NAME = "<script>alert(1)</script>"
DRIFT = {
    "flagged": True,
    "summary": "Mean total counts moved by 3.1 standard deviations.",
    "details": ["total_counts: PSI 0.41 (limit 0.25)", "<b>pixel spacing</b> shifted"],
}
SIZE = 64

has_browser = pytest.mark.skipif(
    shutil.which(DEFAULT_BROWSER) is None, reason="headless Chromium is not installed"
)


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
    accepted: list[str]
    log_lines: list[str]


def _register(store: ObjectStore) -> str:
    """A random-init ShuffleNetV2 whose head is centred, so predictions vary between images."""
    from scintiflow.ml.models import classifier_layer, create_model, state_dict_bytes
    from scintiflow.ml.preprocess import PreprocessConfig, preprocess_batch
    from scintiflow.ml.registry import register_version
    from scintiflow.sim import simulate_cases

    torch.manual_seed(0)
    model = create_model("shufflenet_v2").eval()
    fc = classifier_layer(model, "shufflenet_v2")
    cases = simulate_cases(24, sites=("A", "C"), seed=1)
    x = torch.from_numpy(preprocess_batch([c.image for c in cases], PreprocessConfig(SIZE)))
    with torch.no_grad():
        logits = model(x)
        fc.bias -= logits.mean(0)
        fc.bias /= logits.std(0) + 1e-6
        fc.weight /= (logits.std(0) + 1e-6)[:, None]
    return register_version(
        store,
        "thyroid",
        arch="shufflenet_v2",
        weights=state_dict_bytes(model),
        preprocess=PreprocessConfig(image_size=SIZE).to_dict(),
        classes=CLASSES,
        temperature=0.3,  # sharper probabilities: some confident, some not
        metrics={},
        card={"low_confidence_threshold": 0.6},
        lineage={},
        training_reference={},
    )


def _inject_xss_name(store: ObjectStore) -> str:
    """Rewrite one good export with a script tag as the patient name; its key."""
    import csv

    labels = list(csv.DictReader(io.StringIO(store.get(f"labels/{NIGHT}.csv").decode())))
    key = sorted(r["key"] for r in labels)[0]
    ds = dcmread(io.BytesIO(store.get(key)))
    ds.PatientName = XSS_NAME
    buf = io.BytesIO()
    ds.save_as(buf)
    store.put(key, buf.getvalue())
    return key


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    from scintiflow.checks.run import run_checks
    from scintiflow.inference.engines import load_scoring_model, open_engine
    from scintiflow.inference.score import score_keys

    capture = _Capture()
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(capture)
    root_logger.setLevel(logging.DEBUG)
    try:
        root = tmp_path_factory.mktemp("report") / "bucket"
        store = LocalStore(root)
        write_night(
            store,
            night=NIGHT,
            n=10,
            sites=("A", "C"),
            seed=11,
            bad_fraction=0.25,
            phi_sentinel=True,
            multiview_fraction=0.2,
        )
        xss_key = _inject_xss_name(store)
        checks = run_checks(store, night=NIGHT, run_id=RUN_ID, workers=2)
        version = _register(store)
        sm = load_scoring_model(store, "thyroid", version)
        score_keys(
            store, checks.accepted, open_engine("onnxruntime", sm), sm, store, PREFIX, workers=2
        )
        inp = build_report_input(store, PREFIX, model_name="thyroid", drift=DRIFT)
        rendered = render_report(store, inp, workers=2)
        yield Run(store, root, inp, rendered, xss_key, list(checks.accepted), capture.lines)
    finally:
        root_logger.removeHandler(capture)
        root_logger.setLevel(old_level)


def _html(run: Run) -> str:
    return run.store.get(run.rendered.html_key).decode("utf-8")


class _Dom(HTMLParser):
    """Worklist rows (data-key order), images, scripts and text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[dict[str, str]] = []
        self.imgs: list[dict[str, str]] = []
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
        if tag == "script":
            self.scripts += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Dom:
    dom = _Dom()
    dom.feed(page)
    return dom


# --------------------------------------------------------------------------------------------
# Content (no browser)


def test_worklist_has_one_row_per_scored_study_in_priority_order(run: Run) -> None:
    dom = _parse(_html(run))
    scored = [r["key"] for r in run.inp.rows]
    keys = [r["data-key"] for r in dom.rows]
    assert len(keys) == len(scored) == run.rendered.studies
    assert sorted(keys) == sorted(scored)
    assert set(scored) <= set(run.accepted)
    by_key = {r["key"]: r for r in run.inp.rows}
    tiers = [priority(by_key[k]) for k in keys]
    assert tiers == sorted(tiers)  # abnormal, then low-confidence normal, then the rest
    assert [int(r["data-priority"]) for r in dom.rows] == tiers
    for a, b in itertools.pairwise(keys):
        if priority(by_key[a]) == priority(by_key[b]):
            assert by_key[a]["p_normal"] <= by_key[b]["p_normal"]
    # the night is varied enough for the order to mean something
    print("priority tiers in worklist order:", tiers)
    assert len(set(tiers)) >= 2


def test_summary_counts_classes_flagged_and_quarantine(run: Run) -> None:
    page = _html(run)
    dom = _parse(page)
    checks = json.loads(run.store.get(f"{PREFIX}/checks/checks.json"))
    rows = run.inp.rows
    flagged = sum(1 for r in rows if r["predicted_label"] != "normal" or r["low_confidence"])
    assert re.search(rf'id="count-flagged">\s*<div class="n">{flagged}</div>', page)
    quarantined = len(checks["quarantined"])
    assert quarantined > 0
    assert re.search(rf'id="count-quarantined">\s*<div class="n">{quarantined}</div>', page)
    for cls in CLASSES:
        n = sum(1 for r in rows if r["predicted_label"] == cls)
        assert re.search(rf'<tr data-class="{cls}"><td>{cls}</td><td>{n}</td>', page)
    # quarantine section: each reject code with its file count and plain-language text
    from scintiflow.checks.reasons import REASONS

    expected: dict[str, int] = {}
    for codes in checks["quarantined"].values():
        for code in {c for c in codes if REASONS[c][0] == "reject"}:
            expected[code] = expected.get(code, 0) + 1
    assert {c: n for c, n in dom.reasons.items() if c in expected} == expected
    for code in expected:
        assert REASONS[code][1].replace("'", "&#39;") in page
    assert DISCLAIMER in page
    assert run.inp.model_version in page
    assert "onnxruntime" in page
    assert str(NIGHT) in page


def test_warnings_and_links_and_drift_banner(run: Run) -> None:
    page = _html(run)
    dom = _parse(page)
    assert "drift" in dom.ids
    assert "Mean total counts moved by 3.1 standard deviations." in page
    assert "&lt;b&gt;pixel spacing&lt;/b&gt;" in page  # drift text is escaped too
    for label in ("predictions.csv", "manifest.json", "checks.json"):
        assert f'href="{label if label != "checks.json" else "checks/checks.json"}"' in page
    warned = {k: v for k, v in run.inp.warnings.items() if k in {r["key"] for r in run.inp.rows}}
    for codes in warned.values():
        for code in codes:
            assert f'<span class="badge b-warn">{code}</span>' in page
    # without drift, no banner
    quiet = render_html(
        ReportInput.from_dict({**run.inp.to_dict(), "drift": None}), [], dest_prefix=PREFIX
    )
    assert 'id="drift"' not in quiet
    assert drift_flagged({"flagged": False}) is False


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
        if key.startswith("quarantine/") and not key.endswith(".reason.json"):
            continue  # quarantined bytes: the exported file, unchanged
        data = run.store.get(key)
        assert not [s for s in PHI_SENTINELS if s.encode() in data], key
        assert b"SENTINEL" not in data, key
        assert XSS_NAME.encode() not in data, key
        checked += 1
    assert checked > 10
    text = "\n".join(run.log_lines)
    assert any("report:" in line for line in run.log_lines)
    assert not [s for s in (*PHI_SENTINELS, "SENTINEL", XSS_NAME) if s in text]
    blob = json.dumps(run.inp.to_dict())
    assert not [s for s in (*PHI_SENTINELS, "SENTINEL", XSS_NAME) if s in blob]


def test_secondary_captures_in_the_original_study(run: Run, tmp_path: Path) -> None:
    from scintiflow.outputs.secondary_capture import PATIENT_MODULE_KEYWORDS, png_rgb, sc_key

    assert set(run.rendered.sc_keys) == {r["sha256"] for r in run.inp.rows}
    for row in run.inp.rows:
        key = run.rendered.sc_keys[row["sha256"]]
        assert key == sc_key(PREFIX, row["sha256"])
        sc = dcmread(io.BytesIO(run.store.get(key)))
        src = dcmread(io.BytesIO(run.store.get(row["key"])), stop_before_pixels=True)
        assert sc.StudyInstanceUID == src.StudyInstanceUID
        assert sc.SeriesInstanceUID != src.SeriesInstanceUID
        assert sc.SOPInstanceUID != src.SOPInstanceUID
        assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
        for kw in PATIENT_MODULE_KEYWORDS:
            if kw in src:
                assert sc[kw].value == src[kw].value, kw
        assert list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert "AI-GENERATED" in sc.SeriesDescription
        assert row["model_version"] in sc.SeriesDescription
        assert row["predicted_label"] in sc.SeriesDescription
        assert sc.BurnedInAnnotation == "NO"
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        overlay = png_rgb(run.store.get(row["overlay_key"]))
        assert np.array_equal(sc.pixel_array, overlay)
    # dicom3tools' validator: no errors (the SC unit tests cover more source kinds)
    if shutil.which("dciodvfy"):
        from test_secondary_capture import dciodvfy

        for sha, key in run.rendered.sc_keys.items():
            path = tmp_path / f"{sha}.dcm"
            path.write_bytes(run.store.get(key))
            assert dciodvfy(path)[0] == [], key
    # one new series per study, shared by its images in this run
    series = {
        dcmread(io.BytesIO(run.store.get(k))).SeriesInstanceUID
        for k in run.rendered.sc_keys.values()
    }
    assert 1 <= len(series) <= len(run.rendered.sc_keys)


def test_report_input_tolerates_a_bare_run_folder(tmp_path: Path, run: Run) -> None:
    bare = LocalStore(tmp_path)
    prefix = "results/2026-11-28/run-x"
    bare.put(f"{prefix}/predictions.jsonl", run.store.get(f"{PREFIX}/predictions.jsonl"))
    inp = build_report_input(bare, prefix)
    assert (inp.night, inp.run_id) == ("2026-11-28", "run-x")
    assert inp.quarantined == 0
    assert inp.inputs is None
    assert inp.drift is None
    assert inp.model_version == run.inp.rows[0]["model_version"]
    assert ReportInput.from_dict(json.loads(json.dumps(inp.to_dict()))) == inp
    with pytest.raises(ReportError) as exc:
        build_report_input(bare, "results/2026-11-28/none")
    assert exc.value.reason == "missing_predictions"
    with pytest.raises(ReportError) as exc:
        parse_run_prefix("results/last-night/run")
    assert exc.value.reason == "bad_run_prefix"
    # a night where nothing was scored still renders
    empty = ReportInput.from_dict({**inp.to_dict(), "rows": []})
    page = render_html(empty, [], dest_prefix=prefix)
    assert "No study was scored in this run." in page
    assert 'data-key="' not in page
    # a manifest, when present, names the night, model and drift
    bare.put(
        f"{prefix}/manifest.json",
        json.dumps({"model": {"name": "thyroid", "version": "v1"}, "drift": DRIFT}).encode(),
    )
    inp = build_report_input(bare, prefix)
    assert (inp.model_name, inp.model_version, inp.drift) == ("thyroid", "v1", DRIFT)


def test_publish_hook_uses_the_manifest_draft_and_the_published_quarantine(
    run: Run, tmp_path: Path
) -> None:
    from scintiflow.outputs.report import render_run_report

    copy = LocalStore(tmp_path / "bucket")
    gone = run.inp.rows[-1]["key"]  # an export deleted after scoring
    for info in run.store.list(""):
        if info.key.startswith((f"{PREFIX}/sc/", f"{PREFIX}/report")) or info.key == gone:
            continue
        copy.put(info.key, run.store.get(info.key))
    extra = {"key": f"exports/{NIGHT}/site-A/late.dcm", "codes": ["corrupt_pixel_data"]}
    copy.put(f"{PREFIX}/quarantined.jsonl", (json.dumps(extra) + "\n").encode())
    drift = {  # the shape of `scintiflow.pipeline.drift.compare`'s report
        "schema": "scintiflow.pipeline.drift/1",
        "status": "drift",
        "drift": True,
        "drifted_features": ["total_counts"],
        "n_images": 40,
        "features": {
            "total_counts": {
                "psi": 0.412,
                "ks": 0.31,
                "drift": True,
                "thresholds": {"psi": 0.25, "ks": 0.2},
            },
            "matrix": {"psi": 0.01, "drift": False, "thresholds": {"psi": 0.25}},
        },
    }
    draft = {
        "night": str(NIGHT),
        "run_id": RUN_ID,
        "model": {"name": "thyroid", "version": run.inp.model_version},
        "engine": "onnxruntime",
        "drift": drift,
        "counts": {"carried_forward": 3},
    }
    key = render_run_report(copy, PREFIX, draft, browser=None)
    assert key == f"{PREFIX}/report.html"
    page = copy.get(key).decode()
    dom = _parse(page)
    assert len(dom.rows) == len(run.inp.rows)
    assert "drift" in dom.ids
    assert "1 of 2 monitored input statistics" in page
    assert "total_counts: PSI 0.412 (limit 0.25), KS 0.31 (limit 0.2)" in page
    assert dom.reasons["corrupt_pixel_data"] == 1
    assert re.search(rf'id="count-quarantined">\s*<div class="n">{run.inp.quarantined + 1}<', page)
    assert re.search(r'id="count-carried">\s*<div class="n">3<', page)
    # the deleted export: its row stays, without identifiers or scan, and gets no SC
    assert len(list(copy.list(f"{PREFIX}/sc/"))) == len(run.inp.rows) - 1
    assert page.count('<span class="badge b-err">source_unavailable</span>') == 1
    assert page.count("identifiers unavailable") == 1
    assert len(dom.imgs) == 2 * len(run.inp.rows) - 1  # a placeholder, not a broken image
    assert not copy.exists(f"{PREFIX}/report.pdf")  # browser=None: no PDF


@pytest.mark.s3
def test_renders_on_s3(run: Run, s3_endpoint: str, s3_bucket: str) -> None:
    from scintiflow.storage import S3Store

    s3 = S3Store(s3_bucket, "site", endpoint_url=s3_endpoint, max_attempts=2)
    wanted = {f"{PREFIX}/predictions.jsonl", f"{PREFIX}/predictions.csv"}
    for row in run.inp.rows:
        wanted |= {row["key"], row["overlay_key"]}
    for key in sorted(wanted):
        s3.put(key, run.store.get(key))
    inp = build_report_input(s3, PREFIX)
    out = render_report(s3, inp, browser=None, workers=2)
    page = s3.get(out.html_key).decode()
    assert [r["data-key"] for r in _parse(page).rows] == [
        r["key"] for r in worklist_order(run.inp.rows)
    ]
    assert SENTINEL_PATIENT_ID in page
    assert out.problems == {}
    assert sorted(o.key for o in s3.list(f"{PREFIX}/sc/")) == sorted(out.sc_keys.values())


def test_worklist_order_ranks_abnormal_then_low_confidence() -> None:
    rows = [
        {"key": "a", "predicted_label": "normal", "low_confidence": False, "p_normal": 0.9},
        {"key": "b", "predicted_label": "normal", "low_confidence": True, "p_normal": 0.5},
        {"key": "c", "predicted_label": "graves", "low_confidence": True, "p_normal": 0.3},
        {"key": "d", "predicted_label": "thyroid_tumor", "low_confidence": False, "p_normal": 0.1},
    ]
    assert [r["key"] for r in worklist_order(rows)] == ["d", "c", "b", "a"]


def test_missing_browser_fails_the_pdf_with_a_reason_and_keeps_the_html(run: Run) -> None:
    dest = f"{PREFIX}/no-browser"
    out = render_report(
        run.store,
        run.inp,
        dest_prefix=dest,
        browser="/nonexistent/chromium",
        secondary_capture=False,
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
def test_browser_dom_rows_order_and_no_broken_images(run: Run, tmp_path: Path) -> None:
    report = _local_copy(run)
    dom = _parse(dump_dom(report))
    expected = [r["key"] for r in worklist_order(run.inp.rows)]
    assert [r["data-key"] for r in dom.rows] == expected
    assert dom.scripts == 0  # nothing from the data became a script element
    assert XSS_NAME in "".join(dom.text)
    # every image resolves: a copy of the page with a probe script marks each after load
    probed = report.with_name("probe.html")
    page = report.read_text(encoding="utf-8")
    probed.write_text(page.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    imgs = _parse(dump_dom(probed)).imgs
    assert len(imgs) == 2 * len(expected)  # scan + overlay per row
    assert [i.get("data-probe") for i in imgs] == ["ok"] * len(imgs)
    # the probe does see a broken image
    broken = report.with_name("broken.html")
    first_src = re.search(r'<img src="([^"]+)"', page)
    assert first_src is not None
    broken.write_text(
        page.replace(first_src.group(1), "missing.png", 1).replace("</body>", _PROBE + "</body>"),
        encoding="utf-8",
    )
    states = [i.get("data-probe") for i in _parse(dump_dom(broken)).imgs]
    assert states.count("broken") == 1
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
    colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
    assert rgb.std() > 10
    assert colours > 50
    print(f"report screenshot: {png}")


@pytest.mark.browser
@has_browser
def test_pdf_exists_with_pages(run: Run) -> None:
    assert run.rendered.pdf_error is None
    assert run.rendered.pdf_key == f"{PREFIX}/report.pdf"
    data = run.store.get(run.rendered.pdf_key)
    assert data.startswith(b"%PDF-")
    assert pdf_page_count(data) >= 1
    assert set(run.rendered.keys) >= {"report.html", "report.pdf"}


# --------------------------------------------------------------------------------------------
# CLI


@pytest.mark.browser
@has_browser
def test_cli_rerenders_a_finished_run(run: Run, tmp_path: Path) -> None:
    from scintiflow.cli import app
    from scintiflow.settings import get_settings

    copy = tmp_path / "bucket"
    shutil.copytree(run.root, copy)
    folder = copy.joinpath(*PREFIX.split("/"))
    for name in ("report.html", "report.pdf"):
        (folder / name).unlink()
    shutil.rmtree(folder / "sc")
    get_settings.cache_clear()
    result = CliRunner().invoke(
        app, ["report", "--run", f"{copy}/{PREFIX}"], env={"COLUMNS": "240"}
    )
    assert result.exit_code == 0, result.output
    assert (folder / "report.html").is_file()
    assert (folder / "report.pdf").is_file()
    assert len(list((folder / "sc").glob("*.dcm"))) == len(run.inp.rows)
    assert (folder / "report.html").as_uri() in result.output
    assert not [s for s in PHI_SENTINELS if s in result.output]
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert [r["data-key"] for r in _parse(page).rows] == [
        r["key"] for r in worklist_order(run.inp.rows)
    ]


def test_cli_renders_beside_a_published_report(run: Run, tmp_path: Path) -> None:
    """A run with a manifest keeps its published (hashed) report; the new one goes beside."""
    from scintiflow.cli import app
    from scintiflow.cli.report import RERENDERED_DIR
    from scintiflow.settings import get_settings

    copy = tmp_path / "bucket"
    shutil.copytree(run.root, copy)
    folder = copy.joinpath(*PREFIX.split("/"))
    (folder / "manifest.json").write_text(
        json.dumps({"night": str(NIGHT), "run_id": RUN_ID, "complete": True})
    )
    published = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    get_settings.cache_clear()
    result = CliRunner().invoke(
        app, ["report", "--run", f"{copy}/{PREFIX}", "--no-pdf"], env={"COLUMNS": "240"}
    )
    assert result.exit_code == 0, result.output
    assert {p: p.read_bytes() for p in published} == published  # nothing published changed
    beside = folder / RERENDERED_DIR
    assert (beside / "report.html").as_uri() in result.output
    assert len(list((beside / "sc").glob("*.dcm"))) == len(run.inp.rows)
    page = (beside / "report.html").read_text(encoding="utf-8")
    assert len(_parse(page).rows) == len(run.inp.rows)


def test_cli_rejects_a_url_that_is_not_a_run_folder(tmp_path: Path) -> None:
    from scintiflow.cli import app

    result = CliRunner().invoke(app, ["report", "--run", str(tmp_path / "nothing")])
    assert result.exit_code != 0
    assert "results/<YYYY-MM-DD>/<run_id>" in result.output
