"""Training verbs: `train` on labelled exports, `study` on a simulated multicentre study."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from scintiflow.cli.console import make_console, open_url
from scintiflow.cli.options import LrOpt, parse_archs

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from scintiflow.ml.readers import ReaderRead
    from scintiflow.ml.study import StudyData


def _train_progress(console: Console) -> Callable[[str, int | None, int, float, float], None]:
    """A progress printer: one line per epoch (arch, fold, epoch, losses)."""

    def show(arch: str, fold: int | None, epoch: int, loss: float, val_loss: float) -> None:
        where = "final fit" if fold is None else f"fold {fold + 1}"
        console.print(
            f"{arch:<14} {where:<9} epoch {epoch:>3}  loss {loss:.4f}  val_loss {val_loss:.4f}",
            markup=False,
            highlight=False,
        )

    return show


def _print_data_counts(console: Console, data: StudyData) -> None:
    """One line: images and patients per split, and how many files were skipped."""
    counts = data.counts()
    console.print(
        "data: "
        + ", ".join(
            f"{k} {v['n']} images / {v['patients']} patients"
            for k, v in counts.items()
            if k != "skipped"
        )
        + (f"; skipped {counts['skipped']}" if counts["skipped"] else ""),
        markup=False,
    )


def _train_run(
    console: Console,
    data: StudyData,
    registry: str,
    *,
    archs: str,
    folds: int,
    epochs: int,
    image_size: int,
    batch_size: int,
    lr: float | None,
    weights: str,
    device: str,
    seed: int,
    name: str,
    floor: float,
    reads: list[ReaderRead] | None,
) -> None:
    """Run the protocol, then print the comparison table and where the version went."""
    from scintiflow.ml.models import WeightsError
    from scintiflow.ml.study import run_study, study_table
    from scintiflow.ml.training import TrainConfig
    from scintiflow.settings import get_settings

    arch_list = parse_archs(archs)
    store = open_url(registry)
    _print_data_counts(console, data)
    config = TrainConfig(
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
    )
    try:
        outcome = run_study(
            data,
            store,
            archs=arch_list,
            folds=folds,
            train_config=config,
            weights=weights,
            reads=reads,
            model_name=name,
            models_prefix=get_settings().prefixes.models,
            floor=floor,
            weights_store=store,
            progress=_train_progress(console),
            log=lambda msg: console.print(msg, markup=False, highlight=False),
        )
    except WeightsError as exc:
        console.print(f"weights unavailable ({exc.reason}): {exc}", markup=False)
        raise typer.Exit(code=1) from None
    console.print()
    console.print(study_table(outcome.result), markup=False, highlight=False)
    console.print()
    prefix = f"{get_settings().prefixes.models}/{name}/{outcome.version}"
    verdict = "promoted to champion" if outcome.decision.promote else "not promoted"
    console.print(f"registered: {store.url_for(prefix)} (best arch {outcome.result.best_arch})")
    console.print(f"gate: {verdict} ({outcome.decision.reason})")
    console.print(f"report: {store.url_for(prefix + '/report.html')}")
    console.print(f"took {outcome.seconds:.0f} s")


def train(
    data: Annotated[str, typer.Option(help="Store URL holding the labelled exports.")],
    labels: Annotated[
        str, typer.Option(help="URL of the labels CSV (key,label,patient_id[,site]).")
    ],
    registry: Annotated[str, typer.Option(help="Store URL of the model registry.")],
    external_data: Annotated[
        str | None, typer.Option(help="Store URL of the external-site exports.")
    ] = None,
    external_labels: Annotated[
        str | None, typer.Option(help="URL of the external set's labels CSV.")
    ] = None,
    readers: Annotated[
        str | None, typer.Option(help="URL of readers.csv (reader_id,key,label).")
    ] = None,
    archs: Annotated[str, typer.Option(help="'all' or e.g. resnet34,alexnet.")] = "all",
    folds: Annotated[int, typer.Option(min=0, help="CV folds (0 or 1: no CV).")] = 5,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    image_size: Annotated[int, typer.Option(min=32)] = 224,
    batch_size: Annotated[int, typer.Option(min=2)] = 32,
    lr: LrOpt = None,
    weights: Annotated[
        str, typer.Option(help="none | imagenet | a state dict's key in the registry or URL.")
    ] = "none",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    seed: int = 0,
    name: Annotated[str, typer.Option(help="Model name in the registry.")] = "thyroid",
    floor: Annotated[float, typer.Option(help="Promotion gate accuracy floor.")] = 0.85,
) -> None:
    """Cross-validate, evaluate and register models from labelled exports (the study protocol)."""
    from scintiflow.ml.readers import ReadersCsvError, read_readers_csv
    from scintiflow.ml.study import StudyDataError, load_study_data, read_url
    from scintiflow.settings import get_settings
    from scintiflow.storage import StoreError

    console = make_console()
    settings = get_settings()
    if (external_data is None) != (external_labels is None) and external_labels is None:
        raise typer.BadParameter("--external-data needs --external-labels")
    try:
        study_data = load_study_data(
            open_url(data),
            read_url(labels),
            external_store=open_url(external_data) if external_data else None,
            external_labels=read_url(external_labels) if external_labels else None,
            seed=seed,
            workers=settings.decode_workers,
            preferred_view=settings.preferred_view,
            group_key=settings.phi_hash_key.get_secret_value().encode(),
            log=lambda msg: console.print(msg, markup=False),
        )
        reads = read_readers_csv(read_url(readers)) if readers else None
    except (StudyDataError, ReadersCsvError, StoreError) as exc:
        console.print(f"cannot use the inputs ({exc.reason}): {exc}", markup=False)
        raise typer.Exit(code=1) from None
    _train_run(
        console,
        study_data,
        registry,
        archs=archs,
        folds=folds,
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        lr=lr,
        weights=weights,
        device=device,
        seed=seed,
        name=name,
        floor=floor,
        reads=reads,
    )


def study(
    registry: Annotated[str, typer.Option(help="Store URL of the model registry.")],
    scale: Annotated[
        float, typer.Option(min=0.001, help="Share of the study's 2067/514/613 images.")
    ] = 0.1,
    archs: Annotated[str, typer.Option(help="'all' or e.g. resnet34,alexnet.")] = "all",
    folds: Annotated[int, typer.Option(min=0)] = 5,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    image_size: Annotated[int, typer.Option(min=32)] = 224,
    batch_size: Annotated[int, typer.Option(min=2)] = 32,
    lr: LrOpt = None,
    difficulty: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    weights: Annotated[str, typer.Option(help="none | imagenet | a state dict key/URL.")] = "none",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    seed: int = 0,
    name: Annotated[str, typer.Option(help="Model name in the registry.")] = "thyroid",
    floor: Annotated[float, typer.Option(help="Promotion gate accuracy floor.")] = 0.85,
) -> None:
    """Simulate a multicentre study (train/internal from sites A+B, external from C), run the
    whole protocol with simulated junior and senior readers, and register the best model."""
    from scintiflow.ml.study import simulate_study_data, simulated_reader_reads

    console = make_console()
    console.print(f"simulating the study's data at scale {scale} (difficulty {difficulty})")
    data = simulate_study_data(scale, seed=seed, difficulty=difficulty)
    _train_run(
        console,
        data,
        registry,
        archs=archs,
        folds=folds,
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        lr=lr,
        weights=weights,
        device=device,
        seed=seed,
        name=name,
        floor=floor,
        reads=simulated_reader_reads(data, seed),
    )
