"""INT8 per version end to end: a small trained net, its proof in int8.json, engine choice."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scintiflow import CLASSES
from scintiflow.inference.engines import (
    EngineError,
    load_scoring_model,
    open_engine,
    select_engine,
)
from scintiflow.inference.engines.agreement import Int8Rule, SetComparison, int8_verdict
from scintiflow.inference.engines.calibration import CalibrationSet, calibration_set
from scintiflow.inference.engines.int8 import (
    INT8_CALIBRATION,
    INT8_GRAPH,
    INT8_PROOF,
    int8_isa,
    int8_permission,
    prove_int8,
    read_int8_proof,
)
from scintiflow.ml.preprocess import PreprocessConfig, preprocess_batch
from scintiflow.sim import simulate_cases
from scintiflow.storage import LocalStore

SIZE = 64
NIGHT = date(2026, 11, 27)


@dataclass(frozen=True)
class _Image:
    key: str
    label: int
    site: str
    pixels: np.ndarray


def _labelled(n: int, seed: int, sites: tuple[str, ...]) -> tuple[list[_Image], np.ndarray]:
    cases = simulate_cases(n, seed=seed, difficulty=0.0, sites=sites, class_weights=[1, 1, 1, 1])
    images = [
        _Image(f"sim/{seed}/{i:04d}", CLASSES.index(c.label), c.site, c.image.astype(np.float32))
        for i, c in enumerate(cases)
    ]
    return images, np.array([im.label for im in images])


@dataclass(frozen=True)
class _Trained:
    store: LocalStore
    version: str
    train: list[_Image]
    eval_sets: dict[str, tuple[np.ndarray, np.ndarray]]


def _register(store: LocalStore, model: object, arch: str) -> str:
    from scintiflow.ml.models import state_dict_bytes
    from scintiflow.ml.registry import register_version

    return register_version(
        store,
        "thyroid",
        arch=arch,
        weights=state_dict_bytes(model),  # type: ignore[arg-type]
        preprocess=PreprocessConfig(image_size=SIZE).to_dict(),
        classes=CLASSES,
        temperature=1.0,
        metrics={},
        card={},
        lineage={},
        training_reference={},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> _Trained:
    """A small real training run (ResNet-34, 64 px), registered, with internal/external sets."""
    import torch

    from scintiflow.ml.models import create_model
    from scintiflow.ml.training import TrainConfig, fit

    train, y = _labelled(64, seed=3, sites=("A", "B"))
    val, y_val = _labelled(16, seed=4, sites=("A", "B"))
    torch.manual_seed(0)
    model = create_model("resnet34")
    config = TrainConfig(epochs=3, image_size=SIZE, batch_size=16, device="cpu", augment=False)
    fit(
        model,
        [im.pixels for im in train],
        y,
        [im.pixels for im in val],
        y_val,
        config,
        arch="resnet34",
    )
    store = LocalStore(str(tmp_path_factory.mktemp("int8-registry")))
    version = _register(store, model.eval(), "resnet34")
    sets = {}
    for name, seed, sites in (("internal", 5, ("A", "B")), ("external", 6, ("C",))):
        images, labels = _labelled(60, seed=seed, sites=sites)
        x = preprocess_batch([im.pixels for im in images], PreprocessConfig(image_size=SIZE))
        sets[name] = (x, labels)
    return _Trained(store, version, train, sets)


@pytest.mark.slow
def test_proof_is_measured_recorded_once_and_drives_auto(
    trained: _Trained, caplog: pytest.LogCaptureFixture
) -> None:
    from scintiflow.inference.engines.ort_engine import OrtEngine

    store, version = trained.store, trained.version
    cal = calibration_set(trained.train, PreprocessConfig(image_size=SIZE), n=16)
    proof = prove_int8(store, "thyroid", version, calibration=cal, eval_sets=trained.eval_sets)
    base = f"models/thyroid/{version}"
    for name in (INT8_GRAPH, INT8_CALIBRATION, INT8_PROOF):
        assert store.exists(f"{base}/{name}")
    written = json.loads(store.get(f"{base}/{INT8_PROOF}"))
    assert written == proof.to_dict()
    assert written["calibration"]["keys"] == list(cal.keys)
    assert sum(written["calibration"]["strata"].values()) == 16
    assert written["graph"]["options"]["per_channel"] is True
    assert written["graph"]["options"]["cam_precision"] == "fp32"
    # The recorded figures are what the two graphs give (recomputed here).
    sm = load_scoring_model(store, "thyroid", version)
    fp32, int8 = OrtEngine(sm), OrtEngine(sm, precision="int8")
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    assert int8.name == "onnxruntime-int8"
    for name, (x, y) in trained.eval_sets.items():
        p32, c32 = fp32.run(x)
        p8, c8 = int8.run(x)
        assert c32 is not None
        assert c8 is not None
        assert p8.shape == p32.shape == (len(x), len(CLASSES))
        assert c8.shape == c32.shape == (len(x), len(CLASSES), 2, 2)
        rec = written["sets"][name]
        assert rec["n"] == len(x)
        assert rec["agreement"] == pytest.approx((p8.argmax(1) == p32.argmax(1)).mean())
        assert rec["accuracy_fp32"] == pytest.approx((p32.argmax(1) == y).mean())
        assert rec["accuracy_int8"] == pytest.approx((p8.argmax(1) == y).mean())
        assert rec["max_prob_diff"] == pytest.approx(np.abs(p8 - p32).max(), abs=1e-6)
        assert rec["cam_images"] == len(x)
        assert rec["cam_pearson_p5"] <= rec["cam_pearson_median"] <= 1.0
        # What int8 must give on a real trained net (the rule is checked by the verdict).
        assert rec["agreement"] >= 0.95
        assert rec["cam_pearson_median"] >= 0.99
    sets = [
        SetComparison(**{k: v for k, v in s.items() if k != "accuracy_drop"})
        for s in written["sets"].values()
    ]
    assert (proof.allowed, proof.reason) == int8_verdict(sets)[:2]
    # Written once: a second call returns the stored proof and rewrites nothing.
    graph = store.get(f"{base}/{INT8_GRAPH}")
    again = prove_int8(store, "thyroid", version, calibration=cal, eval_sets=trained.eval_sets)
    assert again == proof
    assert store.get(f"{base}/{INT8_GRAPH}") == graph
    # auto follows the proof.
    with caplog.at_level(logging.INFO, logger="scintiflow.inference.engines"):
        kind = select_engine("auto", sm, has_tensorrt=False, has_cuda=False)
    assert kind == ("onnxruntime-int8" if proof.allowed else "onnxruntime")
    assert f"engine {kind}" in caplog.text
    assert int8_permission(sm)[0] == proof.allowed
    # Every prediction row says which arithmetic produced it.
    from scintiflow.inference.score import _Prepared, score_prepared
    from scintiflow.ml.preprocess import preprocess

    items = [
        _Prepared(f"k{i}", f"{i:064x}", pixels=im.pixels, x=preprocess(im.pixels, sm.preprocess))
        for i, im in enumerate(trained.train[:3])
    ]
    for engine in (fp32, int8):
        rows, _, _ = score_prepared(items, engine, sm, store, "results/p/r", batch_size=2)
        assert {r.precision for r in rows} == {engine.precision}


@pytest.mark.slow
def test_a_passing_proof_makes_auto_score_int8(trained: _Trained) -> None:
    """The allowed path end to end. The 3-epoch net's margins are thin (one external flip in
    60 can fail the 0.99 rule), so this version is proven under a looser rule."""
    from scintiflow.ml.registry import load_model

    model, _ = load_model(trained.store, "thyroid", trained.version)
    version = _register(trained.store, model, "resnet34")
    cal = calibration_set(trained.train, PreprocessConfig(image_size=SIZE), n=16)
    rule = Int8Rule(min_agreement=0.9, max_accuracy_drop=0.05)
    proof = prove_int8(
        trained.store, "thyroid", version, calibration=cal, eval_sets=trained.eval_sets, rule=rule
    )
    assert (proof.allowed, proof.reason) == (True, "passed")
    assert proof.rule == {"min_agreement": 0.9, "max_accuracy_drop": 0.05}
    sm = load_scoring_model(trained.store, "thyroid", version)
    kind = select_engine("auto", sm, has_tensorrt=False, has_cuda=False)
    assert kind == "onnxruntime-int8"
    engine = open_engine(kind, sm)
    assert (engine.name, engine.precision) == ("onnxruntime-int8", "int8")
    x, _ = trained.eval_sets["internal"]
    probs, cams = engine.run(x[:5])
    ref, ref_cams = open_engine("onnxruntime", sm).run(x[:5])
    assert probs.shape == ref.shape
    assert cams is not None
    assert ref_cams is not None
    assert cams.shape == ref_cams.shape
    # A TensorRT node still gets TensorRT under auto (its INT8 is an explicit option).
    assert select_engine("auto", sm, has_tensorrt=True, has_cuda=True) == "tensorrt"


@pytest.mark.slow
def test_calibration_on_constant_images_fails_the_rule_and_scores_fp32(
    trained: _Trained, caplog: pytest.LogCaptureFixture
) -> None:
    from scintiflow.ml.registry import load_model

    model, _ = load_model(trained.store, "thyroid", trained.version)
    version = _register(trained.store, model, "resnet34")  # same weights, a new version
    flat = CalibrationSet(
        x=np.zeros((8, 1, SIZE, SIZE), np.float32), keys=("flat",) * 8, strata={"flat": 8}
    )
    proof = prove_int8(
        trained.store, "thyroid", version, calibration=flat, eval_sets=trained.eval_sets
    )
    assert not proof.allowed
    assert proof.reason == "agreement_below_rule"
    assert min(s["agreement"] for s in proof.sets.values()) < 0.99
    assert "agreement" in proof.why
    assert read_int8_proof(load_scoring_model(trained.store, "thyroid", version)) == proof
    sm = load_scoring_model(trained.store, "thyroid", version)
    with caplog.at_level(logging.INFO, logger="scintiflow.inference.engines"):
        assert select_engine("auto", sm, has_tensorrt=False, has_cuda=False) == "onnxruntime"
    assert "INT8 proof failed" in caplog.text
    assert proof.reason in caplog.text
    engine = open_engine(select_engine("auto", sm, has_tensorrt=False, has_cuda=False), sm)
    assert (engine.name, engine.precision) == ("onnxruntime", "fp32")
    with pytest.raises(EngineError) as err:
        select_engine("onnxruntime-int8", sm)
    assert err.value.reason == "int8_not_allowed"


@pytest.mark.slow
def test_a_quantisation_error_is_recorded_and_the_version_scores_fp32(trained: _Trained) -> None:
    from scintiflow.ml.registry import load_model

    model, _ = load_model(trained.store, "thyroid", trained.version)
    version = _register(trained.store, model, "resnet34")
    wrong = CalibrationSet(
        x=np.zeros((4, 1, SIZE // 2, SIZE // 3), np.float32), keys=("w",) * 4, strata={"w": 4}
    )
    proof = prove_int8(
        trained.store, "thyroid", version, calibration=wrong, eval_sets=trained.eval_sets
    )
    assert (proof.allowed, proof.reason) == (False, "quantization_failed")
    assert proof.why.startswith("quantisation failed: ")
    assert proof.sets == {}
    assert not trained.store.exists(f"models/thyroid/{version}/{INT8_GRAPH}")
    sm = load_scoring_model(trained.store, "thyroid", version)
    assert select_engine("auto", sm, has_tensorrt=False, has_cuda=False) == "onnxruntime"


@pytest.mark.slow
def test_versions_without_a_proof_or_proven_elsewhere_score_fp32(trained: _Trained) -> None:
    from scintiflow.ml.registry import load_model

    model, _ = load_model(trained.store, "thyroid", trained.version)
    version = _register(trained.store, model, "resnet34")
    sm = load_scoring_model(trained.store, "thyroid", version)
    assert int8_permission(sm) == (False, "no INT8 proof for this version (int8.json absent)")
    with pytest.raises(EngineError) as err:
        open_engine("onnxruntime-int8", sm)
    assert err.value.reason == "int8_not_allowed"
    # A passing proof made on another CPU class is not used by auto here.
    other = "avx2" if int8_isa() != "avx2" else "vnni"
    record = {
        "allowed": True,
        "reason": "passed",
        "why": "test",
        "sets": {},
        "graph": {},
        "calibration": {},
        "machine": {"int8_isa": other},
        "rule": {},
        "created_at": "2026-01-01T00:00:00Z",
    }
    trained.store.put(f"models/thyroid/{version}/{INT8_PROOF}", json.dumps(record).encode())
    allowed, why = int8_permission(sm)
    assert not allowed
    assert other in why
    assert select_engine("auto", sm, has_tensorrt=False, has_cuda=False) == "onnxruntime"


@pytest.mark.slow
def test_int8_rows_record_the_engine(trained: _Trained, tmp_path: Path) -> None:
    from scintiflow.inference.score import read_predictions
    from scintiflow.inference.streaming import score_keys
    from scintiflow.sim import write_night

    proof = read_int8_proof(load_scoring_model(trained.store, "thyroid", trained.version))
    if proof is None:
        cal = calibration_set(trained.train, PreprocessConfig(image_size=SIZE), n=16)
        prove_int8(
            trained.store,
            "thyroid",
            trained.version,
            calibration=cal,
            eval_sets=trained.eval_sets,
        )
    sm = load_scoring_model(trained.store, "thyroid", trained.version)
    night = LocalStore(str(tmp_path / "night"))
    write_night(night, night=NIGHT, n=12, sites=("A", "C"), seed=5, bad_fraction=0.0)
    keys = [o.key for o in night.list(f"exports/{NIGHT}/")]
    from scintiflow.inference.engines.ort_engine import OrtEngine

    int8 = OrtEngine(sm, precision="int8")
    fp32 = OrtEngine(sm)
    kw: dict[str, Any] = {"batch_size": 8, "patient_hash_key": b"test-phi-key"}
    s8 = score_keys(night, keys, int8, sm, night, "results/int8/run", **kw)
    s32 = score_keys(night, keys, fp32, sm, night, "results/fp32/run", **kw)
    rows8 = read_predictions(night, "results/int8/run")
    rows32 = read_predictions(night, "results/fp32/run")
    assert len(rows8) == len(rows32) == len(s8.rows) == len(s32.rows) > 0
    assert {r["engine"] for r in rows8} == {"onnxruntime-int8"}
    assert {r["engine"] for r in rows32} == {"onnxruntime"}
    same = np.mean(
        [a["predicted_label"] == b["predicted_label"] for a, b in zip(rows8, rows32, strict=True)]
    )
    assert same >= 0.9


@pytest.mark.gpu
def test_tensorrt_int8_builds_from_the_stored_calibration_set(trained: _Trained) -> None:
    pytest.importorskip("tensorrt")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from scintiflow.inference.engines.tensorrt_engine import TensorRTEngine

    sm = load_scoring_model(trained.store, "thyroid", trained.version)
    if read_int8_proof(sm) is None:
        cal = calibration_set(trained.train, PreprocessConfig(image_size=SIZE), n=16)
        prove_int8(
            trained.store,
            "thyroid",
            trained.version,
            calibration=cal,
            eval_sets=trained.eval_sets,
        )
    engine = open_engine(select_engine("tensorrt-int8", sm), sm)
    assert isinstance(engine, TensorRTEngine)
    assert (engine.name, engine.precision) == ("tensorrt-int8", "int8")
    assert engine.plan_name.endswith("-int8.plan")
    assert trained.store.exists(f"models/thyroid/{trained.version}/{engine.plan_name}")
    x, _ = trained.eval_sets["external"]
    probs, cams = engine.run(x)
    ref, ref_cams = open_engine("onnxruntime", sm).run(x)
    assert cams is not None
    assert ref_cams is not None
    assert cams.shape == ref_cams.shape
    assert (probs.argmax(1) == ref.argmax(1)).mean() >= 0.95
