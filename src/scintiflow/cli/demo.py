"""`demo`: the whole story (`flows.demo.run_demo`), narrated step by step as it runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from scintiflow.cli.console import counting_progress, make_console, open_url
from scintiflow.cli.night import print_nightly, print_retrain
from scintiflow.cli.options import NightOpt, OutUrl, parse_night

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from rich.console import Console

    from flows.demo import DemoRecord, DemoStep
    from scintiflow.storage import ObjectStore

STEP_TITLES: dict[DemoStep, str] = {
    "story_data": "1. simulate a labelled training set (sites A, B) and an external site (C)",
    "retrain": "2. retrain flow: a small ResNet-34 (64 px, 2 folds), registry, gate",
    "tonight": "3. simulate tonight's exports, including broken files",
    "nightly": "4. nightly flow",
    "late_exports": "5. late exports arrive; nightly again (only the new files are processed)",
}
"""The rule printed before each demo step (the second nightly run goes under step 5's)."""


class StoryPrinter:
    """The demo's `DemoObserver`: a rule before each step, then what the step did."""

    def __init__(self, console: Console, store: ObjectStore) -> None:
        self.console = console
        self.store = store

    def started(self, step: DemoStep) -> None:
        """The step's rule, when it has one."""
        if step in STEP_TITLES:
            self.console.rule(STEP_TITLES[step])

    def finished(self, step: DemoStep, record: DemoRecord) -> None:
        """What the step wrote or ran, and where it went."""
        console, store = self.console, self.store
        if step == "story_data" and record.train and record.external:
            console.print(
                f"training labels: {store.url_for(record.train.labels_key)} "
                f"({record.train.images} images)"
            )
            console.print(
                f"external labels: {store.url_for(record.external.labels_key)} "
                f"({record.external.images} images, "
                "site C: 256 px matrix, another camera and tracer)"
            )
        elif step == "retrain" and record.retrain is not None:
            print_retrain(record.retrain, console)
        elif step == "tonight" and record.tonight:
            console.print(
                f"wrote {record.tonight.images} images and {record.tonight.faults} "
                "broken or foreign files"
            )
        elif step == "late_exports":
            console.print(f"wrote {record.late_exports} late exports")
        elif step in ("nightly", "nightly_again"):
            print_nightly(record.nightly[-1], store, console)

    def simulating(self) -> AbstractContextManager[Callable[[int], None]]:
        """The transient "simulating" bar."""
        return counting_progress(self.console, "simulating")


def _run_prefix(manifest: dict[str, Any]) -> str:
    from scintiflow.outputs.publish import run_prefix
    from scintiflow.settings import get_settings

    return run_prefix(manifest["night"], manifest["run_id"], get_settings().prefixes.results)


def _print_where(store: ObjectStore, night: str, console: Console) -> None:
    """Where the night's report, predictions, heatmaps, data docs and manifests are."""
    from scintiflow.outputs.publish import complete_manifests, read_latest
    from scintiflow.outputs.runs import latest_key
    from scintiflow.settings import get_settings

    prefixes = get_settings().prefixes
    latest = read_latest(store, night)
    runs = [m for m in complete_manifests(store, night) if m["counts"]["new"]]
    console.print(f"latest.json: {store.url_for(latest_key(night))}")
    manifest_key = latest["run_id"] and _run_prefix(latest) + "/manifest.json"
    console.print(f"manifest:    {store.url_for(manifest_key)}")
    console.print(
        f"  covers {latest['counts']['inputs']} inputs: {latest['counts']['scored']} scored, "
        f"{latest['counts']['quarantined']} quarantined; model {latest['model']['version']} "
        f"({latest['model']['selector']})",
        markup=False,
    )
    if latest["model"].get("note"):
        console.print(f"  note: {latest['model']['note']}", markup=False)
    for m in runs:
        console.print(f"run {m['run_id']} ({m['counts']['new']} new inputs):", markup=False)
        if m.get("report"):
            console.print(f"  report:      {store.url_for(m['report'])}")
        else:
            console.print("  report:      (not rendered; see the run's log)")
        console.print(f"  predictions: {store.url_for(m['predictions']['csv'])}")
        console.print(f"  heatmaps:    {store.url_for(_run_prefix(m) + '/heatmaps')}")
        if m.get("checks"):
            console.print(f"  data docs:   {store.url_for(m['checks']['docs'])}")
    console.print(f"quarantine:  {store.url_for(f'{prefixes.quarantine}/{night}')}")
    console.print(f"ledger:      {store.url_for(f'{prefixes.state}/ledger')}")


def demo(
    out: OutUrl = "./var",
    n: Annotated[int, typer.Option("--n", min=1, help="Good images tonight.")] = 24,
    night: NightOpt = "2026-11-27",
    seed: int = 7,
    train_images: Annotated[int, typer.Option(min=24, help="Labelled training images.")] = 320,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
) -> None:
    """The whole story on embedded defaults (local folder store, ephemeral Prefect): simulate
    a labelled training set and a shifted external site, retrain a small ResNet-34, simulate
    tonight's exports with broken files, run nightly, add late exports, run nightly again,
    and print where the report, predictions, heatmaps, data docs and manifest are."""
    from flows.demo import DemoError, run_demo
    from flows.local_api import local_api

    console = make_console()
    store = open_url(out)
    day = parse_night(night)
    try:
        with local_api():
            record = run_demo(
                out,
                night=day,
                n=n,
                seed=seed,
                train_images=train_images,
                epochs=epochs,
                observer=StoryPrinter(console, store),
            )
    except DemoError as exc:
        console.print(f"[red]{exc.flow} failed:[/red] {exc}")
        raise typer.Exit(code=1) from None
    console.rule("where everything is")
    _print_where(store, day.isoformat(), console)
    console.print(f"models:      {store.url_for('models/thyroid')}")
    if record.tonight:
        console.print(f"exports:     {store.url_for(record.tonight.exports_prefix.rstrip('/'))}")
    console.print(
        "Prefect UI: `prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
        " and run `scintiflow demo` (or nightly/retrain) again to watch the flow runs."
    )
    console.print(f"demo took {record.seconds:.0f} s")
