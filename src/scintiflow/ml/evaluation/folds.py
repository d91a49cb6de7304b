"""Patient-grouped cross-validation folds and the mean/sd summary over folds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scintiflow.ml.evaluation.metrics import MACRO_STATS, ClassificationMetrics


def summary_metric_names(classes: Sequence[str]) -> list[str]:
    """The metric names `summarize_folds` reports, in display order."""
    names = ["accuracy", "macro_auc", "ece", *MACRO_STATS]
    for stat in ("sensitivity", "specificity", "f1", "auc"):
        names += [f"{stat}:{c}" for c in classes]
    return names


def summarize_folds(folds: Sequence[ClassificationMetrics]) -> dict[str, tuple[float, float]]:
    """Mean and sample sd (ddof=1; 0 for a single fold) of each metric over folds.

    NaN folds (a class absent from a fold) are left out of that metric's mean.
    """
    if not folds:
        return {}
    out: dict[str, tuple[float, float]] = {}
    for name in summary_metric_names(folds[0].classes):
        values = np.array([f.value(name) for f in folds], dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            out[name] = (float("nan"), float("nan"))
            continue
        sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
        out[name] = (float(values.mean()), sd)
    return out


def patient_grouped_folds(
    y: np.ndarray | Sequence[Any],
    groups: np.ndarray | Sequence[Any],
    n_splits: int = 5,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val) index pairs from StratifiedGroupKFold: no patient in two folds.

    The guarantees are checked, not assumed: every index is in exactly one validation fold and
    no group appears in two validation folds (a `RuntimeError` otherwise).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y_arr = np.asarray(y)
    g = np.asarray(groups)
    if y_arr.shape[0] != g.shape[0]:
        raise ValueError("y and groups differ in length")
    n_groups = np.unique(g).size
    if n_groups < n_splits:
        raise ValueError(f"{n_groups} patients cannot fill {n_splits} folds")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = [
        (np.asarray(tr, dtype=np.int64), np.asarray(va, dtype=np.int64))
        for tr, va in splitter.split(np.zeros(len(y_arr)), y_arr, g)
    ]
    seen = np.zeros(len(y_arr), dtype=np.int64)
    owner: dict[Any, int] = {}
    for i, (tr, va) in enumerate(folds):
        seen[va] += 1
        if np.intersect1d(g[tr], g[va]).size:
            raise RuntimeError("a patient is in both the training and validation part of a fold")
        for grp in np.unique(g[va]):
            if owner.setdefault(grp.item(), i) != i:
                raise RuntimeError("a patient appears in two validation folds")
    if not np.all(seen == 1):
        raise RuntimeError("validation folds do not cover every case exactly once")
    return folds
