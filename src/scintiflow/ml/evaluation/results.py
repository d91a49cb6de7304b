"""The records a study produces: held-out predictions, one result per architecture, the study."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scintiflow.ml.evaluation.json_values import json_number, json_safe, number_from_json
from scintiflow.ml.evaluation.metrics import ClassificationMetrics


@dataclass(frozen=True)
class EvalSet:
    """Held-out predictions kept for plots and CIs: `internal` or `external`."""

    name: str
    keys: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    groups: np.ndarray | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": len(self.keys),
            "n_groups": None if self.groups is None else int(np.unique(self.groups).size),
        }


def cis_to_json(cis: Mapping[str, tuple[float, float]]) -> dict[str, list[float | None]]:
    """Confidence intervals (or mean/sd pairs) as JSON: `{name: [lo, hi]}`, NaN as null."""
    return {k: [json_number(lo), json_number(hi)] for k, (lo, hi) in cis.items()}


def cis_from_json(data: Mapping[str, Sequence[float | None]]) -> dict[str, tuple[float, float]]:
    """Inverse of `cis_to_json`."""
    return {str(k): (number_from_json(lo), number_from_json(hi)) for k, (lo, hi) in data.items()}


@dataclass(frozen=True)
class ArchResult:
    """One architecture's run through the protocol: CV folds, internal and external sets."""

    arch: str
    folds: list[ClassificationMetrics]
    cv_summary: dict[str, tuple[float, float]]
    internal: ClassificationMetrics | None
    internal_ci: dict[str, tuple[float, float]]
    external: ClassificationMetrics | None
    external_ci: dict[str, tuple[float, float]]
    temperature: float
    train_seconds: float
    epochs_run: int
    eval_sets: list[EvalSet] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; the held-out arrays are summarized (name, n), not embedded."""
        return {
            "arch": self.arch,
            "folds": [f.to_dict() for f in self.folds],
            "cv_summary": cis_to_json(self.cv_summary),
            "internal": None if self.internal is None else self.internal.to_dict(),
            "internal_ci": cis_to_json(self.internal_ci),
            "external": None if self.external is None else self.external.to_dict(),
            "external_ci": cis_to_json(self.external_ci),
            "temperature": json_number(self.temperature),
            "train_seconds": json_number(self.train_seconds),
            "epochs_run": int(self.epochs_run),
            "eval_sets": [e.summary() for e in self.eval_sets],
        }


@dataclass(frozen=True)
class StudyResult:
    """Every architecture's result, the chosen one, reader comparisons and provenance."""

    archs: list[ArchResult]
    best_arch: str
    readers: list[dict[str, Any]]
    config: dict[str, Any]
    dataset: dict[str, Any]

    def arch(self, name: str) -> ArchResult:
        for a in self.archs:
            if a.arch == name:
                return a
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "archs": [a.to_dict() for a in self.archs],
            "best_arch": self.best_arch,
            "readers": json_safe(self.readers),
            "config": json_safe(self.config),
            "dataset": json_safe(self.dataset),
        }
