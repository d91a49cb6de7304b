"""Engines: ONNX export (+ in-graph CAM), ORT/torch parity, engine choice, TensorRT plumbing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch

from scintiflow import CLASSES
from scintiflow.inference.engines import (
    EngineError,
    ScoringModel,
    load_scoring_model,
    open_engine,
    select_engine,
    softmax_probs,
)
from scintiflow.inference.engines.export import export_onnx, model_onnx
from scintiflow.inference.engines.tensorrt_engine import (
    engine_cache_name,
    strongly_typed,
    trt_major,
)
from scintiflow.ml.models import create_model
from scintiflow.ml.preprocess import PreprocessConfig, preprocess_batch
from scintiflow.sim import simulate_cases

SIZE = 64


def _trained(arch: str, epochs: int) -> ScoringModel:
    from scintiflow.ml.training import TrainConfig, fit

    cases = simulate_cases(48, seed=3, difficulty=0.0, class_weights=[1, 1, 1, 1])
    images = [c.image.astype(np.float32) for c in cases]
    y = np.array([CLASSES.index(c.label) for c in cases])
    torch.manual_seed(0)
    model = create_model(arch)
    config = TrainConfig(epochs=epochs, image_size=SIZE, batch_size=16, device="cpu", augment=False)
    fit(model, images[:32], y[:32], images[32:], y[32:], config, arch=arch)
    return ScoringModel(arch=arch, model=model.eval(), preprocess=PreprocessConfig(image_size=SIZE))


@pytest.fixture(scope="session")
def trained() -> Callable[[str], ScoringModel]:
    """Small real training runs (64 px, difficulty 0), cached per test session."""
    cache: dict[str, ScoringModel] = {}

    def get(arch: str) -> ScoringModel:
        if arch not in cache:
            cache[arch] = _trained(arch, epochs=2 if arch == "resnet34" else 3)
        return cache[arch]

    return get


def _sim_batch(n: int, seed: int = 11) -> np.ndarray:
    cases = simulate_cases(n, seed=seed, difficulty=0.3, sites=("A", "C"))
    return preprocess_batch([c.image for c in cases], PreprocessConfig(image_size=SIZE))


# ---------------------------------------------------------------- engine choice and TRT keys


def test_auto_picks_tensorrt_only_with_tensorrt_and_a_gpu() -> None:
    assert select_engine("auto", True, has_tensorrt=True, has_cuda=True) == "tensorrt"
    assert select_engine("auto", True, has_tensorrt=True, has_cuda=False) == "onnxruntime"
    assert select_engine("auto", True, has_tensorrt=False, has_cuda=True) == "onnxruntime"
    assert select_engine("auto", True, has_tensorrt=False, has_cuda=False) == "onnxruntime"


def test_auto_picks_torch_for_heads_that_need_gradients() -> None:
    assert select_engine("auto", False, has_tensorrt=True, has_cuda=True) == "torch"
    assert select_engine("auto", False, has_tensorrt=False, has_cuda=False) == "torch"


def test_every_engine_name_is_a_choice_and_precisions_are_named() -> None:
    from scintiflow.inference.engines import ENGINES, PRECISIONS

    assert set(ENGINES) == {
        "auto",
        "onnxruntime",
        "onnxruntime-int8",
        "torch",
        "tensorrt",
        "tensorrt-int8",
    }
    assert PRECISIONS == ("fp32", "int8", "fp16", "bf16")


def test_explicit_choices_and_errors() -> None:
    assert select_engine("onnxruntime", False, has_tensorrt=False) == "onnxruntime"
    assert select_engine("torch", True, has_tensorrt=False) == "torch"
    with pytest.raises(EngineError) as err:
        select_engine("tensorrt", True, has_tensorrt=False, has_cuda=True)
    assert err.value.reason == "engine_unavailable"
    with pytest.raises(EngineError) as err:
        select_engine("tensorrt", True, has_tensorrt=True, has_cuda=False)
    assert err.value.reason == "engine_unavailable"
    with pytest.raises(EngineError) as err:
        select_engine("openvino", True)
    assert err.value.reason == "unknown_engine"


def test_auto_on_this_machine_is_onnxruntime_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present here")
    with caplog.at_level("INFO", logger="scintiflow.inference.engines"):
        assert select_engine("auto", True) == "onnxruntime"
    assert "engine onnxruntime" in caplog.text


def test_tensorrt_cache_key_names_gpu_arch_and_trt_version() -> None:
    assert engine_cache_name((9, 0), "10.7.0.23") == "engine-sm90-trt10.7.0.23.plan"
    assert engine_cache_name((8, 6), "11.0.0") == "engine-sm86-trt11.0.0.plan"
    keys = {engine_cache_name(cc, v) for cc in [(8, 0), (8, 9), (9, 0)] for v in ["10.7", "11.0"]}
    assert len(keys) == 6  # every (arch, version) pair gets its own plan
    assert engine_cache_name((9, 0), "10.7+cuda/13") == "engine-sm90-trt10.7_cuda_13.plan"
    with pytest.raises(ValueError, match="compute capability"):
        engine_cache_name((0, 0), "10.7")
    with pytest.raises(ValueError, match="TensorRT version"):
        engine_cache_name((9, 0), "")


def test_tensorrt_version_detection() -> None:
    assert trt_major("10.7.0.23") == 10
    assert trt_major("11.0.0") == 11
    assert not strongly_typed("10.13.3")
    assert strongly_typed("11.1.0")
    with pytest.raises(ValueError, match="not a TensorRT version"):
        trt_major("tensorrt")


def test_tensorrt_engine_module_imports_without_tensorrt() -> None:
    import importlib

    module = importlib.import_module("scintiflow.inference.engines.tensorrt_engine")
    assert hasattr(module, "TensorRTEngine")


# ---------------------------------------------------------------- ONNX graph


@pytest.mark.slow
def test_onnx_graph_outputs_shapes_and_dynamic_batch(
    trained: Callable[[str], ScoringModel],
) -> None:
    import onnx
    import onnxruntime as ort

    sm = trained("shufflenet_v2")
    data = model_onnx(sm)
    proto = onnx.load_from_string(data)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits", "cams"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [1, SIZE, SIZE]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["arch"] == "shufflenet_v2"
    assert meta["has_cams"] == "true"
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for b in (1, 5):
        logits, cams = session.run(None, {"input": np.zeros((b, 1, SIZE, SIZE), np.float32)})
        assert logits.shape == (b, 4)
        assert cams.shape == (b, 4, 2, 2)  # 64 px / stride 32
        assert (cams >= 0).all()


def test_non_gap_linear_head_exports_logits_only() -> None:
    import onnx

    torch.manual_seed(0)
    data = export_onnx(create_model("mobilenet_v3").eval(), "mobilenet_v3", SIZE)
    proto = onnx.load_from_string(data)
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert {p.key: p.value for p in proto.metadata_props}["has_cams"] == "false"


@pytest.mark.slow
def test_fp16_graph_for_tensorrt_11(trained: Callable[[str], ScoringModel]) -> None:
    import onnx
    import onnxruntime as ort

    sm = trained("shufflenet_v2")
    data = export_onnx(sm.model, sm.arch, SIZE, fp16=True)
    proto = onnx.load_from_string(data)
    weight_types = {t.data_type for t in proto.graph.initializer if len(t.dims) > 1}
    assert weight_types == {onnx.TensorProto.FLOAT16}
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {o.type.tensor_type.elem_type for o in proto.graph.output} == {onnx.TensorProto.FLOAT}
    assert {p.key: p.value for p in proto.metadata_props}["precision"] == "fp16"
    x = _sim_batch(8)
    half = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    with torch.no_grad():
        ref = sm.model(torch.from_numpy(x)).numpy()
    # Half precision through a whole network: errors of a few percent of the logit scale.
    assert np.abs(half[0] - ref).max() < 0.15 * max(1.0, float(np.abs(ref).max()))
    assert (half[0].argmax(1) == ref.argmax(1)).mean() >= 0.75


# ---------------------------------------------------------------- parity


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet34", "shufflenet_v2"])
def test_ort_logits_match_torch(trained: Callable[[str], ScoringModel], arch: str) -> None:
    from scintiflow.inference.engines.ort_engine import OrtEngine

    sm = trained(arch)
    engine = OrtEngine(sm)
    rng = np.random.default_rng(0)
    for x in (rng.standard_normal((6, 1, SIZE, SIZE)).astype(np.float32), _sim_batch(12)):
        logits, _ = engine.logits(x)
        with torch.no_grad():
            ref = sm.model(torch.from_numpy(x)).numpy()
        assert np.abs(logits - ref).max() <= 1e-3


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet34", "shufflenet_v2"])
def test_in_graph_cam_matches_pytorch_grad_cam(
    trained: Callable[[str], ScoringModel], arch: str
) -> None:
    from scintiflow.inference.engines.torch_engine import gradcam_maps
    from scintiflow.inference.explain import heatmaps

    sm = trained(arch)
    x = _sim_batch(12)
    probs, cams = open_engine("onnxruntime", sm).run(x)
    assert cams is not None
    predicted = probs.argmax(1)
    ours = heatmaps(probs, cams, [(SIZE, SIZE)] * len(x))
    _, reference = gradcam_maps(sm.model, arch, torch.from_numpy(x), predicted)
    compared = 0
    for i in range(len(x)):
        ref = reference[i]
        mine = ours[i][int(predicted[i])]
        if ref.max() == 0:  # Grad-CAM found nothing positive: ours must be empty too
            assert mine.max() == 0
            continue
        assert _pearson(mine, ref) >= 0.99
        compared += 1
    assert compared >= len(x) // 2


@pytest.mark.slow
def test_engines_agree_on_probabilities_and_apply_temperature(
    trained: Callable[[str], ScoringModel],
) -> None:
    base = trained("shufflenet_v2")
    sm = dataclasses.replace(base, temperature=2.5)  # shares the exported graph
    x = _sim_batch(8)
    ort_engine, torch_engine = (
        open_engine("onnxruntime", sm),
        open_engine("torch", sm, device="cpu"),
    )
    assert (ort_engine.name, ort_engine.precision) == ("onnxruntime", "fp32")
    assert (torch_engine.name, torch_engine.precision) == ("torch", "fp32")
    p_ort, c_ort = ort_engine.run(x)
    p_torch, c_torch = torch_engine.run(x)
    with torch.no_grad():
        logits = sm.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(p_ort, softmax_probs(logits, 2.5), atol=1e-5)
    np.testing.assert_allclose(p_torch, p_ort, atol=1e-5)
    assert c_ort is not None
    assert c_torch is not None
    np.testing.assert_allclose(c_torch, c_ort, atol=1e-4 * max(1.0, float(c_ort.max())))
    assert not np.allclose(softmax_probs(logits, 1.0), p_ort, atol=1e-3)


@pytest.mark.slow
def test_non_gap_heads_get_maps_through_pytorch_grad_cam(
    trained: Callable[[str], ScoringModel],
) -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from scintiflow.ml.models import cam_target_layer

    # Trained: a random net's Grad-CAM is near-constant, and min-max scaling turns float
    # noise into arbitrary maps.
    sm = trained("mobilenet_v3_small")
    x = _sim_batch(3)
    probs, maps = open_engine("torch", sm, device="cpu").run(x)
    assert maps is not None
    assert maps.shape == (3, 1, SIZE, SIZE)
    targets = [ClassifierOutputTarget(int(c)) for c in probs.argmax(1)]
    with GradCAM(sm.model, [cam_target_layer(sm.model, sm.arch)]) as cam:
        ref = cam(input_tensor=torch.from_numpy(x), targets=targets)
    np.testing.assert_allclose(maps[:, 0], ref, atol=1e-5)
    # An explicit onnxruntime choice keeps ORT's probabilities and adds the same maps.
    engine = open_engine("onnxruntime", sm)
    assert engine.name == "onnxruntime+gradcam"
    assert engine.precision == "fp32"  # of the probabilities (ORT); maps from torch
    p2, maps2 = engine.run(x)
    np.testing.assert_allclose(p2, probs, atol=1e-5)
    assert maps2 is not None
    np.testing.assert_allclose(maps2, maps, atol=1e-5)
    # All classes: one map per class.
    _, every = open_engine("torch", sm, device="cpu", all_class_maps=True).run(x)
    assert every is not None
    assert every.shape == (3, 4, SIZE, SIZE)


@pytest.mark.slow
def test_bad_batch_shape_is_rejected(trained: Callable[[str], ScoringModel]) -> None:
    engine = open_engine("onnxruntime", trained("shufflenet_v2"))
    with pytest.raises(EngineError) as err:
        engine.run(np.zeros((2, 1, SIZE + 1, SIZE), np.float32))
    assert err.value.reason == "bad_batch"


# ---------------------------------------------------------------- registry cache


@pytest.mark.slow
def test_onnx_is_exported_once_into_the_version_folder(
    tmp_path: object, trained: Callable[[str], ScoringModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    from scintiflow.inference.engines import export as export_module
    from scintiflow.ml.models import state_dict_bytes
    from scintiflow.ml.registry import register_version
    from scintiflow.storage import LocalStore

    sm = trained("shufflenet_v2")
    store = LocalStore(str(tmp_path))
    version = register_version(
        store,
        "thyroid",
        arch=sm.arch,
        weights=state_dict_bytes(sm.model),
        preprocess=sm.preprocess.to_dict(),
        classes=CLASSES,
        temperature=1.3,
        metrics={},
        card={"low_confidence_threshold": 0.55},
        lineage={},
        training_reference={},
    )
    loaded = load_scoring_model(store, "thyroid", "latest")
    assert loaded.version == version
    assert loaded.temperature == pytest.approx(1.3)
    assert loaded.low_confidence_threshold == pytest.approx(0.55)
    key = f"models/thyroid/{version}/model.onnx"
    assert not store.exists(key)
    first = model_onnx(loaded)
    assert store.get(key) == first
    # A fresh load reuses the stored graph: exporting again would fail here.
    monkeypatch.setattr(export_module, "export_onnx", lambda *a, **k: pytest.fail("re-exported"))
    again = load_scoring_model(store, "thyroid", version)
    assert model_onnx(again) == first
    probs, cams = open_engine("onnxruntime", again).run(_sim_batch(3))
    assert probs.shape == (3, 4)
    assert cams is not None


# ---------------------------------------------------------------- GPU (skipped here)


@pytest.mark.gpu
def test_torch_cuda_engine_matches_cpu(trained: Callable[[str], ScoringModel]) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    sm = trained("resnet34")
    x = _sim_batch(16)
    p_cpu, _ = open_engine("torch", sm, device="cpu").run(x)
    p_gpu, cams = open_engine("torch", sm, device="cuda").run(x)
    assert cams is not None
    assert (p_gpu.argmax(1) == p_cpu.argmax(1)).mean() >= 0.9
    assert np.abs(p_gpu - p_cpu).max() < 0.02


@pytest.mark.gpu
def test_tensorrt_engine_builds_caches_and_matches_torch(
    tmp_path: object, trained: Callable[[str], ScoringModel]
) -> None:
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from scintiflow.inference.engines.tensorrt_engine import TensorRTEngine
    from scintiflow.ml.models import state_dict_bytes
    from scintiflow.ml.registry import register_version
    from scintiflow.storage import LocalStore

    sm = trained("resnet34")
    store = LocalStore(str(tmp_path))
    version = register_version(
        store,
        "thyroid",
        arch=sm.arch,
        weights=state_dict_bytes(sm.model),
        preprocess=sm.preprocess.to_dict(),
        classes=CLASSES,
        temperature=1.0,
        metrics={},
        card={},
        lineage={},
        training_reference={},
    )
    loaded = load_scoring_model(store, "thyroid", version)
    engine = TensorRTEngine(loaded)
    assert store.exists(f"models/thyroid/{version}/{engine.plan_name}")
    x = _sim_batch(300)  # more than MAX_BATCH: runs in chunks
    probs, cams = engine.run(x)
    ref_p, ref_c = open_engine("torch", loaded, device="cpu").run(x)
    assert cams is not None
    assert ref_c is not None
    assert cams.shape == ref_c.shape
    assert (probs.argmax(1) == ref_p.argmax(1)).mean() >= 0.95
    assert np.abs(probs - ref_p).max() < 0.05
