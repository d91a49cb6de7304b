"""`check`: the night's data checks (Great Expectations), their reason counts and outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from scintiflow.cli.console import make_console, open_url, progress_bar
from scintiflow.cli.options import NightOpt, parse_night

if TYPE_CHECKING:
    from datetime import date

    from rich.console import Console

    from scintiflow.checks.run import ChecksSummary
    from scintiflow.storage import ObjectStore


def _check_run(
    source: ObjectStore, dest: ObjectStore, console: Console, *, night: date, workers: int = 0
) -> ChecksSummary:
    """Run the data checks of one night with a progress bar; `ChecksSummary` back."""
    from scintiflow.checks.run import run_checks
    from scintiflow.settings import get_settings

    with progress_bar(console) as progress:
        task = progress.add_task("checking", total=None)
        return run_checks(
            source,
            night=night,
            dest_store=dest,
            workers=workers,
            settings=get_settings(),
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )


def _check_print(summary: ChecksSummary, console: Console) -> None:
    """The reason-count table and where the data docs, checks.json and quarantine went."""
    from rich.table import Table

    from scintiflow.checks.reasons import REASONS, severity

    table = Table(title=f"data checks, night {summary.night}: {summary.inputs} files")
    table.add_column("reason code", no_wrap=True)
    table.add_column("severity")
    table.add_column("files", justify="right")
    table.add_column("meaning", overflow="fold")
    order = sorted(summary.reason_counts.items(), key=lambda kv: (severity(kv[0]), -kv[1], kv[0]))
    for code, count in order:
        sev = severity(code)
        colour = "red" if sev == "reject" else "yellow"
        table.add_row(
            code, f"[{colour}]{sev}[/{colour}]", str(count), REASONS.get(code, ("", ""))[1]
        )
    console.print(table)
    console.print(
        f"accepted {len(summary.accepted)} (of which {len(summary.warned)} with warnings), "
        f"quarantined {len(summary.quarantined)}, not read {len(summary.not_read)}, "
        f"inputs {summary.inputs}"
    )
    if summary.not_read:
        console.print(
            f"[red]not read:[/red] {len(summary.not_read)} files (storage errors, listed in "
            "checks.json under not_read; not quarantined: run the check again)"
        )
    console.print(f"data docs:   {summary.docs_url}")
    console.print(f"checks.json: {summary.checks_url}")
    console.print(f"quarantine:  {summary.quarantine_url}")


def check(
    input_url: Annotated[
        str, typer.Option("--input", help="Store URL holding exports/<night>/.")
    ] = "./scintiflow-data",
    out: Annotated[
        str | None,
        typer.Option("--out", help="Store URL for results/ and quarantine/ (default: --input)."),
    ] = None,
    night: NightOpt = None,
    workers: Annotated[int, typer.Option(min=0, help="Decode threads (0: settings).")] = 0,
) -> None:
    """Run the data checks (Great Expectations) on a night and quarantine bad files.

    Exits 0 when the run completes, also when files were quarantined (normal operation);
    3 when files could not be read (storage errors: not a property of the file); 1 when the
    run itself failed.
    """
    from scintiflow.checks.suite import ChecksError
    from scintiflow.storage import StoreError

    console = make_console()
    source = open_url(input_url)
    dest = open_url(out) if out is not None else source
    day = parse_night(night)
    try:
        summary = _check_run(source, dest, console, night=day, workers=workers)
    except (StoreError, ChecksError) as exc:
        console.print(f"[red]scintiflow check failed:[/red] {exc}")
        raise typer.Exit(code=1) from None
    _check_print(summary, console)
    if summary.not_read:
        raise typer.Exit(code=3)
