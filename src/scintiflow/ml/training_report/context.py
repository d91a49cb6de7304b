"""What the report shows, as plain rows: the values both the HTML and the markdown render."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from typing import Any

from scintiflow import CLASSES, __version__
from scintiflow.ml.evaluation import StudyResult, json_safe
from scintiflow.ml.training_report.formatting import (
    SETS,
    TABLE_METRICS,
    fmt,
    fmt_ci,
    fmt_p,
    is_simulated,
    metric_value,
    other_rows,
    set_ci,
    set_metrics,
    slug,
    split_rows,
)


def _comparison_rows(result: StudyResult) -> list[dict[str, Any]]:
    rows = []
    for a in result.archs:
        cells = []
        for set_name in SETS:
            m = set_metrics(a, set_name)
            ci = set_ci(a, set_name)
            for name, _ in TABLE_METRICS:
                cells.append(fmt_ci(metric_value(m, name), ci.get(name)))
        rows.append({"arch": a.arch, "best": a.arch == result.best_arch, "cells": cells})
    return rows


def _cv_rows(result: StudyResult) -> list[dict[str, Any]]:
    rows = []
    for a in result.archs:
        s = a.cv_summary

        def ms(name: str, s: Mapping[str, tuple[float, float]] = s) -> str:
            if name not in s or not math.isfinite(s[name][0]):
                return "n/a"
            return f"{fmt(s[name][0])} ± {fmt(s[name][1])}"

        rows.append(
            {
                "arch": a.arch,
                "folds": len(a.folds),
                "cells": [ms(n) for n in ("accuracy", "macro_sensitivity", "macro_specificity")]
                + [ms("macro_auc"), ms("ece")],
            }
        )
    return rows


def _fold_rows(result: StudyResult) -> list[dict[str, Any]]:
    rows = []
    for a in result.archs:
        for i, f in enumerate(a.folds, start=1):
            rows.append(
                {
                    "arch": a.arch,
                    "fold": i,
                    "n": f.n,
                    "cells": [fmt(f.accuracy), fmt(f.macro_auc), fmt(f.ece)]
                    + [fmt(f.per_class[c]["sensitivity"]) for c in f.classes],
                }
            )
    return rows


def _per_class_tables(result: StudyResult) -> list[dict[str, Any]]:
    tables = []
    for a in result.archs:
        if a.arch != result.best_arch:
            continue
        for set_name in SETS:
            m = set_metrics(a, set_name)
            if m is None:
                continue
            tables.append(
                {
                    "title": f"{a.arch}, {set_name} set (n={m.n})",
                    "rows": [
                        {
                            "cls": c,
                            "cells": [
                                fmt(m.per_class[c][k])
                                for k in ("sensitivity", "specificity", "ppv", "npv", "f1", "auc")
                            ],
                        }
                        for c in m.classes
                    ],
                }
            )
    return tables


def _reader_rows(result: StudyResult) -> list[dict[str, Any]]:
    rows = []
    for r in result.readers:
        per_class = (r.get("reader_metrics") or {}).get("per_class") or {}
        mc = r.get("mcnemar") or {}
        rows.append(
            {
                "reader_id": str(r.get("reader_id", "")),
                "simulated": bool(r.get("simulated", False))
                or str(r.get("reader_id", "")).startswith("simulated-"),
                "set": str(r.get("set", r.get("eval_set", ""))),
                "n": r.get("n", ""),
                "accuracy": fmt(r.get("accuracy")),
                "model_accuracy": fmt(r.get("model_accuracy")),
                "sensitivities": [
                    fmt((per_class.get(c) or {}).get("sensitivity")) for c in CLASSES
                ],
                "b": mc.get("b", ""),
                "c": mc.get("c", ""),
                "p": fmt_p(mc.get("p_value")),
            }
        )
    return rows


def _plot_entries(result: StudyResult, plots: Mapping[str, bytes]) -> list[dict[str, Any]]:
    entries = []
    for a in result.archs:
        for set_name in SETS:
            stem = f"{slug(a.arch)}-{set_name}"
            figs = []
            for kind in ("confusion", "roc"):
                fname = f"{kind}-{stem}.png"
                if fname in plots:
                    figs.append(
                        {
                            "file": fname,
                            "data": base64.b64encode(plots[fname]).decode("ascii"),
                            "alt": f"{kind} {a.arch} {set_name}",
                        }
                    )
            if figs:
                entries.append({"title": f"{a.arch}, {set_name}", "figs": figs})
    return entries


def report_context(result: StudyResult, plots: Mapping[str, bytes]) -> dict[str, Any]:
    any_simulated_reader = any(r["simulated"] for r in _reader_rows(result))
    return {
        "version": __version__,
        "best_arch": result.best_arch,
        "simulated_data": is_simulated(result),
        "simulated_readers": any_simulated_reader,
        "splits": split_rows(result.dataset),
        "dataset": other_rows(result.dataset),
        "config": json.dumps(json_safe(result.config), indent=2, sort_keys=True),
        "metric_heads": [label for _, label in TABLE_METRICS],
        "comparison": _comparison_rows(result),
        "cv": _cv_rows(result),
        "folds": _fold_rows(result),
        "classes": list(CLASSES),
        "per_class": _per_class_tables(result),
        "readers": _reader_rows(result),
        "calibration": [
            {
                "arch": a.arch,
                "temperature": fmt(a.temperature, 3),
                "ece_internal": fmt(metric_value(a.internal, "ece")),
                "ece_external": fmt(metric_value(a.external, "ece")),
                "epochs": a.epochs_run,
                "seconds": f"{a.train_seconds:.0f}",
            }
            for a in result.archs
        ],
        "plots": _plot_entries(result, plots),
    }
