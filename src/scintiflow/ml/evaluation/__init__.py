"""Metrics, cross-validation folds, calibration, study records and the reader comparison.

Everything here is plain numpy/scipy on arrays already in memory (no I/O), so training,
the study protocol and the report share one definition of every number:

- `metrics`: `ClassificationMetrics` of one prediction set (accuracy, per-class statistics,
  AUC, ECE); `bootstrap`: patient-grouped percentile CIs; `folds`: patient-grouped CV folds
  and their summary; `calibration`: softmax and temperature scaling; `results`: `EvalSet`,
  `ArchResult`, `StudyResult`; `reader_comparison`: readers vs the model (exact McNemar);
  `localisation`: do heatmaps point at the disease (pointing game, energy in a region,
  deletion curve against random order, the weight-randomisation rank check);
  `json_values`: NaN-safe JSON numbers.

Conventions: `y_true` holds class indices into `classes` (strings are accepted too and mapped);
`probs` is `(n, K)` with rows summing to one. Undefined values are NaN, never a silent 0.
"""

from scintiflow.ml.evaluation.bootstrap import DEFAULT_CI_METRICS, bootstrap_ci, bootstrap_cis
from scintiflow.ml.evaluation.calibration import (
    fit_temperature,
    negative_log_likelihood,
    softmax,
)
from scintiflow.ml.evaluation.folds import (
    patient_grouped_folds,
    summarize_folds,
    summary_metric_names,
)
from scintiflow.ml.evaluation.json_values import json_number, json_safe, number_from_json
from scintiflow.ml.evaluation.localisation import (
    RANDOMISATION_BOUND,
    DeletionCheck,
    DeletionCurve,
    RandomisationCheck,
    deletion_check,
    deletion_curve,
    energy_in_region,
    peak_px,
    pointing_game,
    pointing_hit,
    random_deletion_curve,
    randomisation_check,
    rank_correlation,
    upsample_map,
)
from scintiflow.ml.evaluation.metrics import (
    MACRO_STATS,
    PER_CLASS_STATS,
    ClassificationMetrics,
    classification_metrics,
    expected_calibration_error,
    label_metrics,
)
from scintiflow.ml.evaluation.reader_comparison import (
    McNemarResult,
    ReaderComparison,
    compare_readers,
    is_simulated_reader,
    mcnemar_exact,
)
from scintiflow.ml.evaluation.results import (
    ArchResult,
    EvalSet,
    StudyResult,
    cis_from_json,
    cis_to_json,
)

__all__ = [
    "DEFAULT_CI_METRICS",
    "MACRO_STATS",
    "PER_CLASS_STATS",
    "RANDOMISATION_BOUND",
    "ArchResult",
    "ClassificationMetrics",
    "DeletionCheck",
    "DeletionCurve",
    "EvalSet",
    "McNemarResult",
    "RandomisationCheck",
    "ReaderComparison",
    "StudyResult",
    "bootstrap_ci",
    "bootstrap_cis",
    "cis_from_json",
    "cis_to_json",
    "classification_metrics",
    "compare_readers",
    "deletion_check",
    "deletion_curve",
    "energy_in_region",
    "expected_calibration_error",
    "fit_temperature",
    "is_simulated_reader",
    "json_number",
    "json_safe",
    "label_metrics",
    "mcnemar_exact",
    "negative_log_likelihood",
    "number_from_json",
    "patient_grouped_folds",
    "peak_px",
    "pointing_game",
    "pointing_hit",
    "random_deletion_curve",
    "randomisation_check",
    "rank_correlation",
    "softmax",
    "summarize_folds",
    "summary_metric_names",
    "upsample_map",
]
