"""One fit of the protocol: an inner patient split, `training.fit`, temperature scaling.

Every fit (a CV fold or the final fit of an architecture) runs through `fit_model`, so both
use the same seeds: the final fit `seed`, fold k `seed + 1000 * (k + 1)`. Inside it, about
15 % of the patients are held back for early stopping and for fitting the temperature.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from scintiflow import CLASSES
from scintiflow.ml.preprocess import PreprocessConfig
from scintiflow.ml.study.data import StudyDataError, patient_holdout

if TYPE_CHECKING:
    from scintiflow.ml.training import ProgressFn, TrainConfig
    from scintiflow.storage import ObjectStore

INNER_VALIDATION_FRACTION = 0.15


def preprocess_config_for(cfg: TrainConfig) -> PreprocessConfig:
    """The preprocessing every fit of a run uses (and its registered version records)."""
    return PreprocessConfig(image_size=cfg.image_size)


def fit_seed(seed: int, fold: int | None) -> int:
    """The seed of one fit: `seed` for the final fit, `seed + 1000 * (fold + 1)` for a fold."""
    return seed + (0 if fold is None else 1000 * (fold + 1))


def inner_split(y: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) indices for early stopping: about 15 % of patients, stratified."""
    fit_idx, val_idx = patient_holdout(groups.tolist(), y.tolist(), INNER_VALIDATION_FRACTION, seed)
    if val_idx.size == 0 or fit_idx.size == 0:
        raise StudyDataError("too few patients for an inner validation split", reason="too_small")
    return fit_idx, val_idx


@dataclass
class FittedModel:
    """A fitted model in this process (never leaves it: its weights go to the store)."""

    model: Any  # torch.nn.Module, CPU
    temperature: float
    seconds: float
    epochs_run: int
    images_per_s: float


def fit_model(
    arch: str,
    images: list[np.ndarray],
    y: np.ndarray,
    groups: np.ndarray,
    *,
    fold: int | None,
    train_config: TrainConfig,
    weights: str = "none",
    weights_store: ObjectStore | None = None,
    progress: ProgressFn | None = None,
) -> FittedModel:
    """Fit `arch` on these images (raw counts) with an inner patient split; fit T on it."""
    import torch

    from scintiflow.ml.evaluation import fit_temperature
    from scintiflow.ml.models import create_model
    from scintiflow.ml.training import fit

    seed = fit_seed(train_config.seed, fold)
    fit_idx, val_idx = inner_split(y, groups, seed)
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=len(CLASSES), weights=weights, store=weights_store)
    res = fit(
        model,
        [images[i] for i in fit_idx],
        y[fit_idx],
        [images[i] for i in val_idx],
        y[val_idx],
        replace(train_config, seed=seed),
        preprocess_config=preprocess_config_for(train_config),
        progress=progress,
        arch=arch,
        fold=fold,
        num_classes=len(CLASSES),
    )
    return FittedModel(
        model=model,
        temperature=fit_temperature(res.val_logits, y[val_idx]),
        seconds=res.seconds,
        epochs_run=res.epochs_run,
        images_per_s=res.train_images_per_s,
    )


def predict_probs(fitted: FittedModel, x: np.ndarray, config: TrainConfig) -> np.ndarray:
    """Temperature-scaled class probabilities of preprocessed images `x` (model left on CPU)."""
    from scintiflow.ml.evaluation import softmax
    from scintiflow.ml.training import predict_logits, resolve_device

    logits = predict_logits(fitted.model, x, config.eval_batch_size, resolve_device(config.device))
    fitted.model.to("cpu")
    return softmax(logits, fitted.temperature)
