"""`scintiflow ...`: the command line. Every verb takes URLs and prints where its outputs went.

Heavy imports (numpy, pydicom, boto3, torch) happen inside the commands, so `--help` is instant.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from scintiflow.ingest import DecodedObject
    from scintiflow.phantom import NightSummary
    from scintiflow.storage import ObjectStore

app = typer.Typer(
    name="scintiflow",
    help="Nightly thyroid scintigraphy: check, score, explain and report. All paths are URLs: "
    "a folder, file://..., or s3://bucket/prefix.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OutUrl = Annotated[str, typer.Option("--out", help="Store URL to write to.")]
NightOpt = Annotated[
    str | None, typer.Option("--night", help="Night as YYYY-MM-DD (default: today).")
]


def main() -> None:
    """Console-script entry point."""
    app()


def _console() -> Console:
    import sys

    from rich.console import Console

    # Piped output (CI logs, `make demo | tee`) gets a wide table instead of rich's 80 columns.
    return Console(width=None if sys.stdout.isatty() else 160)


def _progress(console: Console) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _parse_night(night: str | None) -> date:
    if night is None:
        return date.today()
    try:
        return date.fromisoformat(night)
    except ValueError:
        raise typer.BadParameter(
            f"{night!r} is not a YYYY-MM-DD date", param_hint="--night"
        ) from None


def _open(url: str) -> ObjectStore:
    from scintiflow.storage import StoreError, open_store

    try:
        return open_store(url)
    except StoreError as exc:
        raise typer.BadParameter(str(exc)) from None


def _simulate(
    store: ObjectStore,
    console: Console,
    *,
    night: date,
    n: int,
    sites: list[str],
    seed: int,
    bad_fraction: float,
    difficulty: float,
    phi_sentinel: bool,
) -> NightSummary:
    from scintiflow.phantom import write_night
    from scintiflow.settings import get_settings

    prefixes = get_settings().prefixes
    with _progress(console) as progress:
        task = progress.add_task("simulating", total=None)
        return write_night(
            store,
            night=night,
            n=n,
            sites=sites,
            seed=seed,
            bad_fraction=bad_fraction,
            difficulty=difficulty,
            phi_sentinel=phi_sentinel,
            exports_prefix=prefixes.exports,
            labels_prefix=prefixes.labels,
            progress=lambda done: progress.update(task, completed=done),
        )


@app.command()
def simulate(
    out: OutUrl = "./scintiflow-data",
    n: Annotated[int, typer.Option("--n", min=1, help="Good images to simulate.")] = 40,
    sites: Annotated[str, typer.Option(help="Comma-separated site profiles.")] = "A,B",
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    bad_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of broken or foreign files.")
    ] = 0.0,
    difficulty: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    night: NightOpt = None,
    phi_sentinel: Annotated[
        bool, typer.Option(help="Write fixed sentinel identifiers (for PHI leak tests).")
    ] = False,
) -> None:
    """Simulate a night of thyroid scintigraphy exports (DICOM NM) plus a labels CSV."""
    from scintiflow.phantom import SITES

    site_list = [s.strip() for s in sites.split(",") if s.strip()]
    unknown = sorted(set(site_list) - set(SITES))
    if unknown:
        raise typer.BadParameter(
            f"unknown site(s) {unknown}; known: {sorted(SITES)}", param_hint="--sites"
        )
    console = _console()
    store = _open(out)
    day = _parse_night(night)
    summary = _simulate(
        store,
        console,
        night=day,
        n=n,
        sites=site_list,
        seed=seed,
        bad_fraction=bad_fraction,
        difficulty=difficulty,
        phi_sentinel=phi_sentinel,
    )
    console.print(
        f"wrote {summary.images} images and {summary.faults} faulty files "
        f"for night {day.isoformat()}"
    )
    console.print(f"exports: {store.url_for(summary.exports_prefix.rstrip('/'))}")
    console.print(f"labels:  {store.url_for(summary.labels_key)}")
    if summary.faults:
        console.print(f"faults:  {store.url_for(summary.faults_key)}")


def _decode_listing(store: ObjectStore, prefix: str, console: Console) -> list[DecodedObject]:
    from scintiflow.ingest import decode_objects
    from scintiflow.settings import get_settings

    settings = get_settings()
    keys = [o.key for o in store.list(prefix)]
    results: list[DecodedObject] = []
    with _progress(console) as progress:
        task = progress.add_task("decoding", total=len(keys))
        for item in decode_objects(
            store,
            keys,
            workers=settings.decode_workers,
            preferred_view=settings.preferred_view,
            patient_hash_key=settings.phi_hash_key.get_secret_value().encode(),
        ):
            results.append(item)
            progress.advance(task)
    return results


def _print_listing(
    results: list[DecodedObject], console: Console, *, prefix: str, limit: int
) -> None:
    from rich.table import Table

    table = Table(title=f"{len(results)} objects under {prefix or '/'}", show_lines=False)
    table.add_column("key", no_wrap=True)
    for col in (
        "status",
        "modality",
        "matrix",
        "spacing mm",
        "kcounts",
        "view",
        "radiopharmaceutical",
    ):
        table.add_column(col, overflow="fold")
    for item in results[:limit]:
        rec = item.record
        if rec is None:
            table.add_row(
                item.key.removeprefix(prefix), f"[red]{item.reason}[/red]", "", "", "", "", "", ""
            )
            continue
        spacing = (
            ""
            if rec.pixel_spacing_mm is None
            else f"{rec.pixel_spacing_mm[0]:.2f}x{rec.pixel_spacing_mm[1]:.2f}"
        )
        table.add_row(
            item.key.removeprefix(prefix),
            "[green]ok[/green]",
            rec.modality,
            f"{rec.rows}x{rec.cols}",
            spacing,
            f"{rec.total_counts / 1000:.0f}",
            rec.view or "",
            rec.radiopharmaceutical or "",
        )
    console.print(table)
    if len(results) > limit:
        console.print(f"... {len(results) - limit} more rows (raise --limit to see them)")
    outcome = Counter(item.reason or "ok" for item in results)
    console.print("outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(outcome.items())))


@app.command("ls")
def ls(
    url: Annotated[str, typer.Argument(help="Store URL.")] = "./scintiflow-data",
    prefix: Annotated[
        str, typer.Option(help="Key prefix to list, e.g. exports/2026-11-27/.")
    ] = "exports/",
    limit: Annotated[int, typer.Option(help="Rows to print.")] = 50,
) -> None:
    """Decode every object under a prefix and tabulate it (no patient identifiers shown)."""
    console = _console()
    store = _open(url)
    results = _decode_listing(store, prefix, console)
    _print_listing(results, console, prefix=prefix, limit=limit)
    console.print(f"listed: {store.url_for(prefix.rstrip('/')) if prefix else store.url}")


@app.command()
def montage(
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path(
        "docs/montage.png"
    ),
    per_class: Annotated[int, typer.Option(min=1, max=12)] = 4,
    seed: int = 0,
) -> None:
    """Render a montage of simulated scans, one row per class."""
    from scintiflow.phantom import render_montage

    out.parent.mkdir(parents=True, exist_ok=True)
    render_montage(per_class=per_class, seed=seed).save(out, optimize=True)
    _console().print(f"montage: {out.resolve()}")


@app.command()
def demo(
    out: OutUrl = "./scintiflow-demo",
    n: Annotated[int, typer.Option("--n", min=1)] = 24,
    night: NightOpt = "2026-11-27",
    seed: int = 7,
) -> None:
    """Run the main job on embedded defaults: simulate a night with faults, then decode it."""
    console = _console()
    store = _open(out)
    day = _parse_night(night)
    summary = _simulate(
        store,
        console,
        night=day,
        n=n,
        sites=["A", "B", "C"],
        seed=seed,
        bad_fraction=0.2,
        difficulty=0.5,
        phi_sentinel=False,
    )
    prefix = summary.exports_prefix.rstrip("/") + "/"
    results = _decode_listing(store, prefix, console)
    _print_listing(results, console, prefix=prefix, limit=len(results))
    console.print(f"\nexports: {store.url_for(summary.exports_prefix.rstrip('/'))}")
    console.print(f"labels:  {store.url_for(summary.labels_key)}")
    console.print(f"faults:  {store.url_for(summary.faults_key)}")


def _not_yet(verb: str, issue: str) -> None:
    _console().print(f"scintiflow {verb}: not yet available (arrives with {issue}).")
    raise typer.Exit(code=2)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def check() -> None:
    """Run the data checks (Great Expectations) and quarantine bad files. [not yet available]"""
    _not_yet("check", "[F2]")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train() -> None:
    """Train and cross-validate models. [not yet available]"""
    _not_yet("train", "[F3]")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def score() -> None:
    """Score images with a model version and draw Grad-CAM heatmaps. [not yet available]"""
    _not_yet("score", "[F4]")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def nightly() -> None:
    """Run the nightly flow: ingest, check, score, publish. [not yet available]"""
    _not_yet("nightly", "[F5]")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def retrain() -> None:
    """Run the retraining flow: CV, evaluation, registry, promotion gate. [not yet available]"""
    _not_yet("retrain", "[F5]")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def report() -> None:
    """Render the clinician report of a finished run. [not yet available]"""
    _not_yet("report", "[F6]")


if __name__ == "__main__":  # pragma: no cover
    main()
