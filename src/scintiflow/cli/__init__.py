"""`scintiflow ...`: the command line. Every verb takes URLs and prints where its outputs went.

Heavy imports (numpy, pydicom, boto3, torch) happen inside the commands, so `--help` is instant.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import Console
    from rich.progress import Progress

    from scintiflow.ingest.objects import DecodedObject
    from scintiflow.sim import NightSummary
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
LrOpt = Annotated[
    float | None,
    typer.Option(min=0.0, help="Peak AdamW learning rate (default: each arch's own)."),
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
    from scintiflow.settings import get_settings
    from scintiflow.sim import write_night

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
    from scintiflow.sim import SITES

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
    from scintiflow.ingest.objects import decode_objects
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
    from scintiflow.sim import render_montage

    out.parent.mkdir(parents=True, exist_ok=True)
    render_montage(per_class=per_class, seed=seed).save(out, optimize=True)
    _console().print(f"montage: {out.resolve()}")


if TYPE_CHECKING:
    from scintiflow.checks.suite import ChecksSummary


def _check_run(
    source: ObjectStore, dest: ObjectStore, console: Console, *, night: date, workers: int = 0
) -> ChecksSummary:
    """Run the data checks of one night with a progress bar; `ChecksSummary` back."""
    from scintiflow.checks.suite import run_checks

    with _progress(console) as progress:
        task = progress.add_task("checking", total=None)
        return run_checks(
            source,
            night=night,
            dest_store=dest,
            workers=workers,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )


def _check_print(summary: ChecksSummary, console: Console) -> None:
    """The reason-count table and where the data docs, checks.json and quarantine went."""
    from rich.table import Table

    from scintiflow.checks.suite import REASONS, severity

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
        f"quarantined {len(summary.quarantined)}, inputs {summary.inputs}"
    )
    console.print(f"data docs:   {summary.docs_url}")
    console.print(f"checks.json: {summary.checks_url}")
    console.print(f"quarantine:  {summary.quarantine_url}")


@app.command()
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
    non-zero only when the run itself failed.
    """
    from scintiflow.checks.suite import ChecksError
    from scintiflow.storage import StoreError

    console = _console()
    source = _open(input_url)
    dest = _open(out) if out is not None else source
    day = _parse_night(night)
    try:
        summary = _check_run(source, dest, console, night=day, workers=workers)
    except (StoreError, ChecksError) as exc:
        console.print(f"[red]scintiflow check failed:[/red] {exc}")
        raise typer.Exit(code=1) from None
    _check_print(summary, console)


if TYPE_CHECKING:
    from collections.abc import Callable

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


def _train_archs(archs: str) -> list[str]:
    from scintiflow.ml.models import ARCHS, MODEL_SPECS

    names = list(ARCHS) if archs.strip() == "all" else [a.strip() for a in archs.split(",")]
    unknown = [a for a in names if a not in MODEL_SPECS]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown architecture(s) {unknown}; known: all, {', '.join(sorted(MODEL_SPECS))}",
            param_hint="--archs",
        )
    return names


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

    arch_list = _train_archs(archs)
    store = _open(registry)
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


@app.command()
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

    console = _console()
    settings = get_settings()
    if (external_data is None) != (external_labels is None) and external_labels is None:
        raise typer.BadParameter("--external-data needs --external-labels")
    try:
        study_data = load_study_data(
            _open(data),
            read_url(labels),
            external_store=_open(external_data) if external_data else None,
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


@app.command()
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

    console = _console()
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


def _score_model_ref(model: str, registry: str | None, input_url: str) -> tuple[str, str, str]:
    """(registry URL, model name or "", version) from `--model` and `--registry`.

    `--model` is a version selector (`champion`, `latest`, a version id) looked up in
    `--registry` (default: `--input`), or the URL of a version folder,
    `<store>/<models prefix>/<name>/<version>`, which names all three.
    """
    from scintiflow.settings import get_settings

    if "://" not in model and "/" not in model:
        return registry or input_url, "", model
    models_prefix = get_settings().prefixes.models.strip("/")
    base, _, version = model.rstrip("/").rpartition("/")
    base, _, name = base.rpartition("/")
    if not models_prefix or not base.endswith("/" + models_prefix):
        raise typer.BadParameter(
            f"a model URL must end in /{models_prefix}/<name>/<version>", param_hint="--model"
        )
    return base[: -len(models_prefix) - 1], name, version


def _score_run(
    console: Console,
    *,
    input_url: str,
    out: str | None,
    registry: str,
    model_name: str,
    version: str,
    engine_kind: str,
    batch_size: int,
    all_class_maps: bool,
    prefix: str,
    run_id: str,
    night: date,
    workers: int,
    keys: Sequence[str] | None = None,
) -> None:
    """Load the version, pick the engine (logged), stream the keys, print where it all went.

    `keys` defaults to every object under `prefix`; the demo passes the checks' accepted keys.
    """
    from scintiflow.inference.engines import load_scoring_model, open_engine, select_engine
    from scintiflow.inference.score import results_prefix, score_keys
    from scintiflow.settings import get_settings

    prefixes = get_settings().prefixes
    source = _open(input_url)
    dest = _open(out) if out else source
    sm = load_scoring_model(_open(registry), model_name, version, prefixes.models)
    kind = select_engine(engine_kind, sm)
    console.print(
        f"model {sm.name} {sm.version} ({sm.arch}, {sm.preprocess.image_size} px); "
        f"engine {kind}" + (" (auto)" if engine_kind == "auto" else ""),
        markup=False,
        highlight=False,
    )
    engine = open_engine(kind, sm, all_class_maps=all_class_maps)
    keys = list(keys) if keys is not None else [o.key for o in source.list(prefix)]
    dest_prefix = results_prefix(night.isoformat(), run_id, prefixes.results)
    with _progress(console) as progress:
        task = progress.add_task("scoring", total=len(keys))
        summary = score_keys(
            source,
            keys,
            engine,
            sm,
            dest,
            dest_prefix,
            batch_size=batch_size,
            all_class_maps=all_class_maps,
            workers=workers or None,
            total=len(keys),
            progress=lambda done, _total: progress.update(task, completed=done),
        )
    low = sum(r.low_confidence for r in summary.rows)
    console.print(
        f"scored {len(summary.rows)} of {len(keys)} objects under {prefix} with {engine.name} "
        f"in {summary.seconds:.1f} s ({summary.images_per_s:.1f} img/s); "
        f"{low} low-confidence (< {sm.low_confidence_threshold:.2f}); "
        f"{len(summary.failures)} not scorable",
        markup=False,
        highlight=False,
    )
    console.print(f"predictions.csv:   {dest.url_for(summary.predictions_csv_key)}")
    console.print(f"predictions.jsonl: {dest.url_for(summary.predictions_jsonl_key)}")
    console.print(f"heatmaps:          {dest.url_for(dest_prefix + '/heatmaps')}")
    if summary.failures_key:
        console.print(f"failures:          {dest.url_for(summary.failures_key)}")


@app.command()
def score(
    input_url: Annotated[
        str, typer.Option("--input", help="Store URL holding the exports to score.")
    ] = "./scintiflow-data",
    out: Annotated[
        str | None, typer.Option("--out", help="Store URL for results/ (default: --input).")
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            help="champion | latest | a version id (looked up in --registry), or the URL of "
            "a version folder: <store>/models/<name>/<version>."
        ),
    ] = "champion",
    registry: Annotated[
        str | None, typer.Option(help="Store URL of the model registry (default: --input).")
    ] = None,
    model_name: Annotated[str, typer.Option(help="Model name in the registry.")] = "thyroid",
    engine: Annotated[str, typer.Option(help="auto | onnxruntime | torch | tensorrt.")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    all_class_maps: Annotated[
        bool, typer.Option(help="Heatmaps for every class, not only the predicted one.")
    ] = False,
    night: NightOpt = None,
    prefix: Annotated[
        str | None, typer.Option(help="Key prefix to score (default: exports/<night>/).")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Run id (default: UTC time + random suffix).")
    ] = None,
    workers: Annotated[int, typer.Option(min=0, help="Decode threads (0: settings).")] = 0,
) -> None:
    """Score a night's images with a registered model and write Grad-CAM heatmaps.

    Outputs go to results/<night>/<run_id>/ under --out: predictions.csv, predictions.jsonl
    and heatmaps/ (an overlay PNG and a 16-bit map PNG per image).
    """
    from scintiflow.domain import new_run_id
    from scintiflow.inference.engines import EngineError
    from scintiflow.ingest.objects import night_prefix
    from scintiflow.ml.registry import RegistryError
    from scintiflow.settings import get_settings
    from scintiflow.storage import StoreError

    console = _console()
    day = _parse_night(night)
    registry_url, name, version = _score_model_ref(model, registry, input_url)
    try:
        _score_run(
            console,
            input_url=input_url,
            out=out,
            registry=registry_url,
            model_name=name or model_name,
            version=version,
            engine_kind=engine,
            batch_size=batch_size,
            all_class_maps=all_class_maps,
            prefix=prefix or night_prefix(day, get_settings().prefixes.exports),
            run_id=run_id or new_run_id(),
            night=day,
            workers=workers,
        )
    except (EngineError, RegistryError, StoreError) as exc:
        console.print(f"scintiflow score failed ({exc.reason}): {exc}", markup=False)
        raise typer.Exit(code=1) from None


def _nightly_print(summary: dict[str, Any], dest: ObjectStore, console: Console) -> None:
    """The run's counts and where its outputs went."""
    from scintiflow.outputs.publish import latest_key

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
    console.print(f"manifest:    {dest.url_for(summary['manifest'])}")
    console.print(f"latest.json: {dest.url_for(latest_key(summary['night']))}")
    if summary["new"]:
        console.print(f"run folder:  {dest.url_for(summary['run_prefix'])}")
    if summary["report"]:
        console.print(f"report:      {dest.url_for(summary['report'])}")


@app.command()
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
    covers the whole night. Exits 1 when the run failed.
    """
    from flows.nightly import nightly as nightly_flow

    console = _console()
    day = _parse_night(night).isoformat()
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
        console.print(f"[red]scintiflow nightly failed:[/red] {state.message}", markup=True)
        raise typer.Exit(code=1)
    _nightly_print(state.result(), _open(dest or source), console)


def _retrain_print(result: dict[str, Any], console: Console) -> None:
    """The comparison table, the registered version and the gate's decision."""
    console.print(result["table"], markup=False, highlight=False)
    d = result["decision"]
    verdict = "promoted to champion" if d["promote"] else "not promoted"
    console.print(f"registered: {result['version']} (best arch {result['best_arch']})")
    console.print(f"gate: {verdict} ({d['reason']})", markup=False)
    console.print(f"report: {result['report']}")
    console.print(f"took {result['seconds']:.0f} s")


@app.command()
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
    from flows.retrain import retrain as retrain_flow

    console = _console()
    if (external_data is None) != (external_labels is None):
        raise typer.BadParameter("--external-data and --external-labels go together")
    state = retrain_flow(
        data=data,
        labels=labels,
        external_data=external_data,
        external_labels=external_labels,
        readers=readers,
        archs=_train_archs(archs),
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
    _retrain_print(state.result(), console)


def _drift_print(report: dict[str, Any], console: Console, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("feature", "PSI", "KS", "flagged"):
        table.add_column(col)
    for name, f in sorted(report["features"].items()):
        table.add_row(
            name,
            "-" if f.get("psi") is None else f"{f['psi']:.3f}",
            "-" if f.get("ks") is None else f"{f['ks']:.3f}",
            "[red]drift[/red]" if f.get("drift") else "ok",
        )
    console.print(table)
    t = report["thresholds"]
    console.print(
        f"status {report['status']} over {report['n_images']} images "
        f"({report['n_predictions']} predictions); thresholds: PSI > {t['psi_drift']}, "
        f"KS > {t['ks_drift']}, at least {t['min_images']} images",
        markup=False,
    )


@app.command()
def drift(
    input_url: Annotated[
        str, typer.Option("--input", help="Store URL holding exports/ and results/.")
    ] = "./scintiflow-data",
    night: NightOpt = None,
    model: Annotated[str, typer.Option(help="champion | latest | a version id.")] = "champion",
    registry: Annotated[
        str | None, typer.Option(help="Store URL of the model registry (default: --input).")
    ] = None,
    model_name: Annotated[str, typer.Option(help="Model name in the registry.")] = "thyroid",
) -> None:
    """Drift view: the night's scored inputs and predictions (its latest complete manifest)
    against the model version's training reference (PSI / KS, thresholds in DriftThresholds)."""
    from scintiflow.ml.registry import RegistryError
    from scintiflow.outputs.publish import night_rows, read_latest
    from scintiflow.pipeline.night import ModelRef, drift_check, resolve_model
    from scintiflow.storage import StoreError

    console = _console()
    day = _parse_night(night).isoformat()
    store = _open(input_url)
    try:
        manifest = read_latest(store, day)
        ref: ModelRef = resolve_model(registry or input_url, model_name, model, "onnxruntime")
    except (StoreError, RegistryError) as exc:
        console.print(f"scintiflow drift: {exc}", markup=False)
        raise typer.Exit(code=1) from None
    rows = night_rows(store, manifest)
    hashes = {i["key"]: i["sha256"] for i in manifest["inputs"]}
    report = drift_check(
        store, ref, [r["key"] for r in rows], hashes, [r["predicted_label"] for r in rows]
    )
    _drift_print(report, console, f"drift, night {day}, vs {ref.version} training reference")


def _demo_story_nights(day: date) -> tuple[date, date]:
    """The training and external-site export nights of the demo (a month before tonight)."""
    from datetime import timedelta

    return day - timedelta(days=30), day - timedelta(days=29)


def _demo_where(store: ObjectStore, night: str, console: Console) -> None:
    """Where the night's report, predictions, heatmaps, data docs and manifests are."""
    from scintiflow.outputs.publish import complete_manifests, latest_key, read_latest
    from scintiflow.settings import get_settings

    prefixes = get_settings().prefixes
    latest = read_latest(store, night)
    runs = [m for m in complete_manifests(store, night) if m["counts"]["new"]]
    console.print(f"latest.json: {store.url_for(latest_key(night))}")
    console.print(f"manifest:    {store.url_for(latest['run_id'] and _demo_manifest_key(latest))}")
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
        console.print(f"  heatmaps:    {store.url_for(_demo_run_prefix(m) + '/heatmaps')}")
        if m.get("checks"):
            console.print(f"  data docs:   {store.url_for(m['checks']['docs'])}")
    console.print(f"quarantine:  {store.url_for(f'{prefixes.quarantine}/{night}')}")
    console.print(f"ledger:      {store.url_for(f'{prefixes.state}/ledger')}")


def _demo_run_prefix(manifest: dict[str, Any]) -> str:
    from scintiflow.outputs.publish import run_prefix
    from scintiflow.settings import get_settings

    return run_prefix(manifest["night"], manifest["run_id"], get_settings().prefixes.results)


def _demo_manifest_key(manifest: dict[str, Any]) -> str:
    return _demo_run_prefix(manifest) + "/manifest.json"


def _demo_nightly(out: str, night: str, console: Console) -> dict[str, Any]:
    """One nightly flow run; champion-or-latest, since the demo model is below the floor."""
    from flows.nightly import nightly as nightly_flow

    state = nightly_flow(
        night=night,
        source=out,
        model="champion-or-latest",
        batch_size=16,
        shard_size=64,
        return_state=True,
    )
    if not state.is_completed():
        console.print(f"[red]nightly failed:[/red] {state.message}")
        raise typer.Exit(code=1)
    result: dict[str, Any] = state.result()
    _nightly_print(result, _open(out), console)
    return result


def _demo_late_exports(store: ObjectStore, night: date, n: int, seed: int) -> int:
    """Late-arriving exports for tonight (no labels file is rewritten)."""
    from scintiflow.settings import get_settings
    from scintiflow.sim import generate_night

    prefix = f"{get_settings().prefixes.exports}/{night.isoformat()}"
    count = 0
    for f in generate_night(n, night=night, sites=("B",), seed=seed):
        store.put(f"{prefix}/{f.relative_key}", f.data)
        count += 1
    return count


@app.command()
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
    import time

    from flows.retrain import retrain as retrain_flow

    started = time.perf_counter()
    console = _console()
    store = _open(out)
    day = _parse_night(night)
    train_day, ext_day = _demo_story_nights(day)
    console.rule("1. simulate a labelled training set (sites A, B) and an external site (C)")
    train = _simulate(
        store,
        console,
        night=train_day,
        n=train_images,
        sites=["A", "B"],
        seed=seed,
        bad_fraction=0.0,
        difficulty=0.3,
        phi_sentinel=False,
    )
    ext = _simulate(
        store,
        console,
        night=ext_day,
        n=max(12, train_images // 3),
        sites=["C"],
        seed=seed + 1,
        bad_fraction=0.0,
        difficulty=0.3,
        phi_sentinel=False,
    )
    console.print(f"training labels: {store.url_for(train.labels_key)} ({train.images} images)")
    console.print(
        f"external labels: {store.url_for(ext.labels_key)} ({ext.images} images, "
        "site C: 256 px matrix, another camera and tracer)"
    )
    console.rule("2. retrain flow: a small ResNet-34 (64 px, 2 folds), registry, gate")
    state = retrain_flow(
        data=out,
        labels=store.url_for(train.labels_key),
        external_data=out,
        external_labels=store.url_for(ext.labels_key),
        archs=["resnet34"],
        folds=2,
        epochs=epochs,
        image_size=64,
        n_boot=200,
        seed=0,
        return_state=True,
    )
    if not state.is_completed():
        console.print(f"[red]retrain failed:[/red] {state.message}")
        raise typer.Exit(code=1)
    _retrain_print(state.result(), console)
    console.rule("3. simulate tonight's exports, including broken files")
    tonight = _simulate(
        store,
        console,
        night=day,
        n=n,
        sites=["A", "B", "C"],
        seed=seed + 2,
        bad_fraction=0.2,
        difficulty=0.5,
        phi_sentinel=False,
    )
    console.print(f"wrote {tonight.images} images and {tonight.faults} broken or foreign files")
    console.rule("4. nightly flow")
    _demo_nightly(out, day.isoformat(), console)
    console.rule("5. late exports arrive; nightly again (only the new files are processed)")
    late = _demo_late_exports(store, day, 4, seed + 3)
    console.print(f"wrote {late} late exports")
    _demo_nightly(out, day.isoformat(), console)
    console.rule("where everything is")
    _demo_where(store, day.isoformat(), console)
    console.print(f"models:      {store.url_for('models/thyroid')}")
    console.print(f"exports:     {store.url_for(tonight.exports_prefix.rstrip('/'))}")
    console.print(
        "Prefect UI: `prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
        " and run `scintiflow demo` (or nightly/retrain) again to watch the flow runs."
    )
    console.print(f"demo took {time.perf_counter() - started:.0f} s")


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


def _report_screenshot(store: ObjectStore, html_key: str, out: Path, browser: str) -> None:
    """Save a PNG screenshot of the rendered page (it holds identifiers: a local file only)."""
    import tempfile

    from scintiflow.outputs.report import screenshot

    with tempfile.TemporaryDirectory(prefix="scintiflow-shot-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_bytes(store.get(html_key))
        out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(page, out, browser=browser)


@app.command()
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
    sc: Annotated[
        bool, typer.Option("--sc/--no-sc", help="Write the DICOM Secondary Captures.")
    ] = True,
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
    report.html, report.pdf and the heatmaps as DICOM Secondary Capture objects (sc/)."""
    from scintiflow.outputs.report import ReportError, build_report_input, render_report
    from scintiflow.storage import StoreError

    console = _console()
    store_url, prefix = _report_run_ref(run)
    store = _open(store_url)
    # A published run's manifest holds the hashes of its report files: a new rendering goes
    # beside them, so the published run stays verifiable.
    published = store.exists(f"{prefix}/manifest.json")
    dest = f"{prefix}/{RERENDERED_DIR}" if published else prefix
    try:
        inp = build_report_input(store, prefix, model_name=model_name)
        out = render_report(
            store,
            inp,
            dest_prefix=dest,
            source=_open(source) if source else None,
            browser=browser if pdf else None,
            secondary_capture=sc,
        )
        if screenshot is not None:
            _report_screenshot(store, out.html_key, screenshot, browser)
    except (ReportError, StoreError) as exc:
        console.print(f"scintiflow report failed ({exc.reason}): {exc}", markup=False)
        raise typer.Exit(code=1) from None
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
    if out.sc_keys:
        sc_folder = f"{dest}/sc"
        console.print(
            f"sc/:         {store.url_for(sc_folder)} ({len(out.sc_keys)} DICOM SC)", markup=False
        )
    if screenshot is not None:
        console.print(f"screenshot:  {screenshot.resolve()}", markup=False)
    if out.pdf_error:
        console.print(
            f"report.pdf not written ({out.pdf_error}); report.html is complete", markup=False
        )
        raise typer.Exit(code=1)


if __name__ == "__main__":  # pragma: no cover
    main()
