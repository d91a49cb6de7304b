"""Tasks of the retrain flow: each (arch, fold) fit is its own task run (small records out)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from scintiflow.ml import retrain
from scintiflow.ml.retrain import FinalFit, FoldFit, RetrainData, RetrainOutcome
from scintiflow.ml.training import TrainConfig


@task(name="load-training-data", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 20])
def load_training_data(spec: RetrainData) -> dict[str, Any]:
    """Decode the labelled exports once (memoised per process); the split counts back."""
    return retrain.load_data(spec).counts()


@task(name="fit-fold", cache_policy=NO_CACHE, task_run_name="fit-{arch}-fold-{fold}")
def fit_fold(
    spec: RetrainData, arch: str, fold: int, folds: int, cfg: TrainConfig, weights: str
) -> FoldFit:
    """One cross-validation fit of one architecture; the held-out fold's metrics back."""
    return retrain.fit_fold(spec, arch, fold, folds, cfg, weights=weights)


@task(name="final-fit", cache_policy=NO_CACHE, task_run_name="final-fit-{arch}")
def final_fit(
    spec: RetrainData,
    arch: str,
    fold_fits: list[FoldFit],
    cfg: TrainConfig,
    weights: str,
    n_boot: int,
) -> FinalFit:
    """Fit on the whole training set; internal and external evaluation with CIs."""
    return retrain.final_fit(spec, arch, fold_fits, cfg, weights=weights, n_boot=n_boot)


@task(name="register-and-gate", cache_policy=NO_CACHE)
def register_and_gate(
    spec: RetrainData,
    finals: list[FinalFit],
    registry: str,
    cfg: TrainConfig,
    folds: int,
    weights: str,
    model_name: str,
    floor: float,
    n_boot: int,
) -> RetrainOutcome:
    """Pick the best architecture, register it, and apply the promotion gate."""
    return retrain.conclude(
        spec,
        finals,
        registry,
        cfg,
        folds=folds,
        weights=weights,
        model_name=model_name,
        floor=floor,
        n_boot=n_boot,
    )
