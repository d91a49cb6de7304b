"""Write a run's `report.html`, `report.pdf` and Secondary Captures into its folder."""

from __future__ import annotations

import logging
import os
import posixpath
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scintiflow.outputs.report.browser import print_pdf
from scintiflow.outputs.report.inputs import ReportInput, build_report_input, worklist_order
from scintiflow.outputs.report.page import relative_key, render_html
from scintiflow.outputs.report.reasons import DEFAULT_BROWSER, ReportError
from scintiflow.outputs.report.studies import Study, gather_study, write_sc
from scintiflow.storage import ObjectStore
from scintiflow.storage.layout import REPORT_HTML, REPORT_PDF

log = logging.getLogger(__name__)


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
        return {relative_key(k, base): k for k in written}


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
    studies = [Study(row=r, rank=i + 1) for i, r in enumerate(ordered)]
    new = [s for s in studies if not s.row.get("reported_in")]
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="report") as pool:
        list(pool.map(lambda s: gather_study(source, store, s, view), studies))
        if secondary_capture:
            numbers = _instance_numbers(new)
            keys = pool.map(lambda s: write_sc(store, s, inp, dest, numbers.get(id(s), 1)), new)
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


def _instance_numbers(studies: Sequence[Study]) -> dict[int, int]:
    """Instance Number per study object: 1.. within each source study, in key order."""
    by_study: dict[str, list[Study]] = {}
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
