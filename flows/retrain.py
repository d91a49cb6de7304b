"""The retrain flow: data -> (arch, fold) fits -> final fits -> register -> promotion gate.

Wiring only (`tasks.retrain` around `scintiflow.ml.retrain`). Every (arch, fold) fit is a
separate task run so fits can fan out to other workers later ([F7]); the flow result and its
artifacts record the comparison table and the gate's decision with its reason.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from scintiflow.ml.retrain import RetrainData
from scintiflow.ml.training import TrainConfig
from tasks import retrain as t


@flow(name="retrain", log_prints=False)
def retrain(
    data: str,
    labels: str,
    external_data: str | None = None,
    external_labels: str | None = None,
    readers: str | None = None,
    archs: list[str] | None = None,
    folds: int = 5,
    epochs: int = 30,
    image_size: int = 224,
    batch_size: int = 32,
    lr: float | None = None,
    weights: str = "none",
    registry: str | None = None,
    model_name: str = "thyroid",
    floor: float = 0.85,
    n_boot: int = 1000,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, Any]:
    """Cross-validate `archs` (default: all four), register the best, apply the gate."""
    from scintiflow.ml.models import ARCHS

    logger = get_run_logger()
    started = time.perf_counter()
    arch_list = list(archs or ARCHS)
    spec = RetrainData(data, labels, external_data, external_labels, readers, seed)
    cfg = TrainConfig(
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
    )
    counts = t.load_training_data(spec)
    logger.info(
        "retrain: %s", ", ".join(f"{k} {v['n']}" for k, v in counts.items() if k != "skipped")
    )
    fold_fits = {
        arch: [t.fit_fold(spec, arch, k, folds, cfg, weights) for k in range(folds)]
        if folds >= 2
        else []
        for arch in arch_list
    }
    finals = [t.final_fit(spec, arch, fold_fits[arch], cfg, weights, n_boot) for arch in arch_list]
    outcome = t.register_and_gate(
        spec, finals, registry or data, cfg, folds, weights, model_name, floor, n_boot
    )
    d = outcome.decision
    verdict = "promoted to champion" if d["promote"] else "not promoted"
    create_table_artifact(
        [
            {
                "arch": f.arch,
                "fold": f.fold + 1,
                "accuracy": round(f.metrics.accuracy, 4),
                "seconds": round(f.seconds, 1),
            }
            for fits in fold_fits.values()
            for f in fits
        ]
        or [{"arch": "-", "fold": 0, "accuracy": None, "seconds": 0}],
        key="retrain-folds",
        description="cross-validation: one row per (arch, fold) task run",
    )
    create_markdown_artifact(
        f"# Retrain: architectures compared\n\n{outcome.table}\n\n`*` best mean CV accuracy; "
        f"registered `{outcome.version}` ({outcome.best_arch}). "
        f"[training report]({outcome.report})",
        key="retrain-comparison",
        description="the study-style comparison table",
    )
    create_markdown_artifact(
        f"# Gate: {verdict}\n\n| | |\n|---|---|\n| reason | `{d['reason']}` |\n"
        f"| candidate | `{d['candidate_version']}` accuracy {d['candidate_accuracy']:.3f} |\n"
        f"| champion | `{d['champion_version']}` accuracy "
        f"{'-' if d['champion_accuracy'] is None else format(d['champion_accuracy'], '.3f')} |\n"
        f"| floor | {d['floor']:.2f} |\n| evaluated on | `{d['external_set']}` |\n",
        key="retrain-gate",
        description=f"promotion gate: {verdict} ({d['reason']})",
    )
    logger.info("retrain: registered %s; gate %s (%s)", outcome.version, verdict, d["reason"])
    # `seconds`: the whole flow (data, fits, registration), not only the registering task
    return {
        **outcome.to_dict(),
        "seconds": round(time.perf_counter() - started, 1),
        "promoted": bool(d["promote"]),
        "counts": counts,
    }
