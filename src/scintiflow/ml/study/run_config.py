"""The run configuration a registered version records (`study.json`, report, card)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scintiflow import __version__
from scintiflow.ml.study.fitting import preprocess_config_for
from scintiflow.ml.training import TrainConfig, resolve_lr


def train_record(cfg: TrainConfig, archs: Sequence[str]) -> dict[str, Any]:
    """`cfg` as stored in the card, with `lr` the rate each arch trained with."""
    return {**cfg.to_dict(), "lr": {a: resolve_lr(cfg, a) for a in archs}}


def study_config(
    cfg: TrainConfig,
    archs: Sequence[str],
    *,
    folds: int,
    weights: str,
    n_boot: int,
    source: dict[str, Any],
    seconds: float,
    throughput: dict[str, float],
    gate: dict[str, Any],
    orchestration: str | None = None,
) -> dict[str, Any]:
    """What the run did and with which settings; `seconds` is its wall time so far."""
    config: dict[str, Any] = {
        "archs": list(archs),
        "folds": folds,
        "train": train_record(cfg, archs),
        "preprocess": preprocess_config_for(cfg).to_dict(),
        "weights": weights,
        "n_boot": n_boot,
        "source": source,
        "best_by": "mean CV accuracy",
        "seconds": seconds,
        "train_images_per_s": throughput,
        "code_version": __version__,
        "gate": gate,
    }
    if orchestration is not None:
        config["orchestration"] = orchestration
    return config
