"""The retrain flow's artifacts and return value, built from the steps' records."""

from __future__ import annotations

import json

import numpy as np

from scintiflow import CLASSES
from scintiflow.ml.evaluation import classification_metrics, softmax
from scintiflow.ml.study import FoldFit, RetrainOutcome
from scintiflow.ml.study.summary import describe_counts, retrain_artifacts, retrain_result


def _fold(arch: str, fold: int, seed: int) -> FoldFit:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), size=40)
    probs = softmax(rng.normal(size=(40, len(CLASSES))) + 2.0 * np.eye(len(CLASSES))[y])
    return FoldFit(arch, fold, classification_metrics(y, probs), 12.34, 50.0)


def _outcome(promote: bool, champion_accuracy: float | None) -> RetrainOutcome:
    decision = {
        "promote": promote,
        "reason": "no_champion_above_floor" if promote else "worse_than_champion",
        "candidate_version": "v20261127T020000Z-abcdef",
        "candidate_accuracy": 0.91234,
        "champion_version": None if champion_accuracy is None else "v20261101T020000Z-000000",
        "champion_accuracy": champion_accuracy,
        "floor": 0.85,
        "decided_at": "2026-11-27T02:00:00.000000Z",
        "external_set": "ab" * 32,
    }
    return RetrainOutcome(
        version="v20261127T020000Z-abcdef",
        best_arch="resnet34",
        decision=decision,
        table="| arch | CV |\n|---|---|\n| resnet34 * | 0.9 |",
        report="file:///r/models/thyroid/v20261127T020000Z-abcdef/report.html",
        seconds=3.0,
    )


def test_fold_table_has_one_row_per_fold_fit() -> None:
    fits = [_fold("resnet34", k, seed=k) for k in range(3)] + [_fold("alexnet", 0, seed=9)]
    arts = retrain_artifacts(fits, _outcome(True, None))
    assert [(r["arch"], r["fold"]) for r in arts.folds] == [
        ("resnet34", 1),
        ("resnet34", 2),
        ("resnet34", 3),
        ("alexnet", 1),
    ]
    assert arts.folds[0]["accuracy"] == round(fits[0].metrics.accuracy, 4)
    assert arts.folds[0]["seconds"] == 12.3
    json.dumps(arts.folds, allow_nan=False)  # a Prefect table artifact
    # No CV: one placeholder row (a table artifact cannot be empty).
    assert retrain_artifacts([], _outcome(True, None)).folds == [
        {"arch": "-", "fold": 0, "accuracy": None, "seconds": 0}
    ]


def test_comparison_and_gate_markdown() -> None:
    promoted = retrain_artifacts([], _outcome(True, None))
    assert promoted.comparison.startswith("# Retrain: architectures compared\n\n| arch | CV |")
    assert "registered `v20261127T020000Z-abcdef` (resnet34)" in promoted.comparison
    assert "[training report](file:///r/models/thyroid/" in promoted.comparison
    assert promoted.gate.startswith("# Gate: promoted to champion\n")
    assert "| reason | `no_champion_above_floor` |" in promoted.gate
    assert "| champion | `None` accuracy - |" in promoted.gate
    assert "accuracy 0.912 |" in promoted.gate
    assert (
        promoted.gate_description
        == "promotion gate: promoted to champion (no_champion_above_floor)"
    )
    rejected = retrain_artifacts([], _outcome(False, 0.95))
    assert rejected.gate.startswith("# Gate: not promoted\n")
    assert "accuracy 0.950 |" in rejected.gate
    assert rejected.log_line == (
        "registered v20261127T020000Z-abcdef; gate not promoted (worse_than_champion)"
    )
    for md in (promoted.gate, rejected.gate):
        rows = [ln for ln in md.splitlines() if ln.startswith("|")]
        assert {ln.count("|") for ln in rows} == {3}


def test_counts_line_and_flow_result() -> None:
    counts = {
        "train": {"n": 50, "patients": 40},
        "internal": {"n": 12, "patients": 10},
        "external": {"n": 24, "patients": 20},
        "skipped": {"not_dicom": 1},
    }
    assert describe_counts(counts) == "train 50, internal 12, external 24"
    result = retrain_result(_outcome(False, 0.95), counts, seconds=61.26)
    assert result["seconds"] == 61.3  # the whole flow, not the registering task's 3.0
    assert result["promoted"] is False
    assert result["counts"] == counts
    assert result["version"] == "v20261127T020000Z-abcdef"
    assert result["table"].startswith("| arch |")
    json.dumps(result, allow_nan=False)
