"""Scoring verbs: `score` a night with a registered model, `drift` against its reference."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scintiflow.cli.console import make_console, open_url, progress_bar
from scintiflow.cli.options import NightOpt, parse_night

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import date

    from rich.console import Console


SHARD_SIZE = 256  # keys per shard, as the nightly flow's default


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
    """Load the version, pick the engine (logged), run the nightly shards and merge over the
    keys (checks, quarantine, scoring, heatmaps), write the tables; no report, no publish.

    `keys` defaults to every object under `prefix`.
    """
    from scintiflow.inference.engines import load_scoring_model, open_engine, select_engine
    from scintiflow.inference.score import (
        PREDICTION_COLUMNS,
        PredictionRow,
        results_prefix,
        write_predictions,
    )
    from scintiflow.pipeline.night import phi_hash_key
    from scintiflow.pipeline.shard import ShardSpec
    from scintiflow.settings import get_settings
    from scintiflow.storage import StoreError

    settings = get_settings()
    prefixes = settings.prefixes
    hash_key = phi_hash_key(settings)
    source = open_url(input_url)
    dest = open_url(out) if out else source
    sm = load_scoring_model(open_url(registry), model_name, version, prefixes.models)
    kind = select_engine(engine_kind, sm.gap_linear)
    console.print(
        f"model {sm.name} {sm.version} ({sm.arch}, {sm.preprocess.image_size} px); "
        f"engine {kind}" + (" (auto)" if engine_kind == "auto" else ""),
        markup=False,
        highlight=False,
    )
    engine = open_engine(kind, sm, all_class_maps=all_class_maps)
    source.check_root()  # a missing folder or bucket is an error, not 0 objects
    keys = list(keys) if keys is not None else [o.key for o in source.list(prefix)]
    if not keys:
        where = source.url_for(prefix.rstrip("/")) if prefix.strip("/") else source.url
        raise StoreError(f"no objects under {where}", reason="no_inputs")
    spec = ShardSpec(
        night=night.isoformat(),
        run_id=run_id,
        run_prefix=results_prefix(night.isoformat(), run_id, prefixes.results),
        quarantine_prefix=prefixes.quarantine,
        preferred_view=settings.preferred_view,
        batch_size=batch_size,
        workers=workers or settings.decode_workers or 2,
        all_class_maps=all_class_maps,
    )
    t0 = time.perf_counter()
    merged = _shards_and_merge(console, source, dest, keys, spec, engine, sm, hash_key)
    rows = [PredictionRow(**{c: r[c] for c in PREDICTION_COLUMNS}) for r in merged.rows]
    csv_key, jsonl_key, _ = write_predictions(dest, spec.run_prefix, rows)
    seconds = time.perf_counter() - t0
    low = sum(r.low_confidence for r in rows)
    console.print(
        f"scored {len(rows)} of {len(keys)} objects under {prefix} with {engine.name} "
        f"in {seconds:.1f} s ({len(rows) / max(seconds, 1e-9):.1f} img/s); "
        f"{low} low-confidence (< {sm.low_confidence_threshold:.2f}); "
        f"{len(merged.quarantined)} quarantined",
        markup=False,
        highlight=False,
    )
    console.print(f"predictions.csv:   {dest.url_for(csv_key)}")
    console.print(f"predictions.jsonl: {dest.url_for(jsonl_key)}")
    console.print(f"heatmaps:          {dest.url_for(spec.run_prefix + '/heatmaps')}")
    console.print(f"checks:            {dest.url_for(merged.checks['checks'])}")
    if merged.quarantined:
        console.print(f"quarantine:        {dest.url_for(prefixes.quarantine + '/' + spec.night)}")
    if merged.storage_errors:
        console.print(
            f"not read: {len(merged.storage_errors)} objects (storage errors, not quarantined); "
            "score them again",
            markup=False,
        )
        raise typer.Exit(code=3)


def _shards_and_merge(
    console: Console,
    source: Any,
    dest: Any,
    keys: Sequence[str],
    spec: Any,
    engine: Any,
    sm: Any,
    hash_key: bytes,
) -> Any:
    """The nightly shards over `keys` (with a progress bar), then the merge."""
    from scintiflow.pipeline.merge import MergeSpec, merge_shards
    from scintiflow.pipeline.night import shard_plan
    from scintiflow.pipeline.shard import process_shard

    results = []
    with progress_bar(console) as progress:
        task = progress.add_task("scoring", total=len(keys))
        for i, part in enumerate(shard_plan(keys, SHARD_SIZE)):
            part_spec = replace(spec, index=i)
            results.append(
                process_shard(
                    source, dest, part, part_spec, hash_key=hash_key, engine=engine, model=sm
                )
            )
            progress.update(task, completed=sum(len(r.keys) for r in results))
    merge = MergeSpec(spec.night, spec.run_id, spec.run_prefix, spec.quarantine_prefix)
    return merge_shards(source, dest, results, merge)


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
    and heatmaps/ (an overlay PNG and a 16-bit map PNG per image). Exits 1 on a missing
    source or a prefix with no objects, 3 when objects could not be read (storage errors).
    """
    from scintiflow.domain import new_run_id
    from scintiflow.inference.engines import EngineError
    from scintiflow.ingest.objects import night_prefix
    from scintiflow.ml.registry import RegistryError
    from scintiflow.settings import get_settings
    from scintiflow.storage import StoreError

    console = make_console()
    day = parse_night(night)
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
    from scintiflow.pipeline.drift import drift_of_published
    from scintiflow.pipeline.model import ModelRef, model_for, resolve_model, training_reference
    from scintiflow.pipeline.night import phi_hash_key
    from scintiflow.settings import get_settings
    from scintiflow.storage import StoreError

    console = make_console()
    day = parse_night(night).isoformat()
    store = open_url(input_url)
    try:
        manifest = read_latest(store, day)
        ref: ModelRef = resolve_model(
            registry or input_url,
            model_name,
            model,
            "onnxruntime",
            models_prefix=get_settings().prefixes.models,
        )
    except (StoreError, RegistryError) as exc:
        console.print(f"scintiflow drift: {exc}", markup=False)
        raise typer.Exit(code=1) from None
    rows = night_rows(store, manifest)
    hashes = {i["key"]: i["sha256"] for i in manifest["inputs"]}
    settings = get_settings()
    sm = model_for(ref)
    report = drift_of_published(
        store,
        training_reference(ref),
        sm.classes,
        rows,
        hashes,
        clip_percentile=sm.preprocess.clip_percentile,
        preferred_view=settings.preferred_view,
        patient_hash_key=phi_hash_key(settings),
    )
    _drift_print(report, console, f"drift, night {day}, vs {ref.version} training reference")
