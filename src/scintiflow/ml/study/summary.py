"""What the retrain flow shows: its artifacts (fold table, comparison, gate), log lines and
return value, built from the steps' records so the flow only wires."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scintiflow.ml.study.records import FoldFit, RetrainOutcome


@dataclass(frozen=True)
class RetrainArtifacts:
    """The flow run's artifacts: one table and two markdown pages, plus log lines."""

    folds: list[dict[str, Any]]  # one row per (arch, fold) task run
    comparison: str  # markdown: the study table and the registered version
    gate: str  # markdown: the gate's decision and its inputs
    gate_description: str
    log_line: str


def describe_counts(counts: Mapping[str, Any]) -> str:
    """`train 50, internal 12, external 24`: images per split (skipped inputs left out)."""
    return ", ".join(f"{k} {v['n']}" for k, v in counts.items() if k != "skipped")


def _fold_rows(fold_fits: Sequence[FoldFit]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {
            "arch": f.arch,
            "fold": f.fold + 1,
            "accuracy": round(f.metrics.accuracy, 4),
            "seconds": round(f.seconds, 1),
        }
        for f in fold_fits
    ]
    return rows or [{"arch": "-", "fold": 0, "accuracy": None, "seconds": 0}]


def _gate_markdown(d: Mapping[str, Any], verdict: str) -> str:
    champion = "-" if d["champion_accuracy"] is None else format(d["champion_accuracy"], ".3f")
    return (
        f"# Gate: {verdict}\n\n| | |\n|---|---|\n| reason | `{d['reason']}` |\n"
        f"| candidate | `{d['candidate_version']}` accuracy {d['candidate_accuracy']:.3f} |\n"
        f"| champion | `{d['champion_version']}` accuracy {champion} |\n"
        f"| floor | {d['floor']:.2f} |\n| evaluated on | `{d['external_set']}` |\n"
    )


def retrain_artifacts(fold_fits: Sequence[FoldFit], outcome: RetrainOutcome) -> RetrainArtifacts:
    """The artifacts of one retrain run from its fold fits and its outcome."""
    d = outcome.decision
    verdict = "promoted to champion" if d["promote"] else "not promoted"
    comparison = (
        f"# Retrain: architectures compared\n\n{outcome.table}\n\n`*` best mean CV accuracy; "
        f"registered `{outcome.version}` ({outcome.best_arch}). "
        f"[training report]({outcome.report})"
    )
    return RetrainArtifacts(
        folds=_fold_rows(fold_fits),
        comparison=comparison,
        gate=_gate_markdown(d, verdict),
        gate_description=f"promotion gate: {verdict} ({d['reason']})",
        log_line=f"registered {outcome.version}; gate {verdict} ({d['reason']})",
    )


def retrain_result(
    outcome: RetrainOutcome, counts: Mapping[str, Any], seconds: float
) -> dict[str, Any]:
    """The flow's return value: the outcome, `promoted`, the split counts and `seconds` (the
    whole flow: data, fits, registration, not only the registering task)."""
    return {
        **outcome.to_dict(),
        "seconds": round(seconds, 1),
        "promoted": bool(outcome.decision["promote"]),
        "counts": dict(counts),
    }
