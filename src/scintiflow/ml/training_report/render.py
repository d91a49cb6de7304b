"""The training report's files: `report.html` (Jinja2 template), `report.md` and the plots."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scintiflow.ml.evaluation import StudyResult
from scintiflow.ml.training_report.context import report_context
from scintiflow.ml.training_report.formatting import SETS, md_cell, md_table
from scintiflow.ml.training_report.plots import report_plots

TEMPLATE = "training_report.html.j2"
"""The HTML template, in `scintiflow/ml/templates/` (package data)."""


def render_html(ctx: Mapping[str, Any]) -> str:
    """`report.html` from the report context (autoescaped: outside strings cannot inject)."""
    from importlib.resources import files

    from jinja2 import Environment, StrictUndefined

    template = files("scintiflow.ml").joinpath("templates", TEMPLATE).read_text("utf-8")
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=False)
    return env.from_string(template).render(**ctx)


def _md_head(ctx: Mapping[str, Any]) -> list[str]:
    out = ["# scintiflow training report", ""]
    out += [
        f"Chosen architecture: **{md_cell(ctx['best_arch'])}**. Decision support, not a diagnosis.",
        "",
    ]
    if ctx["simulated_data"]:
        out += ["> Trained and evaluated on **simulated** scintigraphy, not patient data.", ""]
    return out


def _md_comparison(ctx: Mapping[str, Any]) -> list[str]:
    out = ["## Study-style comparison", ""]
    out += [
        "Accuracy, macro sensitivity/specificity, macro one-vs-rest AUC; 95 % bootstrap "
        "CIs (patients resampled) in brackets.",
        "",
    ]
    heads = [f"{s} {h}" for s in SETS for h in ctx["metric_heads"]]
    out += md_table(
        ["architecture", *heads],
        [[r["arch"] + (" (chosen)" if r["best"] else ""), *r["cells"]] for r in ctx["comparison"]],
    )
    out += ["## Cross-validation (mean ± sd over folds)", ""]
    out += md_table(
        ["architecture", "folds", "accuracy", "sensitivity", "specificity", "AUC", "ECE"],
        [[r["arch"], r["folds"], *r["cells"]] for r in ctx["cv"]],
    )
    out += ["### Per fold", ""]
    out += md_table(
        ["architecture", "fold", "n", "accuracy", "macro AUC", "ECE"]
        + [f"sens. {c}" for c in ctx["classes"]],
        [[r["arch"], r["fold"], r["n"], *r["cells"]] for r in ctx["folds"]],
    )
    return out


def _md_per_class_and_calibration(ctx: Mapping[str, Any]) -> list[str]:
    out = [f"## Per class ({md_cell(ctx['best_arch'])})", ""]
    for t in ctx["per_class"]:
        out += [f"### {md_cell(t['title'])}", ""]
        out += md_table(
            ["class", "sensitivity", "specificity", "PPV", "NPV", "F1", "AUC"],
            [[r["cls"], *r["cells"]] for r in t["rows"]],
        )
    out += ["## Calibration and training", ""]
    keys = ("arch", "temperature", "ece_internal", "ece_external", "epochs", "seconds")
    out += md_table(
        ["architecture", "temperature", "ECE internal", "ECE external", "epochs", "train s"],
        [[r[k] for k in keys] for r in ctx["calibration"]],
    )
    return out


def _md_readers(ctx: Mapping[str, Any]) -> list[str]:
    out = ["## Reader comparison", ""]
    if not ctx["readers"]:
        return [*out, "No reader reads were supplied.", ""]
    return out + md_table(
        ["reader", "set", "n", "reader accuracy", "model accuracy"]
        + [f"sens. {c}" for c in ctx["classes"]]
        + ["b (model only)", "c (reader only)", "McNemar p"],
        [
            [
                r["reader_id"] + (" (simulated)" if r["simulated"] else ""),
                r["set"],
                r["n"],
                r["accuracy"],
                r["model_accuracy"],
                *r["sensitivities"],
                r["b"],
                r["c"],
                r["p"],
            ]
            for r in ctx["readers"]
        ],
    )


def _md_plots_and_data(ctx: Mapping[str, Any]) -> list[str]:
    out = ["## Plots", ""]
    for block in ctx["plots"]:
        out += [f"### {md_cell(block['title'])}", ""]
        out += [f"![{md_cell(f['alt'])}]({f['file']})" for f in block["figs"]] + [""]
    out += ["## Data", ""]
    if ctx["splits"]:
        out += md_table(["split", "images", "patients", "sites", *ctx["classes"]], ctx["splits"])
    if ctx["dataset"]:
        out += md_table(["field", "value"], ctx["dataset"])
    return out


def render_markdown(ctx: Mapping[str, Any]) -> str:
    """`report.md` from the report context: the same tables as the HTML, cells escaped."""
    sections = (_md_head, _md_comparison, _md_per_class_and_calibration, _md_readers)
    out = [line for section in sections for line in section(ctx)]
    return "\n".join(out + _md_plots_and_data(ctx))


def render_training_report(result: StudyResult) -> dict[str, bytes]:
    """`report.html`, `report.md` and the PNG plots, keyed by file name (siblings)."""
    plots = report_plots(result)
    ctx = report_context(result, plots)
    return {
        "report.html": render_html(ctx).encode("utf-8"),
        "report.md": render_markdown(ctx).encode("utf-8"),
        **plots,
    }
