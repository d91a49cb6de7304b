"""The report's plots: confusion matrices and one-vs-rest ROC curves, as PNG bytes.

matplotlib `Figure` + Agg canvas: no pyplot global state, no display. PNGs carry no text chunks.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from scintiflow import CLASSES
from scintiflow.ml.evaluation import ClassificationMetrics, EvalSet, StudyResult
from scintiflow.ml.training_report.formatting import SETS, fmt, set_metrics, slug


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
        ax.plot(fpr, tpr, linewidth=1.5, label=f"{cls} (AUC {fmt(auc)})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return _png(fig)


def report_plots(result: StudyResult) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for a in result.archs:
        sets = {e.name: e for e in a.eval_sets}
        for set_name in SETS:
            m = set_metrics(a, set_name)
            stem = f"{slug(a.arch)}-{set_name}"
            if m is not None:
                out[f"confusion-{stem}.png"] = confusion_png(m, f"{a.arch}, {set_name} (n={m.n})")
            if set_name in sets and len(sets[set_name].keys) > 0:
                classes = m.classes if m is not None else CLASSES
                out[f"roc-{stem}.png"] = roc_png(
                    sets[set_name], m, f"{a.arch}, {set_name}: one-vs-rest ROC", classes
                )
    return out
