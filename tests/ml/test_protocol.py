"""The protocol's steps: records that travel, staging in the registry, and the same study
whether the steps run in one plain loop or one by one in other processes."""

from __future__ import annotations

import json
import math
import pickle
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scintiflow import CLASSES
from scintiflow.ml.evaluation import (
    ClassificationMetrics,
    EvalSet,
    bootstrap_cis,
    classification_metrics,
    softmax,
)
from scintiflow.ml.registry import RegistryError, list_versions, register_version
from scintiflow.ml.study import (
    FinalFit,
    FoldFit,
    RetrainOutcome,
    StagingArea,
    StudyDataError,
    conclude,
    final_fit,
    fit_fold,
    run_study,
    simulate_study_data,
    simulated_reader_reads,
    study_table,
)
from scintiflow.ml.study.protocol import check_study_inputs, cv_plan
from scintiflow.ml.study.staging import (
    read_staged_predictions,
    read_staged_weights,
    stage_final_fit,
)
from scintiflow.ml.training import TrainConfig
from scintiflow.storage import LocalStore

SCALE, SEED, FOLDS = 0.03, 0, 2
ARCHS = ("shufflenet_v2", "mobilenet_v3_small")
CFG = TrainConfig(epochs=1, image_size=64, batch_size=16, seed=SEED)
N_BOOT = 50


def _metrics(n: int, seed: int, drop_class: int | None = None) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), size=n)
    if drop_class is not None:
        y[y == drop_class] = (drop_class + 1) % len(CLASSES)  # a class absent: NaN metrics
    probs = softmax(rng.normal(size=(n, len(CLASSES))) + 2.0 * np.eye(len(CLASSES))[y])
    return y, probs, classification_metrics(y, probs)


def _through_the_wire(record: Any) -> Any:
    """What another process would get: JSON (no NaN allowed) and pickle, both ways."""
    text = json.dumps(record.to_dict(), allow_nan=False)
    return pickle.loads(pickle.dumps(type(record).from_dict(json.loads(text))))


def test_fold_and_final_records_round_trip_exactly() -> None:
    _, _, m = _metrics(60, seed=1, drop_class=2)
    assert math.isnan(m.per_class[CLASSES[2]]["auc"])
    fold = FoldFit("resnet34", 1, m, 12.5, 33.25)
    back = _through_the_wire(fold)
    assert back.to_dict() == fold.to_dict()
    assert math.isnan(back.metrics.per_class[CLASSES[2]]["auc"])

    y, p, internal = _metrics(80, seed=2)
    final = FinalFit(
        arch="resnet34",
        internal=internal,
        internal_ci=bootstrap_cis(y, p, n_boot=30, groups=np.arange(80) // 2),
        external=None,
        external_ci={},
        temperature=1.2345678901234567,
        epochs_run=7,
        seconds=3.5,
        images_per_s=40.0,
        weights_key="models/thyroid/staging/r/resnet34/weights.pt",
        weights_sha256="0" * 64,
        predictions_key="models/thyroid/staging/r/resnet34/predictions.json",
    )
    again = _through_the_wire(final)
    assert again.to_dict() == final.to_dict()
    assert again.temperature == final.temperature  # float64 survives JSON exactly
    assert again.internal_ci == final.internal_ci
    assert isinstance(again.internal, ClassificationMetrics)
    outcome = RetrainOutcome("v1", "resnet34", {"promote": True}, "| t |", "file:///r", 1.0)
    assert RetrainOutcome.from_dict(json.loads(json.dumps(outcome.to_dict()))) == outcome


def test_staging_layout_checksum_and_reserved_name(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    staging = StagingArea("models", "thyroid", "20261127T020000Z-abcdef")
    y, probs, _ = _metrics(20, seed=3)
    sets = [EvalSet("internal", [f"k{i}" for i in range(20)], y, probs, np.arange(20) // 2)]
    wkey, sha, pkey = stage_final_fit(store, staging, "resnet34", b"weights", sets)
    assert wkey == "models/thyroid/staging/20261127T020000Z-abcdef/resnet34/weights.pt"
    assert pkey == "models/thyroid/staging/20261127T020000Z-abcdef/resnet34/predictions.json"
    assert StagingArea("", "thyroid", "r").arch_prefix("a") == "thyroid/staging/r/a"
    final = FinalFit("resnet34", None, {}, None, {}, 1.0, 1, 0.0, 0.0, wkey, sha, pkey)
    assert read_staged_weights(store, final) == b"weights"
    (back,) = read_staged_predictions(store, final)
    assert back.keys == sets[0].keys
    assert np.array_equal(back.y_true, y)
    assert np.array_equal(back.probs, probs)  # exact: JSON keeps every float64
    assert np.array_equal(back.groups, np.arange(20) // 2)
    store.put(wkey, b"tampered")
    with pytest.raises(RegistryError) as info:
        read_staged_weights(store, final)
    assert info.value.reason == "weights_checksum_mismatch"
    # Staging is never a version: not listed, and refused as a version id.
    assert list_versions(store, "thyroid") == []
    with pytest.raises(RegistryError) as info:
        register_version(
            store, "thyroid", arch="resnet34", weights=b"", preprocess={}, classes=CLASSES,
            temperature=1.0, metrics={}, card={}, lineage={}, training_reference={},
            version="staging",
        )  # fmt: skip
    assert info.value.reason == "invalid_version"


def test_cv_plan_and_input_checks() -> None:
    assert cv_plan(["a", "b"], 2) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert cv_plan(["a"], 1) == []
    assert cv_plan(["a"], 0) == []
    data = simulate_study_data(0.005, seed=1)
    with pytest.raises(KeyError, match="unknown architecture"):
        check_study_inputs(data, ["vgg16"])
    with pytest.raises(ValueError, match="at least one"):
        check_study_inputs(data, [])
    empty = type(data)([], data.internal, data.external, data.labels_sha256, data.source)
    with pytest.raises(StudyDataError) as info:
        check_study_inputs(empty, ["resnet34"])
    assert info.value.reason == "too_small"


# Steps run in a spawned worker: a fresh interpreter that rebuilds the data from the simulator's
# parameters and sees only small inputs; it hands back plain dicts.


def _fold_in_worker(arch: str, fold: int, cfg: dict[str, Any]) -> dict[str, Any]:
    data = simulate_study_data(SCALE, seed=SEED)
    return fit_fold(data, arch, fold, FOLDS, TrainConfig(**cfg)).to_dict()


def _final_in_worker(
    arch: str, cfg: dict[str, Any], root: str, staging: tuple[str, str, str]
) -> dict[str, Any]:
    data = simulate_study_data(SCALE, seed=SEED)
    fit = final_fit(
        data, arch, TrainConfig(**cfg), LocalStore(root), StagingArea(*staging), n_boot=N_BOOT
    )
    return fit.to_dict()


def _assert_close(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            assert a is b, path
        else:
            assert a == pytest.approx(b, abs=1e-6, nan_ok=True), path
    else:
        assert a == b, path


@pytest.mark.slow
def test_plain_loop_equals_steps_run_one_by_one_in_other_processes(tmp_path: Path) -> None:
    data = simulate_study_data(SCALE, seed=SEED)
    loop = run_study(
        data,
        LocalStore(tmp_path / "loop"),
        archs=ARCHS,
        folds=FOLDS,
        train_config=CFG,
        reads=simulated_reader_reads(data),
        floor=0.0,
        n_boot=N_BOOT,
    )

    root = tmp_path / "steps"
    staging = ("models", "thyroid", "20261127T020000Z-000000")
    cfg = json.loads(json.dumps(CFG.to_dict()))
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as worker:
        folds = [
            worker.submit(_fold_in_worker, arch, k, cfg).result() for arch, k in cv_plan(ARCHS, 2)
        ]
        finals = [
            worker.submit(_final_in_worker, arch, cfg, str(root), staging).result()
            for arch in ARCHS
        ]
    # conclude here, in another process than the fits, from the records alone (via JSON).
    fresh = simulate_study_data(SCALE, seed=SEED)
    steps = conclude(
        fresh,
        [FoldFit.from_dict(json.loads(json.dumps(f, allow_nan=False))) for f in folds],
        [FinalFit.from_dict(json.loads(json.dumps(f, allow_nan=False))) for f in finals],
        LocalStore(root),
        StagingArea(*staging),
        CFG,
        folds=FOLDS,
        reads=simulated_reader_reads(fresh),
        floor=0.0,
        n_boot=N_BOOT,
    )

    assert study_table(steps.result) == study_table(loop.result)
    assert steps.result.best_arch == loop.result.best_arch
    for mine, theirs in zip(steps.result.archs, loop.result.archs, strict=True):
        a, b = mine.to_dict(), theirs.to_dict()
        a.pop("train_seconds")
        b.pop("train_seconds")
        _assert_close(a, b, mine.arch)
        assert len(mine.folds) == FOLDS
        for es, other in zip(mine.eval_sets, theirs.eval_sets, strict=True):
            assert es.keys == other.keys
            assert np.allclose(es.probs, other.probs, atol=1e-6, rtol=0)
    _assert_close(steps.result.readers, loop.result.readers, "readers")
    assert steps.decision.reason == loop.decision.reason == "no_champion_above_floor"
    assert steps.decision.candidate_accuracy == pytest.approx(
        loop.decision.candidate_accuracy, abs=1e-6
    )
    assert steps.record().table == loop.record().table
