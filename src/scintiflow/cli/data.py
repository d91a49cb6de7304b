"""Data verbs: `simulate` a night of exports, `ls` a prefix, render a `montage`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from scintiflow.cli.console import counting_progress, make_console, open_url, progress_bar
from scintiflow.cli.options import NightOpt, OutUrl, parse_night

if TYPE_CHECKING:
    from datetime import date

    from rich.console import Console

    from scintiflow.ingest.objects import DecodedObject
    from scintiflow.sim import NightSummary
    from scintiflow.storage import ObjectStore


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
    """`write_night` under the configured prefixes, with a progress bar."""
    from scintiflow.settings import get_settings
    from scintiflow.sim import write_night

    prefixes = get_settings().prefixes
    with counting_progress(console, "simulating") as progress:
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
            progress=progress,
        )


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
    from scintiflow.sim import SITES

    site_list = [s.strip() for s in sites.split(",") if s.strip()]
    unknown = sorted(set(site_list) - set(SITES))
    if unknown:
        raise typer.BadParameter(
            f"unknown site(s) {unknown}; known: {sorted(SITES)}", param_hint="--sites"
        )
    console = make_console()
    store = open_url(out)
    day = parse_night(night)
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
    console.print(f"regions: {store.url_for(summary.regions_key)}")
    if summary.faults:
        console.print(f"faults:  {store.url_for(summary.faults_key)}")


def _decode_listing(store: ObjectStore, prefix: str, console: Console) -> list[DecodedObject]:
    from scintiflow.ingest.objects import decode_objects
    from scintiflow.settings import get_settings

    settings = get_settings()
    keys = [o.key for o in store.list(prefix)]
    results: list[DecodedObject] = []
    with progress_bar(console) as progress:
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


def ls(
    url: Annotated[str, typer.Argument(help="Store URL.")] = "./scintiflow-data",
    prefix: Annotated[
        str, typer.Option(help="Key prefix to list, e.g. exports/2026-11-27/.")
    ] = "exports/",
    limit: Annotated[int, typer.Option(help="Rows to print.")] = 50,
) -> None:
    """Decode every object under a prefix and tabulate it (no patient identifiers shown)."""
    console = make_console()
    store = open_url(url)
    results = _decode_listing(store, prefix, console)
    _print_listing(results, console, prefix=prefix, limit=limit)
    console.print(f"listed: {store.url_for(prefix.rstrip('/')) if prefix else store.url}")


def montage(
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path(
        "docs/montage.png"
    ),
    per_class: Annotated[int, typer.Option(min=1, max=12)] = 4,
    seed: int = 0,
) -> None:
    """Render a montage of simulated scans, one row per class."""
    from scintiflow.sim import render_montage

    out.parent.mkdir(parents=True, exist_ok=True)
    render_montage(per_class=per_class, seed=seed).save(out, optimize=True)
    make_console().print(f"montage: {out.resolve()}")
