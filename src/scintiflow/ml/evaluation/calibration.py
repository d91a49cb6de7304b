"""Softmax with a temperature, and fitting that temperature on validation logits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from scintiflow.ml.evaluation.metrics import class_indices


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature`, numerically stable."""
    from scipy.special import softmax as _softmax

    return np.asarray(_softmax(np.asarray(logits, dtype=np.float64) / float(temperature), axis=1))


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    from scipy.special import log_softmax

    logp = log_softmax(logits / temperature, axis=1)
    return float(-logp[np.arange(y.size), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray | Sequence[Any]) -> float:
    """The temperature T in [0.05, 20] minimising the NLL of softmax(logits / T) on `y`.

    Fitted on validation data (Guo et al. 2017): it changes confidence, never the argmax.
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    yi = class_indices(y, [str(i) for i in range(z.shape[1])]) if z.ndim == 2 else None
    if yi is None or yi.size == 0 or yi.size != z.shape[0]:
        raise ValueError("fit_temperature needs (n, K) logits and n labels, n > 0")
    res = minimize_scalar(
        lambda log_t: _nll(z, yi, math.exp(log_t)),
        bounds=(math.log(0.05), math.log(20.0)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(res.x))


def negative_log_likelihood(
    logits: np.ndarray, y: np.ndarray | Sequence[Any], temperature: float = 1.0
) -> float:
    """Mean NLL of softmax(logits / temperature) on class indices `y`."""
    z = np.asarray(logits, dtype=np.float64)
    return _nll(z, class_indices(y, [str(i) for i in range(z.shape[1])]), temperature)
