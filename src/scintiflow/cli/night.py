"""Flow verbs: run the `nightly` and `retrain` Prefect flows locally and print what they did.

The flows are imported inside the verbs: importing the CLI never pulls in Prefect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from scintiflow.cli.console import make_console, open_url
from scintiflow.cli.options import LrOpt, NightOpt, parse_archs, parse_night

if TYPE_CHECKING:
    from rich.console import Console

    from scintiflow.storage import ObjectStore


# A night published `partial` (inputs not read; the next run retries them): not 0, not 1.
PARTIAL_EXIT = 3


def print_nightly(summary: dict[str, Any], dest: ObjectStore, console: Console) -> None:
    """The run's counts and where its outputs went."""
    from scintiflow.outputs.runs import latest_key

    console.print(
        f"night {summary['night']} run {summary['run_id']}: {summary['inputs']} inputs = "
        f"{summary['scored']} scored + {summary['quarantined']} quarantined "
        f"({summary['new']} new, {summary['carried_forward']} carried forward from earlier runs); "
        f"{summary['low_confidence_new']} new low-confidence",
        markup=False,
        highlight=False,
    )
    console.print(
        f"model {summary['model_version']}, engine {summary['engine']}",
        markup=False,
        highlight=False,
    )
    if summary["model_note"]:
        console.print(f"[yellow]note:[/yellow] {summary['model_note']}")
    if summary["drift"] is not None:
        feats = ", ".join(summary["drift"]["features"]) or "none"
        console.print(f"drift: {summary['drift']['status']} (features flagged: {feats})")
    if summary["manifest"] is None:
        console.print(
            f"[yellow]no manifest:[/yellow] run {summary['superseded_by']} published the same "
            "inputs first (concurrent run)"
        )
        return
    console.print(f"manifest:    {dest.url_for(summary['manifest'])} ({summary['status']})")
    if summary["storage_errors"]:
        console.print(
            f"[red]partial:[/red] {summary['storage_errors']} inputs were not read (storage "
            "errors, listed in the manifest); the next run retries them"
        )
    if summary["withdrawn"]:
        console.print(f"withdrawn:   {summary['withdrawn']} inputs deleted since the last run")
    console.print(f"latest.json: {dest.url_for(latest_key(summary['night']))}")
    if summary["new"]:
        console.print(f"run folder:  {dest.url_for(summary['run_prefix'])}")
    if summary["report"]:
        console.print(f"report:      {dest.url_for(summary['report'])}")


def nightly(
    source: Annotated[
        str, typer.Option("--source", help="Store URL holding exports/<night>/.")
    ] = "./scintiflow-data",
    dest: Annotated[
        str | None, typer.Option("--dest", help="Store URL for results (default: --source).")
    ] = None,
    night: NightOpt = None,
    model: Annotated[
        str,
        typer.Option(help="champion | latest | champion-or-latest | a version id."),
    ] = "champion",
    registry: Annotated[
        str | None, typer.Option(help="Store URL of the model registry (default: --dest).")
    ] = None,
    model_name: Annotated[str, typer.Option(help="Model name in the registry.")] = "thyroid",
    engine: Annotated[str, typer.Option(help="auto | onnxruntime | torch | tensorrt.")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per engine call.")] = 32,
    shard_size: Annotated[int, typer.Option(min=1, help="Inputs per task run.")] = 256,
) -> None:
    """Run the nightly flow locally (ephemeral Prefect): ledger, checks, scoring, publish.

    Only inputs not yet in the ledger for this model version are processed; the manifest
    covers the whole night. Exits 1 when the run failed, 3 when it published a partial night
    (inputs not read because of storage errors: the next run retries them).
    """
    from flows.local_api import local_api
    from flows.nightly import nightly as nightly_flow
    from scintiflow.pipeline.night import NightPartialError

    console = make_console()
    day = parse_night(night).isoformat()
    with local_api():
        state = nightly_flow(
            night=day,
            source=source,
            dest=dest,
            model=model,
            engine=engine,
            batch_size=batch_size,
            shard_size=shard_size,
            registry=registry,
            model_name=model_name,
            return_state=True,
        )
    if not state.is_completed():
        exc = state.result(raise_on_failure=False)
        if isinstance(exc, NightPartialError) and exc.summary:
            print_nightly(exc.summary, open_url(dest or source), console)
            raise typer.Exit(code=PARTIAL_EXIT)
        from rich.markup import escape

        console.print(f"[red]scintiflow nightly failed:[/red] {escape(state.message or '')}")
        raise typer.Exit(code=1)
    print_nightly(state.result(), open_url(dest or source), console)


def print_retrain(result: dict[str, Any], console: Console) -> None:
    """The comparison table, the registered version and the gate's decision."""
    console.print(result["table"], markup=False, highlight=False)
    d = result["decision"]
    verdict = "promoted to champion" if d["promote"] else "not promoted"
    console.print(f"registered: {result['version']} (best arch {result['best_arch']})")
    console.print(f"gate: {verdict} ({d['reason']})", markup=False)
    console.print(f"report: {result['report']}")
    console.print(f"took {result['seconds']:.0f} s")


def retrain(
    data: Annotated[str, typer.Option(help="Store URL holding the labelled exports.")],
    labels: Annotated[str, typer.Option(help="URL of the labels CSV.")],
    registry: Annotated[
        str | None, typer.Option(help="Store URL of the model registry (default: --data).")
    ] = None,
    external_data: Annotated[str | None, typer.Option(help="External-site exports.")] = None,
    external_labels: Annotated[str | None, typer.Option(help="External labels CSV.")] = None,
    readers: Annotated[str | None, typer.Option(help="readers.csv URL.")] = None,
    archs: Annotated[str, typer.Option(help="'all' or e.g. resnet34,alexnet.")] = "all",
    folds: Annotated[int, typer.Option(min=0)] = 5,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    image_size: Annotated[int, typer.Option(min=32)] = 224,
    batch_size: Annotated[int, typer.Option(min=2)] = 32,
    lr: LrOpt = None,
    weights: Annotated[str, typer.Option(help="none | imagenet | state dict key/URL.")] = "none",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    seed: int = 0,
    name: Annotated[str, typer.Option(help="Model name in the registry.")] = "thyroid",
    floor: Annotated[float, typer.Option(help="Promotion gate accuracy floor.")] = 0.85,
) -> None:
    """Run the retrain flow locally (ephemeral Prefect): one task run per (arch, fold) fit,
    then final fits, registration and the promotion gate."""
    from flows.local_api import local_api
    from flows.retrain import retrain as retrain_flow

    console = make_console()
    if (external_data is None) != (external_labels is None):
        raise typer.BadParameter("--external-data and --external-labels go together")
    with local_api():
        state = retrain_flow(
            data=data,
            labels=labels,
            external_data=external_data,
            external_labels=external_labels,
            readers=readers,
            archs=parse_archs(archs),
            folds=folds,
            epochs=epochs,
            image_size=image_size,
            batch_size=batch_size,
            lr=lr,
            weights=weights,
            registry=registry,
            model_name=name,
            floor=floor,
            seed=seed,
            device=device,
            return_state=True,
        )
    if not state.is_completed():
        console.print(f"[red]scintiflow retrain failed:[/red] {state.message}")
        raise typer.Exit(code=1)
    print_retrain(state.result(), console)
