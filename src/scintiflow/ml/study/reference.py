"""Input and prediction statistics of the training data, stored with every version for drift."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from scintiflow import CLASSES
from scintiflow.ml.preprocess import PreprocessConfig, normalise_counts
from scintiflow.ml.study.data import StudyImage


def training_reference(
    part: Sequence[StudyImage], probs: np.ndarray | None, preprocess_config: PreprocessConfig
) -> dict[str, Any]:
    """Input and prediction statistics of the training data, for later drift checks."""
    counts = np.array([float(im.pixels.sum()) for im in part])
    matrices = Counter(f"{im.pixels.shape[0]}x{im.pixels.shape[1]}" for im in part)
    spacing = Counter(
        "unknown" if im.pixel_spacing_mm is None else f"{im.pixel_spacing_mm:.2f}" for im in part
    )
    edges = np.linspace(0.0, 1.0, 21)
    hist = np.zeros(20)
    for im in part:
        hist += np.histogram(normalise_counts(im.pixels, preprocess_config.clip_percentile), edges)[
            0
        ]
    ref: dict[str, Any] = {
        "n": len(part),
        "total_counts": {
            "mean": float(counts.mean()) if counts.size else None,
            "sd": float(counts.std()) if counts.size else None,
            "quantiles": {
                str(q): float(np.quantile(counts, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)
            }
            if counts.size
            else {},
        },
        "matrix": dict(matrices),
        "pixel_spacing_mm": dict(spacing),
        "intensity_histogram": {
            "edges": edges.tolist(),
            "density": (hist / max(1.0, hist.sum())).tolist(),
            "of": "counts / clip percentile, clipped to [0, 1]",
        },
        "label_mix": {
            c: float(np.mean([im.label == i for im in part])) if part else 0.0
            for i, c in enumerate(CLASSES)
        },
    }
    if probs is not None and len(probs):
        pred = probs.argmax(axis=1)
        ref["prediction_mix"] = {c: float(np.mean(pred == i)) for i, c in enumerate(CLASSES)}
        ref["mean_confidence"] = float(probs.max(axis=1).mean())
    return ref
