"""The training report (`report.html`, `report.md`, plots) and the model card of a study run.

The report reproduces the published study's presentation: one row per architecture with
internal and external accuracy, sensitivity, specificity and AUC (95 % bootstrap CIs), the
cross-validation folds, confusion matrices, ROC curves and the comparison with readers.
Everything is rendered from a `StudyResult` in memory; the caller writes the returned files
into the model version folder. The HTML is self-contained (inline CSS, plots embedded as data
URIs and linked to their sibling PNG files) and opens offline. Every value that came from
outside (reader ids, dataset descriptions) is HTML-escaped by Jinja2's autoescape; PNGs carry
no text chunks.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scintiflow import CLASSES, __version__
from scintiflow.ml.evaluation import (
    ArchResult,
    ClassificationMetrics,
    EvalSet,
    StudyResult,
    json_safe,
)

TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("accuracy", "Accuracy"),
    ("macro_sensitivity", "Sensitivity"),
    ("macro_specificity", "Specificity"),
    ("macro_auc", "AUC"),
)
"""Columns of the study-style table; sensitivity/specificity are macro averages over classes."""

SETS: tuple[str, ...] = ("internal", "external")

INTENDED_USE = (
    "Decision support for nuclear-medicine physicians reading planar anterior thyroid "
    "scintigraphy (Tc-99m pertechnetate or I-123): it proposes one of four classes with "
    "calibrated probabilities and a heatmap of the evidence. It is not a diagnosis and must "
    "not be used without a physician's review."
)


# --------------------------------------------------------------------------------------------
# Formatting


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _fmt_ci(value: float | None, ci: Sequence[float] | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if ci is None or not all(math.isfinite(x) for x in ci):
        return _fmt(value)
    return f"{_fmt(value)} ({_fmt(ci[0])} to {_fmt(ci[1])})"


def _fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _metric(m: ClassificationMetrics | None, name: str) -> float | None:
    return None if m is None else m.value(name)


def _set_metrics(a: ArchResult, set_name: str) -> ClassificationMetrics | None:
    return a.internal if set_name == "internal" else a.external


def _set_ci(a: ArchResult, set_name: str) -> Mapping[str, tuple[float, float]]:
    return a.internal_ci if set_name == "internal" else a.external_ci


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "x"


def _md_cell(value: Any) -> str:
    """A value made safe for a markdown table cell (no raw HTML, no column breaks)."""
    return html.escape(str(value), quote=False).replace("|", "\\|").replace("\n", " ")


def _is_simulated(result: StudyResult) -> bool:
    """Whether the study ran on simulated images: `dataset["simulated"]` or a source of kind
    `simulated` in the dataset or the config."""
    if result.dataset.get("simulated"):
        return True
    for holder in (result.dataset, result.config):
        source = holder.get("source")
        if isinstance(source, Mapping) and source.get("kind") == "simulated":
            return True
    return False


def _split_rows(dataset: Mapping[str, Any]) -> list[list[str]]:
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


def _other_rows(dataset: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        (str(k), v if isinstance(v, str) else json.dumps(json_safe(v)))
        for k, v in dataset.items()
        if not (isinstance(v, Mapping) and "n" in v)
    ]


# --------------------------------------------------------------------------------------------
# Plots (matplotlib Figure + Agg canvas: no pyplot global state, no display)


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # metadata={"Software": None} drops matplotlib's only text chunk: PNGs carry no tEXt.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def confusion_png(m: ClassificationMetrics, title: str) -> bytes:
    """A confusion-matrix heatmap with counts (rows: truth, columns: prediction)."""
    from matplotlib.figure import Figure

    cm = np.asarray(m.confusion, dtype=float)
    classes = m.classes
    fig = Figure(figsize=(4.6, 4.0))
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), [c.replace("_", "\n") for c in classes], fontsize=7)
    ax.set_yticks(range(len(classes)), [c.replace("_", "\n") for c in classes], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    top = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            colour = "white" if top and cm[i, j] > top / 2 else "black"
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color=colour, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def roc_png(
    eval_set: EvalSet,
    metrics: ClassificationMetrics | None,
    title: str,
    classes: Sequence[str] = CLASSES,
) -> bytes:
    """One-vs-rest ROC curves, one per class present in the set, with their AUCs."""
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    y = np.asarray(eval_set.y_true)
    probs = np.asarray(eval_set.probs)
    fig = Figure(figsize=(4.6, 4.0))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1)
    for i, cls in enumerate(classes):
        pos = y == i
        if pos.all() or not pos.any():
            continue
        fpr, tpr, _ = roc_curve(pos, probs[:, i])
        auc = metrics.per_class[cls]["auc"] if metrics is not None else float("nan")
        ax.plot(fpr, tpr, linewidth=1.5, label=f"{cls} (AUC {_fmt(auc)})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _plots(result: StudyResult) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for a in result.archs:
        sets = {e.name: e for e in a.eval_sets}
        for set_name in SETS:
            m = _set_metrics(a, set_name)
            stem = f"{_slug(a.arch)}-{set_name}"
            if m is not None:
                out[f"confusion-{stem}.png"] = confusion_png(m, f"{a.arch}, {set_name} (n={m.n})")
            if set_name in sets and len(sets[set_name].keys) > 0:
                classes = m.classes if m is not None else CLASSES
                out[f"roc-{stem}.png"] = roc_png(
                    sets[set_name], m, f"{a.arch}, {set_name}: one-vs-rest ROC", classes
                )
    return out


# --------------------------------------------------------------------------------------------
# Report content shared by HTML and markdown


def _comparison_rows(result: StudyResult) -> list[dict[str, Any]]:
    rows = []
    for a in result.archs:
        cells = []
        for set_name in SETS:
            m = _set_metrics(a, set_name)
            ci = _set_ci(a, set_name)
            for name, _ in TABLE_METRICS:
                cells.append(_fmt_ci(_metric(m, name), ci.get(name)))
        rows.append({"arch": a.arch, "best": a.arch == result.best_arch, "cells": cells})
    return rows


def _cv_rows(result: StudyResult) -> list[dict[str, Any]]:
    rows = []
    for a in result.archs:
        s = a.cv_summary

        def ms(name: str, s: Mapping[str, tuple[float, float]] = s) -> str:
            if name not in s or not math.isfinite(s[name][0]):
                return "n/a"
            return f"{_fmt(s[name][0])} ± {_fmt(s[name][1])}"

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
                    "cells": [_fmt(f.accuracy), _fmt(f.macro_auc), _fmt(f.ece)]
                    + [_fmt(f.per_class[c]["sensitivity"]) for c in f.classes],
                }
            )
    return rows


def _per_class_tables(result: StudyResult) -> list[dict[str, Any]]:
    tables = []
    for a in result.archs:
        if a.arch != result.best_arch:
            continue
        for set_name in SETS:
            m = _set_metrics(a, set_name)
            if m is None:
                continue
            tables.append(
                {
                    "title": f"{a.arch}, {set_name} set (n={m.n})",
                    "rows": [
                        {
                            "cls": c,
                            "cells": [
                                _fmt(m.per_class[c][k])
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
                "accuracy": _fmt(r.get("accuracy")),
                "model_accuracy": _fmt(r.get("model_accuracy")),
                "sensitivities": [
                    _fmt((per_class.get(c) or {}).get("sensitivity")) for c in CLASSES
                ],
                "b": mc.get("b", ""),
                "c": mc.get("c", ""),
                "p": _fmt_p(mc.get("p_value")),
            }
        )
    return rows


def _plot_entries(result: StudyResult, plots: Mapping[str, bytes]) -> list[dict[str, Any]]:
    entries = []
    for a in result.archs:
        for set_name in SETS:
            stem = f"{_slug(a.arch)}-{set_name}"
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


def _context(result: StudyResult, plots: Mapping[str, bytes]) -> dict[str, Any]:
    any_simulated_reader = any(r["simulated"] for r in _reader_rows(result))
    return {
        "version": __version__,
        "best_arch": result.best_arch,
        "simulated_data": _is_simulated(result),
        "simulated_readers": any_simulated_reader,
        "splits": _split_rows(result.dataset),
        "dataset": _other_rows(result.dataset),
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
                "temperature": _fmt(a.temperature, 3),
                "ece_internal": _fmt(_metric(a.internal, "ece")),
                "ece_external": _fmt(_metric(a.external, "ece")),
                "epochs": a.epochs_run,
                "seconds": f"{a.train_seconds:.0f}",
            }
            for a in result.archs
        ],
        "plots": _plot_entries(result, plots),
    }


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>scintiflow training report</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}
tr.best td{font-weight:bold;background:#eef6ee}
.banner{background:#fff4e0;border:1px solid #e0a040;padding:.5em 1em;margin:1em 0}
.sim{background:#e0a040;color:#fff;border-radius:3px;padding:0 .3em;font-size:.8em}
figure{display:inline-block;margin:.5em}figure img{width:360px}
pre{background:#f7f7f7;padding:.5em;font-size:.8em;overflow:auto}
.note{color:#555;font-size:.85em}
</style></head><body>
<h1>scintiflow training report</h1>
<p>Chosen architecture: <b>{{ best_arch }}</b>. scintiflow {{ version }}.
Decision support, not a diagnosis.</p>
{% if simulated_data %}<div class="banner">Trained and evaluated on <b>simulated</b>
scintigraphy (scintiflow's phantom), not patient data.</div>{% endif %}
{% if simulated_readers %}<div class="banner">Reader rows marked
<span class="sim">simulated</span> are synthetic reads for demonstration, not physicians.
</div>{% endif %}

<h2>Study-style comparison</h2>
<p class="note">Accuracy, macro-averaged sensitivity and specificity, macro one-vs-rest AUC;
95 % bootstrap CIs (patients resampled) in brackets.</p>
<table><tr><th class="l" rowspan="2">architecture</th>
<th colspan="{{ metric_heads|length }}">internal validation</th>
<th colspan="{{ metric_heads|length }}">external validation</th></tr>
<tr>{% for _ in range(2) %}{% for h in metric_heads %}<th>{{ h }}</th>{% endfor %}{% endfor %}</tr>
{% for row in comparison %}<tr{% if row.best %} class="best"{% endif %}>
<td class="l">{{ row.arch }}{% if row.best %} (chosen){% endif %}</td>
{% for c in row.cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>

<h2>Cross-validation (patient-grouped, stratified)</h2>
<table><tr><th class="l">architecture</th><th>folds</th><th>accuracy</th><th>sensitivity</th>
<th>specificity</th><th>AUC</th><th>ECE</th></tr>
{% for row in cv %}<tr><td class="l">{{ row.arch }}</td><td>{{ row.folds }}</td>
{% for c in row.cells %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
<p class="note">mean ± sd over folds.</p>
<h3>Per fold</h3>
<table><tr><th class="l">architecture</th><th>fold</th><th>n</th><th>accuracy</th>
<th>macro AUC</th><th>ECE</th>{% for c in classes %}<th>sens. {{ c }}</th>{% endfor %}</tr>
{% for row in folds %}<tr><td class="l">{{ row.arch }}</td><td>{{ row.fold }}</td>
<td>{{ row.n }}</td>{% for c in row.cells %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>

<h2>Per class ({{ best_arch }})</h2>
{% for t in per_class %}<h3>{{ t.title }}</h3>
<table><tr><th class="l">class</th><th>sensitivity</th><th>specificity</th><th>PPV</th>
<th>NPV</th><th>F1</th><th>AUC</th></tr>
{% for row in t.rows %}<tr><td class="l">{{ row.cls }}</td>
{% for c in row.cells %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% endfor %}

<h2>Calibration and training</h2>
<table><tr><th class="l">architecture</th><th>temperature</th><th>ECE internal</th>
<th>ECE external</th><th>epochs</th><th>train seconds</th></tr>
{% for row in calibration %}<tr><td class="l">{{ row.arch }}</td><td>{{ row.temperature }}</td>
<td>{{ row.ece_internal }}</td><td>{{ row.ece_external }}</td><td>{{ row.epochs }}</td>
<td>{{ row.seconds }}</td></tr>{% endfor %}</table>
<p class="note">ECE after temperature scaling (fitted on validation data).</p>

<h2>Reader comparison</h2>
{% if readers %}
<table><tr><th class="l">reader</th><th class="l">set</th><th>n</th><th>reader accuracy</th>
<th>model accuracy</th>{% for c in classes %}<th>sens. {{ c }}</th>{% endfor %}
<th>b (model only)</th><th>c (reader only)</th><th>McNemar p</th></tr>
{% for r in readers %}<tr><td class="l">{{ r.reader_id }}{% if r.simulated %}
<span class="sim">simulated</span>{% endif %}</td><td class="l">{{ r.set }}</td>
<td>{{ r.n }}</td><td>{{ r.accuracy }}</td><td>{{ r.model_accuracy }}</td>
{% for s in r.sensitivities %}<td>{{ s }}</td>{% endfor %}
<td>{{ r.b }}</td><td>{{ r.c }}</td><td>{{ r.p }}</td></tr>{% endfor %}</table>
<p class="note">Paired on the cases each reader read; exact (binomial) McNemar test of the
model against the reader.</p>
{% else %}<p>No reader reads were supplied.</p>{% endif %}

<h2>Confusion matrices and ROC curves</h2>
{% for block in plots %}<h3>{{ block.title }}</h3>
{% for f in block.figs %}<figure><a href="{{ f.file }}"><img alt="{{ f.alt }}"
src="data:image/png;base64,{{ f.data }}"></a></figure>{% endfor %}
{% endfor %}

<h2>Data</h2>
{% if splits %}<table><tr><th class="l">split</th><th>images</th><th>patients</th>
<th class="l">sites</th>{% for c in classes %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in splits %}<tr>{% for c in row %}<td{% if loop.index in (1, 4) %} class="l"
{%- endif %}>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}
<table>{% for k, v in dataset %}<tr><td class="l">{{ k }}</td><td class="l">{{ v }}</td></tr>
{% endfor %}</table>
<h2>Configuration</h2>
<pre>{{ config }}</pre>
</body></html>
"""


def _render_html(ctx: Mapping[str, Any]) -> str:
    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=False)
    return env.from_string(_HTML).render(**ctx)


def _md_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |"]
    lines.append("|" + "|".join("---" for _ in head) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _render_md(ctx: Mapping[str, Any]) -> str:
    out = ["# scintiflow training report", ""]
    out += [
        f"Chosen architecture: **{_md_cell(ctx['best_arch'])}**. Decision support, "
        "not a diagnosis.",
        "",
    ]
    if ctx["simulated_data"]:
        out += ["> Trained and evaluated on **simulated** scintigraphy, not patient data.", ""]
    out += ["## Study-style comparison", ""]
    out += [
        "Accuracy, macro sensitivity/specificity, macro one-vs-rest AUC; 95 % bootstrap "
        "CIs (patients resampled) in brackets.",
        "",
    ]
    heads = [f"{s} {h}" for s in SETS for h in ctx["metric_heads"]]
    out += _md_table(
        ["architecture", *heads],
        [[r["arch"] + (" (chosen)" if r["best"] else ""), *r["cells"]] for r in ctx["comparison"]],
    )
    out += ["## Cross-validation (mean ± sd over folds)", ""]
    out += _md_table(
        ["architecture", "folds", "accuracy", "sensitivity", "specificity", "AUC", "ECE"],
        [[r["arch"], r["folds"], *r["cells"]] for r in ctx["cv"]],
    )
    out += ["### Per fold", ""]
    out += _md_table(
        ["architecture", "fold", "n", "accuracy", "macro AUC", "ECE"]
        + [f"sens. {c}" for c in ctx["classes"]],
        [[r["arch"], r["fold"], r["n"], *r["cells"]] for r in ctx["folds"]],
    )
    out += [f"## Per class ({_md_cell(ctx['best_arch'])})", ""]
    for t in ctx["per_class"]:
        out += [f"### {_md_cell(t['title'])}", ""]
        out += _md_table(
            ["class", "sensitivity", "specificity", "PPV", "NPV", "F1", "AUC"],
            [[r["cls"], *r["cells"]] for r in t["rows"]],
        )
    out += ["## Calibration and training", ""]
    out += _md_table(
        ["architecture", "temperature", "ECE internal", "ECE external", "epochs", "train s"],
        [
            [
                r["arch"],
                r["temperature"],
                r["ece_internal"],
                r["ece_external"],
                r["epochs"],
                r["seconds"],
            ]
            for r in ctx["calibration"]
        ],
    )
    out += ["## Reader comparison", ""]
    if ctx["readers"]:
        out += _md_table(
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
    else:
        out += ["No reader reads were supplied.", ""]
    out += ["## Plots", ""]
    for block in ctx["plots"]:
        out += [f"### {_md_cell(block['title'])}", ""]
        out += [f"![{_md_cell(f['alt'])}]({f['file']})" for f in block["figs"]] + [""]
    out += ["## Data", ""]
    if ctx["splits"]:
        out += _md_table(["split", "images", "patients", "sites", *ctx["classes"]], ctx["splits"])
    if ctx["dataset"]:
        out += _md_table(["field", "value"], ctx["dataset"])
    return "\n".join(out)


def render_training_report(result: StudyResult) -> dict[str, bytes]:
    """`report.html`, `report.md` and the PNG plots, keyed by file name (siblings)."""
    plots = _plots(result)
    ctx = _context(result, plots)
    return {
        "report.html": _render_html(ctx).encode("utf-8"),
        "report.md": _render_md(ctx).encode("utf-8"),
        **plots,
    }


# --------------------------------------------------------------------------------------------
# Model card


def _metrics_block(a: ArchResult) -> dict[str, Any]:
    def summary(m: ClassificationMetrics | None, ci: Mapping[str, tuple[float, float]]) -> Any:
        if m is None:
            return None
        return {
            "n": m.n,
            **{name: m.value(name) for name, _ in TABLE_METRICS},
            "ece": m.ece,
            "ci95": {k: list(v) for k, v in ci.items()},
            "per_class": m.per_class,
        }

    return {
        "cross_validation": {k: {"mean": v[0], "sd": v[1]} for k, v in a.cv_summary.items()},
        "folds": len(a.folds),
        "internal": summary(a.internal, a.internal_ci),
        "external": summary(a.external, a.external_ci),
    }


def model_card(
    result: StudyResult,
    arch: str,
    *,
    name: str = "",
    version: str = "",
    classes: Sequence[str] = CLASSES,
    preprocess: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], str]:
    """The model card of one architecture of a study run: (`card.json` dict, `card.md` text).

    Says what the model is for (decision support, not diagnosis), what it was trained and
    tested on (simulated or real, sites, sizes: whatever `result.dataset` records), its
    metrics with CIs, the reader comparison and its known limitations.
    """
    a = result.arch(arch)
    simulated = _is_simulated(result)
    limitations = [
        "Four classes only (normal, Graves' disease, subacute thyroiditis, thyroid tumour); "
        "other findings (e.g. ectopic tissue, multinodular goitre) are forced into one of them.",
        "Planar anterior views only; SPECT, other views and other tracers are out of scope.",
        "Accuracy on a new site can be lower than on the external set: re-validate locally.",
        "Probabilities are temperature-scaled on validation data; calibration can drift.",
    ]
    if simulated:
        limitations.insert(
            0,
            "Trained and evaluated on SIMULATED images (scintiflow's phantom): the numbers "
            "describe the simulator, not clinical performance.",
        )
    if any(is_sim for is_sim in (r.get("simulated", False) for r in result.readers)):
        limitations.append("The reader comparison uses simulated readers (demonstration only).")
    card = json_safe(
        {
            "name": name,
            "version": version,
            "arch": arch,
            "chosen_arch": result.best_arch,
            "classes": list(classes),
            "intended_use": INTENDED_USE,
            "not_intended_for": [
                "autonomous diagnosis or treatment decisions",
                "images other than planar thyroid scintigraphy",
            ],
            "data": {
                "simulated": simulated,
                **({"source": result.config["source"]} if "source" in result.config else {}),
                **dict(result.dataset),
            },
            "preprocess": dict(preprocess or {}),
            "temperature": a.temperature,
            "metrics": _metrics_block(a),
            "readers": [
                {k: r.get(k) for k in ("reader_id", "simulated", "n", "accuracy", "model_accuracy")}
                | {"mcnemar_p": (r.get("mcnemar") or {}).get("p_value")}
                for r in result.readers
            ],
            "training": {
                "epochs_run": a.epochs_run,
                "train_seconds": a.train_seconds,
                "config": dict(result.config),
            },
            "limitations": limitations,
            "software": f"scintiflow {__version__}",
        }
    )
    return card, _card_md(card, a)


def _card_md(card: Mapping[str, Any], a: ArchResult) -> str:
    title = f"{card['name']} {card['version']}".strip() or card["arch"]
    out = [f"# Model card: {_md_cell(title)}", ""]
    out += [
        f"Architecture: **{_md_cell(card['arch'])}**. Classes: "
        + ", ".join(f"`{c}`" for c in card["classes"])
        + ".",
        "",
    ]
    out += ["## Intended use", "", card["intended_use"], ""]
    out += ["Not intended for: " + "; ".join(card["not_intended_for"]) + ".", ""]
    out += ["## Data", ""]
    data = card["data"]
    out += ["**Simulated data.**" if data.get("simulated") else "Real (site) data.", ""]
    splits = _split_rows(data)
    if splits:
        out += _md_table(["split", "images", "patients", "sites", *CLASSES], splits)
    out += _md_table(["field", "value"], _other_rows(data))
    out += ["## Metrics", ""]
    rows: list[list[Any]] = []
    for set_name in SETS:
        m = _set_metrics(a, set_name)
        ci = _set_ci(a, set_name)
        if m is not None:
            rows.append(
                [set_name, m.n]
                + [_fmt_ci(m.value(name), ci.get(name)) for name, _ in TABLE_METRICS]
                + [_fmt(m.ece)]
            )
    s = a.cv_summary
    if s:
        rows.append(
            [f"cross-validation ({len(a.folds)} folds, mean ± sd)", ""]
            + [f"{_fmt(s[n][0])} ± {_fmt(s[n][1])}" if n in s else "n/a" for n, _ in TABLE_METRICS]
            + [f"{_fmt(s['ece'][0])} ± {_fmt(s['ece'][1])}" if "ece" in s else "n/a"]
        )
    out += _md_table(["set", "n", *[h for _, h in TABLE_METRICS], "ECE"], rows)
    out += [f"Temperature: {_fmt(a.temperature)}.", ""]
    if card["readers"]:
        out += ["## Readers", ""]
        out += _md_table(
            ["reader", "n", "reader accuracy", "model accuracy", "McNemar p"],
            [
                [
                    str(r["reader_id"]) + (" (simulated)" if r.get("simulated") else ""),
                    r["n"],
                    _fmt(r["accuracy"]),
                    _fmt(r["model_accuracy"]),
                    _fmt_p(r["mcnemar_p"]),
                ]
                for r in card["readers"]
            ],
        )
    out += ["## Limitations", ""] + [f"- {x}" for x in card["limitations"]] + [""]
    return "\n".join(out)
