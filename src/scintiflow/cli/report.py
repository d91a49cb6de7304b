"""`report`: re-render the clinician report of a finished run from its files."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scintiflow.cli.console import make_console, open_url

if TYPE_CHECKING:
    from rich.console import Console

    from scintiflow.outputs.report import RenderedReport, ReportInput
    from scintiflow.storage import ObjectStore

RERENDERED_DIR = "rerendered"
"""Where `scintiflow report` writes when the run already has a manifest."""


def _report_run_ref(run: str) -> tuple[str, str]:
    """(store URL, run prefix) from a run folder URL `<store>/<results prefix>/<night>/<run_id>`."""
    from scintiflow.settings import get_settings

    results = get_settings().prefixes.results.strip("/")
    base, _, run_id = run.rstrip("/").rpartition("/")
    base, _, night = base.rpartition("/")
    hint = f"a run URL must end in /{results}/<YYYY-MM-DD>/<run_id>"
    if base == results:
        store_url = "."
    elif results and base.endswith("/" + results):
        store_url = base[: -len(results) - 1] or "/"
    else:
        raise typer.BadParameter(hint, param_hint="--run")
    try:
        date.fromisoformat(night)
    except ValueError:
        raise typer.BadParameter(hint, param_hint="--run") from None
    if not run_id:
        raise typer.BadParameter(hint, param_hint="--run")
    return store_url, f"{results}/{night}/{run_id}"


def read_run_folder(
    store: ObjectStore, prefix: str, *, model_name: str | None = None
) -> ReportInput:
    """A finished run folder's `ReportInput`: its predictions, manifest (when written),
    checks document, quarantined list and the rows it carries forward from earlier runs."""
    from scintiflow.outputs.publish import carried_rows
    from scintiflow.outputs.report import ReportError, build_report_input
    from scintiflow.storage import layout
    from scintiflow.storage.jsonio import read_json_or_none, read_jsonl

    def _get(read: Any, name: str) -> Any:
        try:
            return read(store, f"{prefix}/{name}")
        except ValueError:
            raise ReportError(f"{name} is not valid JSON", reason="bad_run_file") from None

    if not store.exists(f"{prefix}/{layout.PREDICTIONS_JSONL}"):
        raise ReportError(
            f"no {layout.PREDICTIONS_JSONL} under {prefix}", reason="missing_predictions"
        )
    manifest = _get(read_json_or_none, layout.MANIFEST) or {}
    carried = [{**r, "reported_in": run} for run, r in carried_rows(store, manifest)]
    return build_report_input(
        manifest,
        _get(read_jsonl, layout.PREDICTIONS_JSONL),
        prefix=prefix,
        carried_rows=carried,
        quarantined=_get(read_jsonl, layout.QUARANTINED_JSONL),
        checks=_get(read_json_or_none, layout.CHECKS_JSON),
        model_name=model_name,
    )


def _report_screenshot(store: ObjectStore, html_key: str, out: Path, browser: str) -> None:
    """Save a PNG screenshot of the rendered page (it holds identifiers: a local file only)."""
    import tempfile

    from scintiflow.outputs.report import screenshot

    with tempfile.TemporaryDirectory(prefix="scintiflow-shot-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_bytes(store.get(html_key))
        out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(page, out, browser=browser)


def _report_print(
    console: Console,
    store: ObjectStore,
    inp: ReportInput,
    out: RenderedReport,
    *,
    dest: str,
    published: bool,
    screenshot: Path | None,
) -> None:
    """The run's study counts, its problems and where each rendered file went."""
    console.print(
        f"report of night {inp.night}, run {inp.run_id}: {out.studies} studies, "
        f"{inp.quarantined} quarantined",
        markup=False,
        highlight=False,
    )
    for code, n in sorted(out.problems.items()):
        console.print(f"  {n} studies: {code}", markup=False, highlight=False)
    console.print(f"report.html: {store.url_for(out.html_key)}", markup=False)
    if out.pdf_key:
        console.print(f"report.pdf:  {store.url_for(out.pdf_key)}", markup=False)
    if published:
        console.print(
            f"the run is published (manifest.json): this rendering is in {RERENDERED_DIR}/, "
            "the published report is unchanged",
            markup=False,
        )
    if screenshot is not None:
        console.print(f"screenshot:  {screenshot.resolve()}", markup=False)


def report(
    run: Annotated[
        str,
        typer.Option(
            "--run", help="URL of a finished run folder: <store>/results/<night>/<run_id>."
        ),
    ],
    source: Annotated[
        str | None,
        typer.Option(
            help="Store URL holding the original exports (default: the manifest's, else the "
            "run's store)."
        ),
    ] = None,
    pdf: Annotated[bool, typer.Option("--pdf/--no-pdf", help="Print report.pdf.")] = True,
    browser: Annotated[
        str, typer.Option(help="Headless Chromium used for the PDF and screenshots.")
    ] = "/usr/bin/chromium",
    screenshot: Annotated[
        Path | None,
        typer.Option("--screenshot", help="Also save a PNG screenshot of the report here."),
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Model name for the header (default: the manifest's).")
    ] = None,
) -> None:
    """Re-render the clinician report of a finished run from its files (manifest when present):
    report.html and report.pdf (the scoring step's DICOM Secondary Captures are linked)."""
    from scintiflow.outputs.report import ReportError, render_report
    from scintiflow.storage import StoreError

    console = make_console()
    store_url, prefix = _report_run_ref(run)
    store = open_url(store_url)
    # A published run's manifest holds the hashes of its report files: a new rendering goes
    # beside them, so the published run stays verifiable.
    published = store.exists(f"{prefix}/manifest.json")
    dest = f"{prefix}/{RERENDERED_DIR}" if published else prefix
    try:
        inp = read_run_folder(store, prefix, model_name=model_name)
        source_url = source or inp.source_url
        out = render_report(
            store,
            inp,
            dest_prefix=dest,
            source=open_url(source_url) if source_url else store,
            browser=browser if pdf else None,
        )
        if screenshot is not None:
            _report_screenshot(store, out.html_key, screenshot, browser)
    except (ReportError, StoreError) as exc:
        console.print(f"scintiflow report failed ({exc.reason}): {exc}", markup=False)
        raise typer.Exit(code=1) from None
    _report_print(console, store, inp, out, dest=dest, published=published, screenshot=screenshot)
    if out.pdf_error:
        console.print(
            f"report.pdf not written ({out.pdf_error}); report.html is complete", markup=False
        )
        raise typer.Exit(code=1)
