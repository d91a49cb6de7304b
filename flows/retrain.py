"""The retrain flow: data -> (arch, fold) fits -> final fits -> register -> promotion gate.

Wiring only (`tasks.retrain` around `scintiflow.ml.study.protocol`; artifacts built by
`scintiflow.ml.study.summary`). Every (arch, fold) fit and every final fit is a separate task
run whose inputs are URLs, names, numbers and small records, and whose result is a small
record: final fits stage their weights in the registry (`.../staging/<run id>/<arch>/`), so
each could run on another worker. The flow result and its artifacts record the comparison
table and the gate's decision with its reason.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from scintiflow.domain import new_run_id
from scintiflow.ml.study.exports import RetrainData
from scintiflow.ml.study.protocol import cv_plan
from scintiflow.ml.study.summary import describe_counts, retrain_artifacts, retrain_result
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
    started = time.time()
    arch_list = list(archs or ARCHS)
    registry = registry or data
    run_id = new_run_id()
    spec = RetrainData(data, labels, external_data, external_labels, readers, seed)
    cfg = TrainConfig(
        epochs=epochs, image_size=image_size, batch_size=batch_size, lr=lr, seed=seed, device=device
    )
    counts = t.load_training_data(spec)
    logger.info("retrain: %s", describe_counts(counts))
    fold_fits = [
        t.fit_fold(spec, arch, k, folds, cfg, weights) for arch, k in cv_plan(arch_list, folds)
    ]
    finals = [
        t.final_fit(spec, arch, cfg, registry, model_name, run_id, weights, n_boot)
        for arch in arch_list
    ]
    outcome = t.register_and_gate(
        spec, fold_fits, finals, registry, model_name, run_id, cfg, folds, weights, floor,
        n_boot, started,
    )  # fmt: skip
    arts = retrain_artifacts(fold_fits, outcome)
    create_table_artifact(
        arts.folds,
        key="retrain-folds",
        description="cross-validation: one row per (arch, fold) task run",
    )
    create_markdown_artifact(
        arts.comparison, key="retrain-comparison", description="the study-style comparison table"
    )
    create_markdown_artifact(arts.gate, key="retrain-gate", description=arts.gate_description)
    logger.info("retrain: %s", arts.log_line)
    return retrain_result(outcome, counts, time.time() - started)
