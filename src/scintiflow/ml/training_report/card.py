"""The model card of one architecture of a study run: `card.json` and `card.md`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scintiflow import CLASSES, __version__
from scintiflow.ml.evaluation import ArchResult, ClassificationMetrics, StudyResult, json_safe
from scintiflow.ml.training_report.formatting import (
    SETS,
    TABLE_METRICS,
    fmt,
    fmt_ci,
    fmt_p,
    is_simulated,
    md_cell,
    md_table,
    other_rows,
    set_ci,
    set_metrics,
    split_rows,
)

INTENDED_USE = (
    "Decision support for nuclear-medicine physicians reading planar anterior thyroid "
    "scintigraphy (Tc-99m pertechnetate or I-123): it proposes one of four classes with "
    "calibrated probabilities and a heatmap of the evidence. It is not a diagnosis and must "
    "not be used without a physician's review."
)


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
    simulated = is_simulated(result)
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
    out = [f"# Model card: {md_cell(title)}", ""]
    out += [
        f"Architecture: **{md_cell(card['arch'])}**. Classes: "
        + ", ".join(f"`{c}`" for c in card["classes"])
        + ".",
        "",
    ]
    out += ["## Intended use", "", card["intended_use"], ""]
    out += ["Not intended for: " + "; ".join(card["not_intended_for"]) + ".", ""]
    out += ["## Data", ""]
    data = card["data"]
    out += ["**Simulated data.**" if data.get("simulated") else "Real (site) data.", ""]
    splits = split_rows(data)
    if splits:
        out += md_table(["split", "images", "patients", "sites", *CLASSES], splits)
    out += md_table(["field", "value"], other_rows(data))
    out += ["## Metrics", ""]
    rows: list[list[Any]] = []
    for set_name in SETS:
        m = set_metrics(a, set_name)
        ci = set_ci(a, set_name)
        if m is not None:
            rows.append(
                [set_name, m.n]
                + [fmt_ci(m.value(name), ci.get(name)) for name, _ in TABLE_METRICS]
                + [fmt(m.ece)]
            )
    s = a.cv_summary
    if s:
        rows.append(
            [f"cross-validation ({len(a.folds)} folds, mean ± sd)", ""]
            + [f"{fmt(s[n][0])} ± {fmt(s[n][1])}" if n in s else "n/a" for n, _ in TABLE_METRICS]
            + [f"{fmt(s['ece'][0])} ± {fmt(s['ece'][1])}" if "ece" in s else "n/a"]
        )
    out += md_table(["set", "n", *[h for _, h in TABLE_METRICS], "ECE"], rows)
    out += [f"Temperature: {fmt(a.temperature)}.", ""]
    if card["readers"]:
        out += ["## Readers", ""]
        out += md_table(
            ["reader", "n", "reader accuracy", "model accuracy", "McNemar p"],
            [
                [
                    str(r["reader_id"]) + (" (simulated)" if r.get("simulated") else ""),
                    r["n"],
                    fmt(r["accuracy"]),
                    fmt(r["model_accuracy"]),
                    fmt_p(r["mcnemar_p"]),
                ]
                for r in card["readers"]
            ],
        )
    out += ["## Limitations", ""] + [f"- {x}" for x in card["limitations"]] + [""]
    return "\n".join(out)
