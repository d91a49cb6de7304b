"""Point metrics of one prediction set: accuracy, per-class statistics, AUC, ECE.

Conventions: `y_true` holds class indices into `classes` (strings are accepted too and mapped);
`probs` is `(n, K)` with rows summing to one. Undefined values (a sensitivity for a class with
no positive case, an AUC for a class absent from `y_true`) are NaN, never a silent 0, and every
macro average is taken over the classes where the value is defined.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scintiflow import CLASSES
from scintiflow.ml.evaluation.json_values import json_number, number_from_json

PER_CLASS_STATS: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "f1", "auc")
"""The per-class statistics of `ClassificationMetrics.per_class`, in display order."""

MACRO_STATS: tuple[str, ...] = ("macro_sensitivity", "macro_specificity", "macro_f1")


@dataclass(frozen=True)
class ClassificationMetrics:
    """Metrics of one prediction set (a fold, the internal or the external set).

    `per_class[c]` holds sensitivity, specificity, ppv, npv, f1 and one-vs-rest auc of class
    `c`; `confusion[i][j]` counts true class i predicted as j (classes in `per_class` order).
    `macro_auc` averages the defined per-class AUCs. For label-only predictions (human
    readers) AUC and ECE are NaN: they need probabilities.
    """

    n: int
    accuracy: float
    per_class: dict[str, dict[str, float]]
    macro_auc: float
    confusion: list[list[int]]
    ece: float

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.per_class)

    def macro(self, stat: str) -> float:
        """Mean of a per-class statistic over the classes where it is defined (NaN if none)."""
        values = [v[stat] for v in self.per_class.values() if math.isfinite(v[stat])]
        return float(np.mean(values)) if values else float("nan")

    def value(self, name: str) -> float:
        """A metric by name: `accuracy`, `macro_auc`, `ece`, `macro_<stat>`, `<stat>:<class>`."""
        return _value_of(self, name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": json_number(self.accuracy),
            "per_class": {
                c: {k: json_number(v) for k, v in s.items()} for c, s in self.per_class.items()
            },
            "macro_auc": json_number(self.macro_auc),
            "confusion": [[int(x) for x in row] for row in self.confusion],
            "ece": json_number(self.ece),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassificationMetrics:
        return cls(
            n=int(data["n"]),
            accuracy=number_from_json(data["accuracy"]),
            per_class={
                str(c): {str(k): number_from_json(v) for k, v in s.items()}
                for c, s in data["per_class"].items()
            },
            macro_auc=number_from_json(data["macro_auc"]),
            confusion=[[int(x) for x in row] for row in data["confusion"]],
            ece=number_from_json(data["ece"]),
        )


def _value_of(m: ClassificationMetrics, name: str) -> float:
    if name == "accuracy":
        return m.accuracy
    if name == "macro_auc":
        return m.macro_auc
    if name == "ece":
        return m.ece
    if name.startswith("macro_") and name[6:] in PER_CLASS_STATS:
        return m.macro(name[6:])
    stat, sep, cls = name.partition(":")
    if sep and stat in PER_CLASS_STATS and cls in m.per_class:
        return m.per_class[cls][stat]
    raise ValueError(f"unknown metric {name!r}")


def class_indices(y: np.ndarray | Sequence[Any], classes: Sequence[str]) -> np.ndarray:
    """Class indices from indices or class names; rejects anything out of range."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError("labels must be a 1-D array")
    if arr.dtype.kind in "USO":
        lookup = {c: i for i, c in enumerate(classes)}
        try:
            arr = np.array([lookup[str(v)] for v in arr], dtype=np.int64)
        except KeyError as exc:
            raise ValueError(f"unknown class label {exc.args[0]!r}") from None
    if arr.dtype.kind not in "iu":
        if arr.size and not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError("labels must be class indices or class names")
        arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= len(classes)):
        raise ValueError(f"class index out of range 0..{len(classes) - 1}")
    return arr.astype(np.int64)


def check_probs(probs: np.ndarray, n: int, k: int) -> np.ndarray:
    """`probs` as float64, checked to be `(n, k)`."""
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (n, k):
        raise ValueError(f"probs must have shape ({n}, {k}), got {p.shape}")
    return p


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def _auc_binary(pos: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank statistic (ties count one half), NaN if one-sided."""
    from scipy.stats import rankdata

    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def _per_class_from_confusion(cm: np.ndarray) -> list[dict[str, float]]:
    n = cm.sum()
    out = []
    for i in range(cm.shape[0]):
        tp = cm[i, i]
        fn = cm[i].sum() - tp
        fp = cm[:, i].sum() - tp
        tn = n - tp - fn - fp
        out.append(
            {
                "sensitivity": _ratio(tp, tp + fn),
                "specificity": _ratio(tn, tn + fp),
                "ppv": _ratio(tp, tp + fp),
                "npv": _ratio(tn, tn + fn),
                "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            }
        )
    return out


def expected_calibration_error(
    y_true: np.ndarray | Sequence[Any], probs: np.ndarray, n_bins: int = 15
) -> float:
    """Top-label ECE: sum over equal-width confidence bins of |accuracy - confidence| x share.

    Bins are right-closed, `(i/n_bins, (i+1)/n_bins]` (the first also holds 0), as in Guo et
    al. 2017. It measures whether "90 % confident" means right 90 % of the time.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if y.dtype.kind in "USO":
        y = class_indices(y, CLASSES[: p.shape[1]])
    if y.size == 0:
        return float("nan")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(total)


def metrics_from_predictions(
    y: np.ndarray, pred: np.ndarray, probs: np.ndarray | None, classes: Sequence[str]
) -> ClassificationMetrics:
    """Metrics from checked class indices `y`, predictions `pred` and (optional) probabilities.

    The shared core of `classification_metrics`, `label_metrics` and the bootstrap resamples.
    """
    k = len(classes)
    cm = _confusion(y, pred, k)
    stats = _per_class_from_confusion(cm)
    for i, s in enumerate(stats):
        s["auc"] = _auc_binary(y == i, probs[:, i]) if probs is not None else float("nan")
    aucs = [s["auc"] for s in stats if math.isfinite(s["auc"])]
    return ClassificationMetrics(
        n=int(y.size),
        accuracy=float((y == pred).mean()) if y.size else float("nan"),
        per_class=dict(zip(classes, stats, strict=True)),
        macro_auc=float(np.mean(aucs)) if aucs else float("nan"),
        confusion=cm.tolist(),
        ece=expected_calibration_error(y, probs) if probs is not None else float("nan"),
    )


def classification_metrics(
    y_true: np.ndarray | Sequence[Any], probs: np.ndarray, classes: Sequence[str] = CLASSES
) -> ClassificationMetrics:
    """All metrics of one probability set; prediction = argmax.

    A class absent from `y_true` gets NaN sensitivity and AUC; `macro_auc` then averages the
    classes that are present (sklearn would raise instead).
    """
    y = class_indices(y_true, classes)
    p = check_probs(probs, y.size, len(classes))
    return metrics_from_predictions(y, p.argmax(axis=1), p, classes)


def label_metrics(
    y_true: np.ndarray | Sequence[Any],
    y_pred: np.ndarray | Sequence[Any],
    classes: Sequence[str] = CLASSES,
) -> ClassificationMetrics:
    """Metrics of hard labels (human readers): AUC and ECE are NaN, everything else as usual."""
    y = class_indices(y_true, classes)
    pred = class_indices(y_pred, classes)
    if pred.size != y.size:
        raise ValueError("y_true and y_pred differ in length")
    return metrics_from_predictions(y, pred, None, classes)
