"""INT8 units: calibration sampling, agreement and the rule, engine choice, the graph."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from scintiflow import CLASSES
from scintiflow.inference.engines import (
    EngineError,
    select_engine,
)
from scintiflow.inference.engines.agreement import (
    Int8Rule,
    SetComparison,
    cam_pearson,
    compare_outputs,
    int8_verdict,
)
from scintiflow.inference.engines.calibration import (
    calibration_set,
    stratified_sample,
)
from scintiflow.inference.engines.int8 import (
    int8_isa,
)
from scintiflow.inference.engines.quantize import (
    QuantOptions,
    cam_branch_nodes,
    head_nodes,
    stem_nodes,
)
from scintiflow.ml.preprocess import PreprocessConfig, preprocess_batch
from scintiflow.sim import simulate_cases

SIZE = 64
NIGHT = date(2026, 11, 27)


# ---------------------------------------------------------------- calibration sampling


def test_stratified_sample_covers_every_stratum_in_proportion() -> None:
    sites = ["A"] * 60 + ["B"] * 30 + ["C"] * 10
    labels = [i % 4 for i in range(60)] + [i % 2 for i in range(30)] + [3] * 10
    idx = stratified_sample(labels, sites, 20, seed=1)
    assert len(idx) == len(set(idx)) == 20
    drawn: dict[tuple[str, int], int] = {}
    for i in idx:
        drawn[(sites[i], labels[i])] = drawn.get((sites[i], labels[i]), 0) + 1
    strata = {(s, y) for s, y in zip(sites, labels, strict=True)}
    assert set(drawn) == strata  # every (site, class) stratum is represented
    assert drawn[("A", 0)] == 3  # 15 % of the images -> 15 % of the draw
    assert drawn[("C", 3)] == 2  # 10 %
    assert sum(v for (s, _), v in drawn.items() if s == "A") == 12  # 60 % of the draw
    assert stratified_sample(labels, sites, 20, seed=1) == idx  # deterministic
    assert stratified_sample(labels, sites, 20, seed=2) != idx
    assert sorted(stratified_sample(labels, sites, 500)) == list(range(100))
    # Fewer draws than strata: the largest strata first.
    few = stratified_sample(labels, sites, 3)
    assert {sites[i] for i in few} == {"A"}


@dataclass(frozen=True)
class _Image:
    key: str
    label: int
    site: str
    pixels: np.ndarray


def test_calibration_set_records_keys_and_strata() -> None:
    cases = simulate_cases(24, seed=4, sites=("A", "B"))
    images = [
        _Image(f"sim/{i:03d}", CLASSES.index(c.label), c.site, c.image) for i, c in enumerate(cases)
    ]
    cal = calibration_set(images, PreprocessConfig(image_size=SIZE), n=10, seed=3)
    assert cal.x.shape == (10, 1, SIZE, SIZE)
    assert cal.x.dtype == np.float32
    assert len(set(cal.keys)) == 10
    assert sum(cal.strata.values()) == 10
    chosen = [im for im in images if im.key in cal.keys]
    expected = preprocess_batch([im.pixels for im in chosen], PreprocessConfig(image_size=SIZE))
    np.testing.assert_array_equal(cal.x, expected)


# ---------------------------------------------------------------- agreement and the rule


def test_cam_pearson_per_image_and_constant_maps() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random((4, 2, 3, 3)).astype(np.float32)
    other = ref.copy()
    other[1] = 2 * ref[1] + 1  # affine: correlation 1
    other[2, 0] = rng.random((3, 3))  # unrelated map for class 0
    ref[3], other[3] = 0.0, 0.0  # both maps empty: equal
    r = cam_pearson(ref, other, np.array([0, 1, 0, 1]))
    assert r[0] == pytest.approx(1.0)
    assert r[1] == pytest.approx(1.0)
    assert r[2] < 0.9
    assert r[3] == 1.0
    other[3, 1, 0, 0] = 1.0  # one empty, one not
    assert cam_pearson(ref, other, np.array([0, 1, 0, 1]))[3] == 0.0


def test_compare_outputs_counts_agreement_accuracy_and_probability_gap() -> None:
    p32 = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]], np.float32)
    p8 = np.array([[0.85, 0.15], [0.55, 0.45], [0.7, 0.3], [0.25, 0.75]], np.float32)
    s = compare_outputs("internal", np.array([0, 1, 0, 0]), (p32, None), (p8, None))
    assert s.n == 4
    assert s.agreement == 0.75
    assert s.accuracy_fp32 == 0.75
    assert s.accuracy_int8 == 0.5
    assert s.accuracy_drop == 0.25
    assert s.max_prob_diff == pytest.approx(0.15)
    assert s.cam_pearson_median is None
    assert s.cam_images == 0
    with pytest.raises(ValueError, match="same non-empty set"):
        compare_outputs("x", np.array([0]), (p32, None), (p8, None))


def _set(name: str, agreement: float, acc32: float, acc8: float) -> SetComparison:
    return SetComparison(name, 200, agreement, acc32, acc8, 0.01, 0.999, 0.99, 200)


def test_rule_boundaries_and_reason_codes() -> None:
    assert int8_verdict([_set("internal", 0.99, 0.9, 0.895), _set("external", 1, 0.8, 0.81)])[
        :2
    ] == (True, "passed")
    allowed, reason, why = int8_verdict(
        [_set("internal", 1, 0.9, 0.9), _set("external", 0.985, 0.8, 0.8)]
    )
    assert (allowed, reason) == (False, "agreement_below_rule")
    assert "external" in why
    assert "0.9850" in why
    allowed, reason, why = int8_verdict([_set("internal", 0.995, 0.9, 0.894)])
    assert (allowed, reason) == (False, "accuracy_drop_above_rule")
    assert "0.60 points" in why
    assert int8_verdict([])[:2] == (False, "no_evaluation_set")
    assert int8_verdict([_set("internal", 0.97, 0.9, 0.9)], Int8Rule(min_agreement=0.95))[0]


def test_quant_options_are_validated() -> None:
    assert QuantOptions().to_dict()["activations"] == "uint8"
    assert QuantOptions(target="tensorrt").to_dict()["activations"] == "int8"
    with pytest.raises(ValueError, match="unknown format"):
        QuantOptions(fmt="fp8")
    with pytest.raises(ValueError, match="explicit Q/DQ"):
        QuantOptions(target="tensorrt", fmt="qoperator")
    with pytest.raises(ValueError, match="CAM precision"):
        QuantOptions(cam_precision="fp16")


def test_int8_isa_is_a_known_class() -> None:
    assert int8_isa() in {"amx", "vnni", "avx2", "other", "arm-dot", "arm"}


# ---------------------------------------------------------------- engine choice


def test_auto_picks_int8_on_cpu_only_when_the_proof_allows() -> None:
    kw = {"has_tensorrt": False, "has_cuda": False}
    assert select_engine("auto", True, int8_allowed=True, **kw) == "onnxruntime-int8"
    assert select_engine("auto", True, int8_allowed=False, **kw) == "onnxruntime"
    assert select_engine("auto", True, **kw) == "onnxruntime"  # no model: no proof read
    gpu = {"has_tensorrt": True, "has_cuda": True}
    assert select_engine("auto", True, int8_allowed=True, **gpu) == "tensorrt"
    assert select_engine("auto", False, int8_allowed=True, **kw) == "torch"
    with pytest.raises(EngineError) as err:
        select_engine("onnxruntime-int8", True, int8_allowed=False, **kw)
    assert err.value.reason == "int8_not_allowed"
    assert select_engine("onnxruntime-int8", True, int8_allowed=True, **kw) == "onnxruntime-int8"
    assert select_engine("tensorrt-int8", True, **gpu) == "tensorrt-int8"
    with pytest.raises(EngineError) as err:
        select_engine("tensorrt-int8", True, **kw)
    assert err.value.reason == "engine_unavailable"


def test_tensorrt_int8_plan_names_and_calibration_batches() -> None:
    from scintiflow.inference.engines.tensorrt_engine import calibration_batches, engine_cache_name

    assert engine_cache_name((9, 0), "10.7.0.23", "int8") == "engine-sm90-trt10.7.0.23-int8.plan"
    assert engine_cache_name((9, 0), "10.7.0.23") == "engine-sm90-trt10.7.0.23.plan"
    with pytest.raises(ValueError, match="fp16 or int8"):
        engine_cache_name((9, 0), "10.7", "bf16")
    x = np.zeros((20, 1, 8, 8), np.float32)
    batches = calibration_batches(x)
    assert [len(b) for b in batches] == [8, 8]  # one fixed batch size; the tail is dropped
    assert [len(b) for b in calibration_batches(x[:5])] == [5]
    with pytest.raises(ValueError, match="non-empty"):
        calibration_batches(x[:0])


# ---------------------------------------------------------------- graphs (random nets)


def _sim(n: int, seed: int, sites: tuple[str, ...] = ("A", "B")) -> np.ndarray:
    cases = simulate_cases(n, seed=seed, difficulty=0.3, sites=sites)
    return preprocess_batch([c.image for c in cases], PreprocessConfig(image_size=SIZE))


def test_graph_sections_found_for_exclusion() -> None:
    import onnx
    import torch

    from scintiflow.inference.engines.export import export_onnx
    from scintiflow.ml.models import create_model

    torch.manual_seed(0)
    proto = onnx.load_from_string(export_onnx(create_model("resnet34").eval(), "resnet34", SIZE))
    ops = {n.name: n.op_type for n in proto.graph.node}
    cam_ops = sorted(ops[n] for n in cam_branch_nodes(proto) if ops[n] != "Constant")
    assert cam_ops == ["Conv", "Div", "Relu"]  # the 1x1 Conv with the FC weights, ReLU, scale
    assert [ops[n] for n in head_nodes(proto)] == ["Gemm"]
    assert [ops[n] for n in stem_nodes(proto)] == ["Conv"]
    logits_only = onnx.load_from_string(
        export_onnx(create_model("resnet34").eval(), "resnet34", SIZE, cams=False)
    )
    assert cam_branch_nodes(logits_only) == []


@pytest.mark.slow
def test_old_benchmark_graph_left_convs_in_float_and_pre_processing_fixes_it() -> None:
    """The 0.52x of the docs: an untrained ResNet's de-duplicated zero biases reach the
    quantiser as Identity outputs, so without pre-processing those Convs stay float."""
    import onnx
    import onnxruntime as ort
    import torch

    from scintiflow.inference.engines.export import export_onnx
    from scintiflow.inference.engines.quantize import quantize_int8
    from scintiflow.ml.models import create_model

    torch.manual_seed(0)
    fp32 = export_onnx(create_model("resnet34").eval(), "resnet34", SIZE)
    x = _sim(8, seed=2)

    def integer_convs(graph: bytes) -> int:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "optimised.onnx"
            opts.optimized_model_filepath = str(path)
            ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
            optimised = onnx.load(str(path))
        return sum(n.op_type in ("QLinearConv", "ConvInteger") for n in optimised.graph.node)

    assert sum(n.op_type == "Identity" for n in onnx.load_from_string(fp32).graph.node) > 20
    old = quantize_int8(fp32, x, QuantOptions(preprocess=False, float_head=False))
    new = quantize_int8(fp32, x, QuantOptions())
    assert integer_convs(old) < 10  # most of the 36 network Convs ran in float
    assert integer_convs(new) >= 36  # every network Conv is an integer kernel
