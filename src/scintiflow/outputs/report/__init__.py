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

The package: `inputs` (the PHI-free `ReportInput` and the worklist order), `identifiers`
(identifiers and thumbnails from the original objects), `studies` (one worklist row while
rendering, its Secondary Capture), `page` (the template), `browser` (headless Chromium),
`render` (the step itself), `reasons` (names, limits and reason codes).
"""

from scintiflow.outputs.report.browser import (
    BROWSER_FLAGS,
    dump_dom,
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
from scintiflow.outputs.report.page import render_html
from scintiflow.outputs.report.reasons import (
    DEFAULT_BROWSER,
    DISCLAIMER,
    REPORT_REASONS,
    ReportError,
)
from scintiflow.outputs.report.render import (
    RenderedReport,
    pdf_page_count,
    render_report,
    render_run_report,
)

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
