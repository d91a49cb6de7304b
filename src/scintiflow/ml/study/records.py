"""The small records the protocol's steps pass on: JSON-ready and free of pixels and models.

A `FoldFit` or `FinalFit` made in one process is all another process needs to carry on
(`to_dict` / `from_dict` round-trip exactly: JSON keeps every float64). `StudyOutcome` is the
in-memory end of a run (with its `StudyResult`); `RetrainOutcome` its small, JSON-ready form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from scintiflow.ml.evaluation import ClassificationMetrics, cis_from_json, cis_to_json

if TYPE_CHECKING:
    from scintiflow.ml.evaluation import StudyResult
    from scintiflow.ml.registry import GateDecision


def _metrics_or_none(data: Mapping[str, Any] | None) -> ClassificationMetrics | None:
    return None if data is None else ClassificationMetrics.from_dict(data)


@dataclass(frozen=True)
class FoldFit:
    """One (arch, fold) fit: its held-out fold metrics and how long it took."""

    arch: str
    fold: int
    metrics: ClassificationMetrics
    seconds: float
    images_per_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "arch": self.arch,
            "fold": self.fold,
            "metrics": self.metrics.to_dict(),
            "seconds": self.seconds,
            "images_per_s": self.images_per_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FoldFit:
        """Inverse of `to_dict`."""
        return cls(
            arch=str(data["arch"]),
            fold=int(data["fold"]),
            metrics=ClassificationMetrics.from_dict(data["metrics"]),
            seconds=float(data["seconds"]),
            images_per_s=float(data["images_per_s"]),
        )


@dataclass(frozen=True)
class FinalFit:
    """An architecture's final fit, evaluated; its weights and held-out predictions are in
    the store under the run's staging prefix (`weights_key`, `predictions_key`)."""

    arch: str
    internal: ClassificationMetrics | None
    internal_ci: dict[str, tuple[float, float]]
    external: ClassificationMetrics | None
    external_ci: dict[str, tuple[float, float]]
    temperature: float
    epochs_run: int
    seconds: float
    images_per_s: float
    weights_key: str
    weights_sha256: str
    predictions_key: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN as null)."""
        out = asdict(self)
        for name in ("internal", "external"):
            m = getattr(self, name)
            out[name] = None if m is None else m.to_dict()
            out[f"{name}_ci"] = cis_to_json(getattr(self, f"{name}_ci"))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinalFit:
        """Inverse of `to_dict`."""
        return cls(
            arch=str(data["arch"]),
            internal=_metrics_or_none(data["internal"]),
            internal_ci=cis_from_json(data["internal_ci"]),
            external=_metrics_or_none(data["external"]),
            external_ci=cis_from_json(data["external_ci"]),
            temperature=float(data["temperature"]),
            epochs_run=int(data["epochs_run"]),
            seconds=float(data["seconds"]),
            images_per_s=float(data["images_per_s"]),
            weights_key=str(data["weights_key"]),
            weights_sha256=str(data["weights_sha256"]),
            predictions_key=str(data["predictions_key"]),
        )


@dataclass(frozen=True)
class RetrainOutcome:
    """What a run registered and what the gate decided (small, JSON-ready)."""

    version: str
    best_arch: str
    decision: dict[str, Any]
    table: str
    report: str  # URL of the version's report.html
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrainOutcome:
        """Inverse of `to_dict`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class StudyOutcome:
    """What a run did: the result, the registered version and the gate decision."""

    result: StudyResult
    version: str
    decision: GateDecision
    model_name: str
    report_keys: list[str]
    report_url: str
    seconds: float
    throughput: dict[str, float]  # arch -> training images/s

    def record(self) -> RetrainOutcome:
        """The small form, for a task result or a flow's return value."""
        from scintiflow.ml.study.table import study_table

        return RetrainOutcome(
            version=self.version,
            best_arch=self.result.best_arch,
            decision=self.decision.to_dict(),
            table=study_table(self.result),
            report=self.report_url,
            seconds=self.seconds,
        )
