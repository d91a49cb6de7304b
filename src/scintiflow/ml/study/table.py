"""The study-style comparison table as markdown (what the CLI prints and the flow shows)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from scintiflow.ml.evaluation import StudyResult


def _metric_cell(m: Any, ci: Mapping[str, tuple[float, float]], name: str) -> str:
    if m is None:
        return "-"
    value = m.value(name)
    lo, hi = ci.get(name, (float("nan"), float("nan")))
    if np.isfinite(lo):
        return f"{value:.3f} ({lo:.3f}-{hi:.3f})"
    return f"{value:.3f}"


def study_table(result: StudyResult) -> str:
    """The study-style comparison table as markdown (arch x internal/external, with CIs)."""
    head = (
        "| arch | CV accuracy (mean ± sd) | internal accuracy (95% CI) | internal macro AUC "
        "| external accuracy (95% CI) | external sensitivity | external specificity "
        "| external macro AUC |"
    )
    lines = [head, "|" + "---|" * 8]
    for r in result.archs:
        cv = r.cv_summary.get("accuracy")
        cv_cell = f"{cv[0]:.3f} ± {cv[1]:.3f}" if cv else "-"
        star = " *" if r.arch == result.best_arch else ""
        lines.append(
            f"| {r.arch}{star} | {cv_cell} | {_metric_cell(r.internal, r.internal_ci, 'accuracy')}"
            f" | {_metric_cell(r.internal, r.internal_ci, 'macro_auc')}"
            f" | {_metric_cell(r.external, r.external_ci, 'accuracy')}"
            f" | {_metric_cell(r.external, r.external_ci, 'macro_sensitivity')}"
            f" | {_metric_cell(r.external, r.external_ci, 'macro_specificity')}"
            f" | {_metric_cell(r.external, r.external_ci, 'macro_auc')} |"
        )
    if result.readers:
        lines += ["", "| set | reader | n | reader accuracy | model accuracy | McNemar p |"]
        lines.append("|" + "---|" * 6)
        for rd in result.readers:
            p = rd["mcnemar"]["p_value"]
            lines.append(
                f"| {rd['set']} | {rd['reader_id']}{' (simulated)' if rd['simulated'] else ''}"
                f" | {rd['n']} | {rd['accuracy']:.3f} | {rd['model_accuracy']:.3f}"
                f" | {'-' if p is None else f'{p:.2g}'} |"
            )
    return "\n".join(lines)
