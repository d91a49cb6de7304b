"""The training report (`report.html`, `report.md`, plots) and the model card of a study run.

The report reproduces the published study's presentation: one row per architecture with
internal and external accuracy, sensitivity, specificity and AUC (95 % bootstrap CIs), the
cross-validation folds, confusion matrices, ROC curves and the comparison with readers.
Everything is rendered from a `StudyResult` in memory; the caller writes the returned files
into the model version folder. The HTML (template `scintiflow/ml/templates/
training_report.html.j2`) is self-contained (inline CSS, plots embedded as data URIs and linked
to their sibling PNG files) and opens offline. Every value that came from outside (reader ids,
dataset descriptions) is HTML-escaped by Jinja2's autoescape; PNGs carry no text chunks.

Modules: `formatting` (numbers, cells, tables), `plots`, `context` (the rows both formats
show), `render` (HTML and markdown), `card` (the model card).
"""

from scintiflow.ml.training_report.card import INTENDED_USE, model_card
from scintiflow.ml.training_report.formatting import SETS, TABLE_METRICS
from scintiflow.ml.training_report.plots import confusion_png, roc_png
from scintiflow.ml.training_report.render import render_training_report

__all__ = [
    "INTENDED_USE",
    "SETS",
    "TABLE_METRICS",
    "confusion_png",
    "model_card",
    "render_training_report",
    "roc_png",
]
