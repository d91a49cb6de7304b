"""Readers against the model on the same cases: per-reader metrics and the exact McNemar test."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scintiflow import CLASSES
from scintiflow.ml.evaluation.json_values import json_number
from scintiflow.ml.evaluation.metrics import ClassificationMetrics, class_indices, label_metrics
from scintiflow.ml.readers import ReaderRead


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test: b = A right & B wrong, c = A wrong & B right, n = cases compared."""

    b: int
    c: int
    p_value: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"b": self.b, "c": self.c, "p_value": json_number(self.p_value), "n": self.n}


def mcnemar_exact(
    y_true: np.ndarray | Sequence[Any],
    pred_a: np.ndarray | Sequence[Any],
    pred_b: np.ndarray | Sequence[Any],
) -> McNemarResult:
    """Exact (binomial) two-sided McNemar test on paired predictions of the same cases.

    Only the discordant pairs count: under H0 each is equally likely to favour A or B.
    With no discordant pair the p-value is 1.
    """
    from scipy.stats import binomtest

    y = np.asarray(y_true)
    a = np.asarray(pred_a)
    b_ = np.asarray(pred_b)
    if not (y.shape == a.shape == b_.shape) or y.ndim != 1:
        raise ValueError("y_true, pred_a and pred_b must be 1-D and of equal length")
    right_a = a == y
    right_b = b_ == y
    b = int(np.sum(right_a & ~right_b))
    c = int(np.sum(~right_a & right_b))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return McNemarResult(b=b, c=c, p_value=min(1.0, p), n=int(y.size))


def is_simulated_reader(reader_id: str) -> bool:
    """Simulated readers are labelled by their id (see `scintiflow.ml.readers.simulate_reads`)."""
    return reader_id.startswith("simulated-")


@dataclass(frozen=True)
class ReaderComparison:
    """One reader against the model on the cases the reader read.

    `mcnemar` has the model as A and the reader as B: b counts cases only the model got
    right. `ignored` counts this reader's reads of keys outside the evaluated set (or
    repeated reads of one key, of which the first counts).
    """

    reader_id: str
    n: int
    reader_metrics: ClassificationMetrics
    model_accuracy: float
    mcnemar: McNemarResult
    simulated: bool
    ignored: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "reader_id": self.reader_id,
            "n": self.n,
            "simulated": self.simulated,
            "ignored": self.ignored,
            "accuracy": json_number(self.reader_metrics.accuracy),
            "model_accuracy": json_number(self.model_accuracy),
            "reader_metrics": self.reader_metrics.to_dict(),
            "mcnemar": self.mcnemar.to_dict(),
        }


def compare_readers(
    keys: Sequence[str],
    y_true: np.ndarray | Sequence[Any],
    model_pred: np.ndarray | Sequence[Any],
    reads: Sequence[ReaderRead],
    classes: Sequence[str] = CLASSES,
) -> list[ReaderComparison]:
    """Per reader (in first-seen order): metrics, model accuracy and exact McNemar, paired.

    Only cases both the model and the reader read count. `model_pred` holds class indices
    (or `(n, K)` probabilities, argmax taken).
    """
    y = class_indices(y_true, classes)
    mp = np.asarray(model_pred)
    pred = mp.argmax(axis=1) if mp.ndim == 2 else class_indices(mp, classes)
    if not (len(keys) == y.size == pred.size):
        raise ValueError("keys, y_true and model_pred differ in length")
    index = {k: i for i, k in enumerate(keys)}
    lookup = {c: i for i, c in enumerate(classes)}
    by_reader: dict[str, dict[int, int]] = {}
    ignored: dict[str, int] = {}
    for r in reads:
        rows = by_reader.setdefault(r.reader_id, {})
        ignored.setdefault(r.reader_id, 0)
        i = index.get(r.key)
        if i is None or i in rows or r.label not in lookup:
            ignored[r.reader_id] += 1
            continue
        rows[i] = lookup[r.label]
    out = []
    for reader_id, rows in by_reader.items():
        idx = np.fromiter(rows.keys(), dtype=np.int64, count=len(rows))
        rpred = np.fromiter(rows.values(), dtype=np.int64, count=len(rows))
        yt, mpred = y[idx], pred[idx]
        out.append(
            ReaderComparison(
                reader_id=reader_id,
                n=int(idx.size),
                reader_metrics=label_metrics(yt, rpred, classes),
                model_accuracy=float((mpred == yt).mean()) if idx.size else float("nan"),
                mcnemar=mcnemar_exact(yt, mpred, rpred),
                simulated=is_simulated_reader(reader_id),
                ignored=ignored[reader_id],
            )
        )
    return out
