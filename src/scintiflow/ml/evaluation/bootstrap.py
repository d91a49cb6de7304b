"""Percentile bootstrap confidence intervals, resampling whole patients when groups are given."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from scintiflow import CLASSES
from scintiflow.ml.evaluation.metrics import check_probs, class_indices, metrics_from_predictions

DEFAULT_CI_METRICS: tuple[str, ...] = (
    "accuracy",
    "macro_sensitivity",
    "macro_specificity",
    "macro_auc",
)
"""The bootstrap CIs the study-style table shows (see `bootstrap_cis`)."""


def _resample_indices(
    rng: np.random.Generator, n: int, groups: np.ndarray | None
) -> Iterator[np.ndarray]:
    if groups is None:
        while True:
            yield rng.integers(0, n, size=n)
    uniq, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=uniq.size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    members = [order[s : s + c] for s, c in zip(starts, counts, strict=True)]
    while True:
        picked = rng.integers(0, uniq.size, size=uniq.size)
        yield np.concatenate([members[g] for g in picked])


def bootstrap_cis(
    y_true: np.ndarray | Sequence[Any],
    probs: np.ndarray,
    *,
    metrics: Sequence[str] = DEFAULT_CI_METRICS,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: np.ndarray | Sequence[Any] | None = None,
    classes: Sequence[str] = CLASSES,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs of several metrics from the same resamples.

    With `groups` (patient ids or hashes) whole patients are resampled (cluster bootstrap):
    images of one patient are correlated, so resampling images would make the CI too narrow.
    Resamples where a metric is undefined (e.g. a class drawn zero times) are skipped for
    that metric; if none is left the CI is (NaN, NaN).
    """
    y = class_indices(y_true, classes)
    p = check_probs(probs, y.size, len(classes))
    if y.size == 0:
        return {m: (float("nan"), float("nan")) for m in metrics}
    g = None if groups is None else np.asarray(groups)
    if g is not None and g.shape != y.shape:
        raise ValueError("groups must have one entry per case")
    needs_probs = any("auc" in m or m == "ece" for m in metrics)
    rng = np.random.default_rng(seed)
    draws = {m: np.empty(n_boot) for m in metrics}
    sampler = _resample_indices(rng, y.size, g)
    pred = p.argmax(axis=1)
    for b in range(n_boot):
        idx = next(sampler)
        m = metrics_from_predictions(y[idx], pred[idx], p[idx] if needs_probs else None, classes)
        for name in metrics:
            draws[name][b] = m.value(name)
    out: dict[str, tuple[float, float]] = {}
    for name, all_values in draws.items():
        values = all_values[np.isfinite(all_values)]
        if values.size == 0:
            out[name] = (float("nan"), float("nan"))
        else:
            lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
            out[name] = (float(lo), float(hi))
    return out


def bootstrap_ci(
    y_true: np.ndarray | Sequence[Any],
    probs: np.ndarray,
    *,
    metric: str = "accuracy",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: np.ndarray | Sequence[Any] | None = None,
    classes: Sequence[str] = CLASSES,
) -> tuple[float, float]:
    """Percentile bootstrap CI of one metric (names as `ClassificationMetrics.value`)."""
    return bootstrap_cis(
        y_true,
        probs,
        metrics=[metric],
        n_boot=n_boot,
        alpha=alpha,
        seed=seed,
        groups=groups,
        classes=classes,
    )[metric]
