"""Number and table formatting shared by the training report and the model card."""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from scintiflow import CLASSES
from scintiflow.ml.evaluation import ArchResult, ClassificationMetrics, StudyResult, json_safe

TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("accuracy", "Accuracy"),
    ("macro_sensitivity", "Sensitivity"),
    ("macro_specificity", "Specificity"),
    ("macro_auc", "AUC"),
)
"""Columns of the study-style table; sensitivity/specificity are macro averages over classes."""

SETS: tuple[str, ...] = ("internal", "external")


def fmt(value: float | None, digits: int = 3) -> str:
    """`value` with `digits` decimals; `n/a` when missing or not finite."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def fmt_ci(value: float | None, ci: Sequence[float] | None) -> str:
    """`value (lo to hi)`, or the value alone when the CI is missing or not finite."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if ci is None or not all(math.isfinite(x) for x in ci):
        return fmt(value)
    return f"{fmt(value)} ({fmt(ci[0])} to {fmt(ci[1])})"


def fmt_p(p: float | None) -> str:
    """A p-value: three decimals, `< 0.001` below that, `n/a` when missing."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def metric_value(m: ClassificationMetrics | None, name: str) -> float | None:
    """`m.value(name)`, None without metrics."""
    return None if m is None else m.value(name)


def set_metrics(a: ArchResult, set_name: str) -> ClassificationMetrics | None:
    """The internal or external metrics of `a`."""
    return a.internal if set_name == "internal" else a.external


def set_ci(a: ArchResult, set_name: str) -> Mapping[str, tuple[float, float]]:
    """The internal or external CIs of `a`."""
    return a.internal_ci if set_name == "internal" else a.external_ci


def slug(text: str) -> str:
    """`text` made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "x"


def md_cell(value: Any) -> str:
    """A value made safe for a markdown table cell (no raw HTML, no column breaks)."""
    return html.escape(str(value), quote=False).replace("|", "\\|").replace("\n", " ")


def is_simulated(result: StudyResult) -> bool:
    """Whether the study ran on simulated images: `dataset["simulated"]` or a source of kind
    `simulated` in the dataset or the config."""
    if result.dataset.get("simulated"):
        return True
    for holder in (result.dataset, result.config):
        source = holder.get("source")
        if isinstance(source, Mapping) and source.get("kind") == "simulated":
            return True
    return False


def split_rows(dataset: Mapping[str, Any]) -> list[list[str]]:
    """Rows (split, images, patients, sites, per-class counts) for dataset entries that
    describe a split (a mapping with an `n`)."""
    rows = []
    for name, v in dataset.items():
        if not (isinstance(v, Mapping) and "n" in v):
            continue
        sites = v.get("sites") or {}
        classes = v.get("classes") or {}
        site_text = (
            ", ".join(f"{k}: {n}" for k, n in sites.items())
            if isinstance(sites, Mapping)
            else ", ".join(map(str, sites))
        )
        rows.append(
            [str(name), str(v.get("n", "")), str(v.get("patients", "")), site_text]
            + [str(classes.get(c, "")) if isinstance(classes, Mapping) else "" for c in CLASSES]
        )
    return rows


def other_rows(dataset: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        (str(k), v if isinstance(v, str) else json.dumps(json_safe(v)))
        for k, v in dataset.items()
        if not (isinstance(v, Mapping) and "n" in v)
    ]


def md_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A markdown table (header, rule, rows) with every cell made safe, then a blank line."""
    lines = ["| " + " | ".join(md_cell(h) for h in head) + " |"]
    lines.append("|" + "|".join("---" for _ in head) + "|")
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]
