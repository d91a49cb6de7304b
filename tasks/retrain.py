"""Tasks of the retrain flow: one protocol step each (`scintiflow.ml.study.protocol`).

Parameters are URLs, names, numbers and small records; results are small records. The PHI
hash key, the preferred view, the decode threads and the models prefix come from the
settings here, never from a parameter. Each process keeps two caches that no result depends
on: one store per URL, and the decoded data of the last labels it saw (keyed by the labels'
SHA-256, so changed labels are decoded again).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from scintiflow.ml.study import protocol
from scintiflow.ml.study.data import StudyData
from scintiflow.ml.study.exports import (
    RetrainData,
    labels_fingerprint,
    load_exports,
    read_reader_reads,
)
from scintiflow.ml.study.records import FinalFit, FoldFit, RetrainOutcome
from scintiflow.ml.study.staging import StagingArea
from scintiflow.ml.training import TrainConfig
from scintiflow.settings import get_settings
from scintiflow.storage import ObjectStore, open_store


@lru_cache(maxsize=16)
def store_for(url: str) -> ObjectStore:
    """One store per URL per process (S3 clients are costly to build)."""
    return open_store(url, settings=get_settings())


@lru_cache(maxsize=1)
def _decoded(spec: RetrainData, fingerprint: str) -> StudyData:
    settings = get_settings()
    return load_exports(
        spec,
        store_for,
        preferred_view=settings.preferred_view,
        workers=settings.decode_workers,
        group_key=settings.phi_hash_key.get_secret_value().encode(),
    )


def study_data(spec: RetrainData) -> StudyData:
    """The study data behind `spec`, decoded once per process and labels version."""
    return _decoded(spec, labels_fingerprint(spec, store_for))


def _staging(model_name: str, run_id: str) -> StagingArea:
    return StagingArea(get_settings().prefixes.models, model_name, run_id)


@task(name="load-training-data", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 20])
def load_training_data(spec: RetrainData) -> dict[str, Any]:
    """Decode the labelled exports once (memoised per process); the split counts back."""
    return study_data(spec).counts()


@task(name="fit-fold", cache_policy=NO_CACHE, task_run_name="fit-{arch}-fold-{fold}")
def fit_fold(
    spec: RetrainData, arch: str, fold: int, folds: int, cfg: TrainConfig, weights: str
) -> FoldFit:
    """One cross-validation fit of one architecture; the held-out fold's metrics back."""
    return protocol.fit_fold(study_data(spec), arch, fold, folds, cfg, weights=weights)


@task(name="final-fit", cache_policy=NO_CACHE, task_run_name="final-fit-{arch}")
def final_fit(
    spec: RetrainData,
    arch: str,
    cfg: TrainConfig,
    registry: str,
    model_name: str,
    run_id: str,
    weights: str,
    n_boot: int,
) -> FinalFit:
    """Fit on the whole training set, evaluate internal/external, stage the weights."""
    return protocol.final_fit(
        study_data(spec),
        arch,
        cfg,
        store_for(registry),
        _staging(model_name, run_id),
        weights=weights,
        n_boot=n_boot,
    )


@task(name="register-and-gate", cache_policy=NO_CACHE)
def register_and_gate(
    spec: RetrainData,
    fold_fits: list[FoldFit],
    finals: list[FinalFit],
    registry: str,
    model_name: str,
    run_id: str,
    cfg: TrainConfig,
    folds: int,
    weights: str,
    floor: float,
    n_boot: int,
    started_at: float,
) -> RetrainOutcome:
    """Pick the best architecture, register it, and apply the promotion gate."""
    return protocol.conclude(
        study_data(spec),
        fold_fits,
        finals,
        store_for(registry),
        _staging(model_name, run_id),
        cfg,
        folds=folds,
        weights=weights,
        reads=read_reader_reads(spec, store_for),
        floor=floor,
        n_boot=n_boot,
        started_at=started_at,
        orchestration="retrain flow: (arch, fold) fits as separate task runs",
    ).record()
