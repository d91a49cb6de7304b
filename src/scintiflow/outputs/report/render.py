"""Render a run's report: `report.html` and `report.pdf`, and nothing else.

    out = render_report(results, inp, dest_prefix=prefix, source=exports)

Reads, per study, the DICOM header of the original export (ranged reads that stop before
Pixel Data: `scintiflow.ingest.headers.read_header`) for the identifiers, and the two small
thumbnails the shard wrote (`thumbs/<sha256>.scan.jpg` / `.overlay.jpg`) from the results
store. No pixel data is fetched or decoded here, and no DICOM object is written: the shard
writes the Secondary Captures and the page links each row's `sc_key`. Identifiers exist only
while the page is built and go into `report.html` / `report.pdf`, never into logs or keys.
"""

from __future__ import annotations

import base64
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from scintiflow.outputs.report.browser import DEFAULT_BROWSER, pdf_timeout, print_pdf
from scintiflow.outputs.report.identifiers import read_identifiers
from scintiflow.outputs.report.inputs import ReportInput, worklist_order
from scintiflow.outputs.report.page import Study, page_chunks
from scintiflow.outputs.report.reasons import ReportError
from scintiflow.storage import ObjectStore, StoreError, layout
from scintiflow.storage.jsonio import put_from_file

log = logging.getLogger(__name__)

PDF_MAX_STUDIES = 2000
"""Worklist rows in `report.pdf` at most (the first, in worklist order; `report.html` lists
every study): headless Chromium wrote no PDF for a 10,000-study page, and printed 5,000."""
GATHER_BLOCK = 64
"""Studies whose identifiers and thumbnails are read ahead of the page being written."""
HEADER_FIRST_BYTES = 8192
"""The first ranged read of each export's header: scintigraphy headers are 1-4 KiB."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


@dataclass(frozen=True)
class RenderedReport:
    """What `render_report` wrote and what it could not do (no identifiers).

    `written` maps every key it wrote to the SHA-256 of the bytes, so the publish step can
    verify them without reading them back.
    """

    html_key: str
    pdf_key: str | None
    studies: int
    pdf_error: str | None = None  # a `REPORT_REASONS` code when the PDF step failed
    pdf_studies: int = 0  # worklist rows the PDF lists (all, or the first `pdf_max_studies`)
    problems: dict[str, int] = field(default_factory=dict)  # reason code -> studies
    written: dict[str, str] = field(default_factory=dict)  # key -> sha256


def _png_uri(results: ObjectStore, key: str) -> str | None:
    """A thumbnail (JPEG, as the shard writes them, or PNG) as a data URI; None when it is
    missing or neither."""
    if not key:
        return None
    try:
        data = results.get(key)
    except StoreError:
        return None
    if data.startswith(PNG_SIGNATURE):
        mime = "image/png"
    elif data.startswith(JPEG_SIGNATURE):
        mime = "image/jpeg"
    else:
        return None
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _gather(source: ObjectStore, results: ObjectStore, study: Study) -> None:
    """The study's identifiers (header only) and thumbnails (the shard's JPEGs)."""
    from scintiflow.ingest.headers import read_header

    row = study.row
    study.problems = []
    try:
        header = read_header(source, str(row["key"]), first=HEADER_FIRST_BYTES)
    except StoreError:
        study.problems.append("source_unavailable")
    except Exception:  # a header pydicom cannot read: its message may quote tag values
        study.problems.append("source_unreadable")
    else:
        study.identifiers = read_identifiers(header)
    study.scan_uri = _png_uri(results, str(row.get("scan_thumbnail_key") or ""))
    study.overlay_uri = _png_uri(results, str(row.get("overlay_thumbnail_key") or ""))
    if study.scan_uri is None or study.overlay_uri is None:
        study.problems.append("thumbnail_unavailable")
    if not row.get("sc_key"):
        study.problems.append("sc_failed")


def _block_filler(
    source: ObjectStore, results: ObjectStore, pool: ThreadPoolExecutor
) -> Callable[[Sequence[Study]], Iterator[Study]]:
    """`page_chunks`'s `fill`: each study's identifiers and thumbnails, read by the pool one
    block of `GATHER_BLOCK` ahead of the page, and dropped once the page has its row."""

    def fill(studies: Sequence[Study]) -> Iterator[Study]:
        blocks = [studies[i : i + GATHER_BLOCK] for i in range(0, len(studies), GATHER_BLOCK)]

        def start(block: Sequence[Study]) -> list[Future[None]]:
            return [pool.submit(_gather, source, results, s) for s in block]

        ahead = start(blocks[0]) if blocks else []
        for n, block in enumerate(blocks):
            current, ahead = ahead, start(blocks[n + 1]) if n + 1 < len(blocks) else []
            for study, done in zip(block, current, strict=True):
                done.result()
                yield study
                study.identifiers = None  # identifiers and images live only while their
                study.scan_uri = study.overlay_uri = None  # row is being written

    return fill


def _write_page(path: Path, chunks: Iterable[str]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(chunks)


def render_report(
    results: ObjectStore,
    inp: ReportInput,
    *,
    dest_prefix: str,
    source: ObjectStore,
    browser: str | os.PathLike[str] | None = DEFAULT_BROWSER,
    pdf_timeout_s: float | None = None,
    workers: int | None = None,
    pdf_max_studies: int = PDF_MAX_STUDIES,
) -> RenderedReport:
    """Write `report.html` and `report.pdf` under `dest_prefix` in `results`.

    `source` holds the original exports (headers only are read); `results` the shards'
    thumbnails and the outputs. `browser=None` skips the PDF; `pdf_timeout_s=None` scales the
    limit with the studies (`browser.pdf_timeout`). A failed PDF is logged with its reason
    code and returned in `pdf_error`; the HTML is written first, so it exists either way.
    A night of more than `pdf_max_studies` studies gets a PDF of the first that many rows.

    Memory does not grow with the night: the page is written to a private temp folder while
    Jinja2 renders it, each row's identifiers and thumbnails are read a block ahead and
    dropped once written, and both files are streamed to the store (`put_file`).
    """
    dest = dest_prefix.strip("/")
    ordered = worklist_order([*inp.rows, *inp.carried_rows])
    studies = [Study(row=r, rank=i + 1) for i, r in enumerate(ordered)]
    n_workers = workers or min(8, os.cpu_count() or 1)
    in_pdf = min(len(studies), max(1, pdf_max_studies))
    with (
        ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="report") as pool,
        tempfile.TemporaryDirectory(prefix="scintiflow-report-") as tmp,  # holds PHI
    ):
        fill = _block_filler(source, results, pool)
        html_path = Path(tmp) / layout.REPORT_HTML
        _write_page(html_path, page_chunks(inp, studies, dest_prefix=dest, fill=fill))
        html = put_from_file(results, f"{dest}/{layout.REPORT_HTML}", html_path)
        written = {html.key: html.sha256}
        problems = Counter(p for s in studies for p in s.problems)
        printed = html_path
        if in_pdf < len(studies) and browser is not None:
            printed = Path(tmp) / f"first-{in_pdf}-{layout.REPORT_HTML}"
            chunks = page_chunks(inp, studies, dest_prefix=dest, limit=in_pdf, fill=fill)
            _write_page(printed, chunks)
        pdf_key, pdf_error = _pdf(results, printed, dest, browser, pdf_timeout_s, in_pdf)
    if pdf_key is not None:
        written[pdf_key[0]] = pdf_key[1]
    log.info(
        "report: %d studies, pdf %s, problems %s",
        len(studies),
        "written" if pdf_key else (pdf_error or "skipped"),
        dict(problems) or "none",
    )
    return RenderedReport(
        html_key=html.key,
        pdf_key=pdf_key[0] if pdf_key else None,
        studies=len(studies),
        pdf_error=pdf_error,
        pdf_studies=in_pdf if pdf_key is not None else 0,
        problems=dict(sorted(problems.items())),
        written=written,
    )


def _pdf(
    results: ObjectStore,
    page: Path,
    dest: str,
    browser: str | os.PathLike[str] | None,
    timeout_s: float | None,
    studies: int,
) -> tuple[tuple[str, str] | None, str | None]:
    """Print the page file (in the private temp folder) and store the PDF: ((key, sha256),
    None), or (None, reason code); (None, None) when skipped."""
    if browser is None:
        return None, None
    timeout = pdf_timeout(studies) if timeout_s is None else timeout_s
    pdf_path = page.with_name(layout.REPORT_PDF)
    try:
        print_pdf(page, pdf_path, browser=browser, timeout_s=timeout)
        w = put_from_file(results, f"{dest}/{layout.REPORT_PDF}", pdf_path)
        return (w.key, w.sha256), None
    except ReportError as exc:
        log.warning("report: PDF not written (%s): %s", exc.reason, exc)
        return None, exc.reason


__all__ = ["HEADER_FIRST_BYTES", "RenderedReport", "render_report"]
