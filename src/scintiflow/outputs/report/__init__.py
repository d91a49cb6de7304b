"""The clinician's nightly report: one page per run, `report.html` and `report.pdf`.

    inp = build_report_input(draft, rows, prefix=prefix, carried_rows=..., quarantined=...,
                             checks=checks, drift=drift)      # PHI-free, reads nothing
    out = render_report(results, inp, dest_prefix=prefix, source=exports)

The report is its own step. It reads each export's DICOM header only (ranged reads that stop
before Pixel Data) for the identifiers, and the shard's thumbnails; it decodes no pixel data
and writes no DICOM (the shard writes the Secondary Captures; the page links them).

| module | what |
|---|---|
| `reasons` | `REPORT_REASONS`, `ReportError` |
| `inputs` | `ReportInput`, `build_report_input`, the worklist order |
| `identifiers` | `Identifiers` from a DICOM header |
| `page` | `page_chunks`, `render_html`, the Jinja2 template (`templates/report.html.j2`) |
| `browser` | headless Chromium: PDF, screenshot, DOM; the PDF time limit |
| `render` | `render_report` (the page streamed to a file), `RenderedReport` |
"""

from scintiflow.outputs.report.browser import (
    BROWSER_FLAGS,
    DEFAULT_BROWSER,
    dump_dom,
    pdf_page_count,
    pdf_timeout,
    print_pdf,
    run_browser,
    screenshot,
)
from scintiflow.outputs.report.identifiers import Identifiers, read_identifiers
from scintiflow.outputs.report.inputs import (
    ReportInput,
    build_report_input,
    drift_flagged,
    parse_run_prefix,
    priority,
    worklist_order,
)
from scintiflow.outputs.report.page import DISCLAIMER, Study, render_html
from scintiflow.outputs.report.reasons import REPORT_REASONS, ReportError
from scintiflow.outputs.report.render import HEADER_FIRST_BYTES, RenderedReport, render_report

__all__ = [
    "BROWSER_FLAGS",
    "DEFAULT_BROWSER",
    "DISCLAIMER",
    "HEADER_FIRST_BYTES",
    "REPORT_REASONS",
    "Identifiers",
    "RenderedReport",
    "ReportError",
    "ReportInput",
    "Study",
    "build_report_input",
    "drift_flagged",
    "dump_dom",
    "parse_run_prefix",
    "pdf_page_count",
    "pdf_timeout",
    "print_pdf",
    "priority",
    "read_identifiers",
    "render_html",
    "render_report",
    "run_browser",
    "screenshot",
    "worklist_order",
]
