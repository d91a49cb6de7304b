"""The study protocol, one step per function: the only implementation of CV, fit, evaluate,
register and gate. `scintiflow study` / `train` run the steps in a plain loop (`run_study`);
the retrain flow runs each step as its own task.

    data = simulate_study_data(scale=0.1)                   # or load_exports(spec, ...)
    staging = StagingArea("models", "thyroid", new_run_id())
    folds = [fit_fold(data, arch, k, n_folds, cfg) for arch in archs for k in range(n_folds)]
    finals = [final_fit(data, arch, cfg, registry, staging) for arch in archs]
    outcome = conclude(data, folds, finals, registry, staging, cfg, folds=n_folds)

Protocol (after the published multicentre study the product follows):
1. Per architecture, patient-grouped stratified k-fold CV on the training set (`fit_fold`).
   Inside each fold an inner patient-grouped split of the fold's training part drives early
   stopping and temperature fitting, so the held-out fold is touched only for its metrics.
2. A final fit on the whole training set, again with an inner patient-grouped validation split,
   evaluated on the internal held-out set (training sites, other patients) and the external
   set (a site never trained on) with patient-grouped bootstrap CIs (`final_fit`).
3. The best architecture (highest mean CV accuracy) is compared with the readers (exact
   McNemar), registered, and put through the promotion gate against the current champion
   re-scored on the SAME gate set (`conclude`).

Every step is a pure function of its inputs: the study data (rebuilt from URLs or the
simulator in any process), names, numbers and small frozen records (`TrainConfig`,
`StagingArea`, `FoldFit`, `FinalFit`). Each returns a small serialisable record; a final fit
writes its weights and held-out predictions to the registry under the run's staging prefix
(layout in `scintiflow.ml.study.staging`), so `conclude` can run in another process. Nothing
is kept in module state. No patient identifier leaves the package: patients are keyed hashes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from scintiflow.domain import new_run_id
from scintiflow.ml.preprocess import preprocess_batch
from scintiflow.ml.study.data import StudyData, StudyDataError, study_arrays
from scintiflow.ml.study.fitting import fit_model, predict_probs, preprocess_config_for
from scintiflow.ml.study.records import FinalFit, FoldFit, StudyOutcome
from scintiflow.ml.study.registration import (
    compare_with_readers,
    gate_decision,
    pick_best,
    register_candidate,
)
from scintiflow.ml.study.run_config import study_config
from scintiflow.ml.study.staging import (
    StagingArea,
    read_staged_predictions,
    read_staged_weights,
    stage_final_fit,
)
from scintiflow.ml.training import ProgressFn, TrainConfig

if TYPE_CHECKING:
    from scintiflow.ml.evaluation import ArchResult, ClassificationMetrics, EvalSet
    from scintiflow.ml.readers import ReaderRead
    from scintiflow.storage import ObjectStore

LogFn = Callable[[str], None]


def check_study_inputs(data: StudyData, archs: Sequence[str]) -> None:
    """Refuse unknown architectures, an empty list of them and an empty training set."""
    from scintiflow.ml.models import get_spec

    for a in archs:
        get_spec(a)
    if not archs:
        raise ValueError("at least one architecture is needed")
    if not data.train:
        raise StudyDataError("the training set is empty", reason="too_small")


def cv_plan(archs: Sequence[str], folds: int) -> list[tuple[str, int]]:
    """The (arch, fold) fits of a run, in order: none when `folds` < 2 (no CV)."""
    return [(arch, k) for arch in archs for k in range(folds if folds >= 2 else 0)]


def fit_fold(
    data: StudyData,
    arch: str,
    fold: int,
    folds: int,
    cfg: TrainConfig,
    *,
    weights: str = "none",
    weights_store: ObjectStore | None = None,
    progress: ProgressFn | None = None,
) -> FoldFit:
    """Fit `arch` on every CV fold of the training set but `fold`; score the held-out fold."""
    from scintiflow.ml.evaluation import classification_metrics, patient_grouped_folds

    images, y, groups = study_arrays(data.train)
    tr, va = patient_grouped_folds(y, groups, n_splits=folds, seed=cfg.seed)[fold]
    fitted = fit_model(
        arch,
        [images[i] for i in tr],
        y[tr],
        groups[tr],
        fold=fold,
        train_config=cfg,
        weights=weights,
        weights_store=weights_store,
        progress=progress,
    )
    x_val = preprocess_batch([images[i] for i in va], preprocess_config_for(cfg))
    metrics = classification_metrics(y[va], predict_probs(fitted, x_val, cfg))
    return FoldFit(arch, fold, metrics, fitted.seconds, fitted.images_per_s)


def final_fit(
    data: StudyData,
    arch: str,
    cfg: TrainConfig,
    store: ObjectStore,
    staging: StagingArea,
    *,
    weights: str = "none",
    weights_store: ObjectStore | None = None,
    n_boot: int = 1000,
    progress: ProgressFn | None = None,
) -> FinalFit:
    """Fit `arch` on the whole training set, evaluate it on the internal and external sets
    (bootstrap CIs over patients) and stage its weights and predictions in `store`."""
    from scintiflow.ml.evaluation import EvalSet, bootstrap_cis, classification_metrics
    from scintiflow.ml.models import state_dict_bytes

    images, y, groups = study_arrays(data.train)
    fitted = fit_model(
        arch,
        images,
        y,
        groups,
        fold=None,
        train_config=cfg,
        weights=weights,
        weights_store=weights_store,
        progress=progress,
    )
    pcfg = preprocess_config_for(cfg)
    metrics: dict[str, ClassificationMetrics] = {}
    cis: dict[str, dict[str, tuple[float, float]]] = {}
    eval_sets: list[EvalSet] = []
    for name, part in (("internal", data.internal), ("external", data.external)):
        if not part:
            continue
        pixels, yy, gg = study_arrays(part)
        probs = predict_probs(fitted, preprocess_batch(pixels, pcfg), cfg)
        metrics[name] = classification_metrics(yy, probs)
        cis[name] = bootstrap_cis(yy, probs, groups=gg, n_boot=n_boot, seed=cfg.seed)
        eval_sets.append(EvalSet(name, [im.key for im in part], yy, probs, gg))
    weights_key, weights_sha, predictions_key = stage_final_fit(
        store, staging, arch, state_dict_bytes(fitted.model), eval_sets
    )
    return FinalFit(
        arch=arch,
        internal=metrics.get("internal"),
        internal_ci=cis.get("internal", {}),
        external=metrics.get("external"),
        external_ci=cis.get("external", {}),
        temperature=fitted.temperature,
        epochs_run=fitted.epochs_run,
        seconds=fitted.seconds,
        images_per_s=fitted.images_per_s,
        weights_key=weights_key,
        weights_sha256=weights_sha,
        predictions_key=predictions_key,
    )


def arch_result(
    final: FinalFit, fold_fits: Sequence[FoldFit], eval_sets: list[EvalSet]
) -> ArchResult:
    """One architecture's result from its final fit, its fold fits and staged predictions."""
    from scintiflow.ml.evaluation import ArchResult, summarize_folds

    ordered = sorted((f for f in fold_fits if f.arch == final.arch), key=lambda f: f.fold)
    fold_metrics = [f.metrics for f in ordered]
    return ArchResult(
        arch=final.arch,
        folds=fold_metrics,
        cv_summary=summarize_folds(fold_metrics),
        internal=final.internal,
        internal_ci=final.internal_ci,
        external=final.external,
        external_ci=final.external_ci,
        temperature=final.temperature,
        train_seconds=sum(f.seconds for f in ordered) + final.seconds,
        epochs_run=final.epochs_run,
        eval_sets=eval_sets,
    )


def throughput(fold_fits: Sequence[FoldFit], finals: Sequence[FinalFit]) -> dict[str, float]:
    """Training images/s per architecture: the mean over its fold fits and final fit."""
    return {
        f.arch: float(
            np.mean([x.images_per_s for x in fold_fits if x.arch == f.arch] + [f.images_per_s])
        )
        for f in finals
    }


def conclude(
    data: StudyData,
    fold_fits: Sequence[FoldFit],
    finals: Sequence[FinalFit],
    store: ObjectStore,
    staging: StagingArea,
    cfg: TrainConfig,
    *,
    folds: int,
    weights: str = "none",
    reads: Sequence[ReaderRead] | None = None,
    floor: float = 0.85,
    n_boot: int = 1000,
    started_at: float | None = None,
    orchestration: str | None = None,
) -> StudyOutcome:
    """Pick the best architecture, compare the readers, register it in `store` (model
    `staging.model_name`) and apply the promotion gate.

    `started_at` (a `time.time()` stamp) is when the run began, for its recorded duration.
    """
    from scintiflow.ml.evaluation import StudyResult
    from scintiflow.ml.registry import apply_gate

    t0 = time.time() if started_at is None else started_at
    results = [arch_result(f, fold_fits, read_staged_predictions(store, f)) for f in finals]
    best = pick_best(results)
    readers = compare_with_readers(best, reads) if reads else []
    rates = throughput(fold_fits, finals)
    version = f"v{new_run_id()}"
    decision = gate_decision(
        store, data, best, version=version, staging=staging, device=cfg.device, floor=floor
    )
    config = study_config(
        cfg,
        [f.arch for f in finals],
        folds=folds,
        weights=weights,
        n_boot=n_boot,
        source=data.source,
        seconds=time.time() - t0,
        throughput=rates,
        gate=decision.to_dict(),
        orchestration=orchestration,
    )
    result = StudyResult(results, best.arch, readers, config, data.counts())
    final = next(f for f in finals if f.arch == best.arch)
    report_keys = register_candidate(
        store,
        result,
        data,
        weights=read_staged_weights(store, final),
        temperature=final.temperature,
        staging=staging,
        version=version,
        preprocess=preprocess_config_for(cfg),
    )
    decision = apply_gate(store, staging.model_name, decision, staging.models_prefix)
    return StudyOutcome(
        result=result,
        version=version,
        decision=decision,
        model_name=staging.model_name,
        report_keys=report_keys,
        report_url=store.url_for(f"{staging.version_prefix(version)}/report.html"),
        seconds=time.time() - t0,
        throughput=rates,
    )


def run_study(
    data: StudyData,
    store: ObjectStore,
    *,
    archs: Sequence[str],
    folds: int = 5,
    train_config: TrainConfig | None = None,
    weights: str = "none",
    reads: Sequence[ReaderRead] | None = None,
    model_name: str = "thyroid",
    models_prefix: str = "models",
    floor: float = 0.85,
    n_boot: int = 1000,
    weights_store: ObjectStore | None = None,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> StudyOutcome:
    """The whole protocol on `data` in a plain loop over the steps; registers in `store`."""
    started_at = time.time()
    cfg = train_config or TrainConfig()
    check_study_inputs(data, archs)
    staging = StagingArea(models_prefix, model_name, new_run_id())
    fold_fits: list[FoldFit] = []
    finals: list[FinalFit] = []
    for arch in archs:
        if log is not None:
            log(f"{arch}: {folds}-fold CV, then final fit on {len(data.train)} images")
        for _, k in cv_plan([arch], folds):
            fold_fits.append(
                fit_fold(
                    data, arch, k, folds, cfg,
                    weights=weights, weights_store=weights_store, progress=progress,
                )
            )  # fmt: skip
            if log is not None:
                log(f"{arch} fold {k + 1}/{folds}: accuracy {fold_fits[-1].metrics.accuracy:.3f}")
        finals.append(
            final_fit(
                data, arch, cfg, store, staging,
                weights=weights, weights_store=weights_store, n_boot=n_boot, progress=progress,
            )
        )  # fmt: skip
    return conclude(
        data, fold_fits, finals, store, staging, cfg,
        folds=folds, weights=weights, reads=reads, floor=floor, n_boot=n_boot,
        started_at=started_at,
    )  # fmt: skip
