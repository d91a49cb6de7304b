"""Static INT8 quantisation of a version's ONNX graph (ONNX Runtime's own tooling).

    int8 = quantize_int8(model_onnx(sm), calibration)      # calibration: (N, 1, S, S) float32

Steps, as ONNX Runtime documents them for CPU inference:
1. `quant_pre_process` (symbolic + ONNX shape inference and ORT's basic graph optimisation) on
   the float32 graph. Without it the TorchScript export can hand the quantiser Conv biases that
   are not initializers (identical biases are de-duplicated into `Identity` outputs; a
   randomly initialised ResNet-34 has 32 of 37): those Convs keep a float bias, ORT cannot fuse
   their DequantizeLinear -> Conv -> QuantizeLinear into an integer kernel, and they run in
   float32 between extra (de)quantisation steps. That is what made the old benchmark graph
   0.52x as fast as float32 (see docs/int8.md).
2. `quantize_static` with calibration ranges from the version's own training images, QDQ
   format, per-channel int8 weights, uint8 activations (the ORT recommendation for x86 CPUs
   with VNNI), MinMax ranges.
3. The classifier stays in float32 (`float_head`, default): quantising it also quantises
   the LOGITS to 256 levels over their calibration range, and near-tied logits then flip.
   On a trained ResNet-34 (64 px) that alone took int8/fp32 top-1 agreement from 0.985 to
   1.000 (docs/int8.md); the classifier is a 512x4 product, so it costs nothing.
   `float_stem` keeps the first Conv (and so the raw input) in float32 as well: 2-3x smaller
   probability differences, but about 20 % slower at 224 px, so off by default.
4. The in-graph CAM branch (1x1 Conv of the last feature map with the FC weights, ReLU,
   scale) stays in float32 on the dequantised feature map by default (`cam_precision="fp32"`,
   the branch excluded from quantisation); `cam_precision="int8"` quantises it too (same
   speed, CAM correlation slightly lower).

`target="tensorrt"` gives the explicit-Q/DQ graph TensorRT 11 needs instead (no implicit INT8
there): symmetric int8 activations and weights (zero point 0).

onnx / onnxruntime are imported inside the functions.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scintiflow.inference.engines.export import INPUT_NAME, OUTPUT_CAMS, OUTPUT_LOGITS

if TYPE_CHECKING:
    import onnx

FORMATS: tuple[str, ...] = ("qdq", "qoperator")
METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
CAM_PRECISIONS: tuple[str, ...] = ("fp32", "int8")
TARGETS: tuple[str, ...] = ("cpu", "tensorrt")


@dataclass(frozen=True)
class QuantOptions:
    """How a float32 graph becomes INT8 (recorded in `int8.json` with the graph's hash)."""

    fmt: str = "qdq"  # "qdq" (ORT's recommended CPU format) | "qoperator"
    method: str = "minmax"  # calibration: "minmax" | "entropy" | "percentile"
    cam_precision: str = "fp32"  # CAM branch in float32 on the dequantised map, or "int8"
    per_channel: bool = True
    target: str = "cpu"  # "cpu": uint8 activations; "tensorrt": symmetric int8 activations
    preprocess: bool = True  # quant_pre_process first (turning it off reproduces the old graph)
    float_head: bool = True  # the classifier (Gemm to the logits) and the logits in float32
    float_stem: bool = False  # the first Conv (and so the raw input) in float32 too
    calibration_batch: int = 8

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.fmt, FORMATS, "format"),
            (self.method, METHODS, "calibration method"),
            (self.cam_precision, CAM_PRECISIONS, "CAM precision"),
            (self.target, TARGETS, "target"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
        if self.target == "tensorrt" and self.fmt != "qdq":
            raise ValueError("TensorRT takes explicit Q/DQ graphs only (fmt='qdq')")
        if self.calibration_batch < 1:
            raise ValueError("calibration_batch must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the data types spelled out."""
        out = asdict(self)
        out["activations"] = "int8" if self.target == "tensorrt" else "uint8"
        out["weights"] = "int8"
        return out


def preprocess_for_quantization(fp32: bytes) -> bytes:
    """`quant_pre_process`: shape inference and ORT's basic optimisations, as bytes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="scintiflow-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(dst))
        return dst.read_bytes()


def _ancestors(proto: onnx.ModelProto, output: str) -> set[str]:
    """Names of the nodes that `output` depends on."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    seen: set[str] = set()
    stack = [output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        stack.extend(node.input)
    return seen


def cam_branch_nodes(proto: onnx.ModelProto) -> list[str]:
    """The nodes that only the `cams` output needs (empty for a logits-only graph)."""
    if OUTPUT_CAMS not in {o.name for o in proto.graph.output}:
        return []
    only_cams = _ancestors(proto, OUTPUT_CAMS) - _ancestors(proto, OUTPUT_LOGITS)
    return sorted(only_cams)


def stem_nodes(proto: onnx.ModelProto) -> list[str]:
    """The Conv(s) reading the graph input directly (the network's stem)."""
    return sorted(n.name for n in proto.graph.node if n.op_type == "Conv" and INPUT_NAME in n.input)


def head_nodes(proto: onnx.ModelProto) -> list[str]:
    """The Gemm / MatMul nodes the logits depend on after the last Conv (the classifier)."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    out: list[str] = []
    stack, seen = [OUTPUT_LOGITS], set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen or node.op_type == "Conv":
            continue
        seen.add(node.name)
        if node.op_type in ("Gemm", "MatMul"):
            out.append(node.name)
        stack.extend(node.input)
    return sorted(out)


def _reader(x: np.ndarray, batch: int) -> Any:
    """A `CalibrationDataReader` over a preprocessed array, `batch` images per call."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(
                [np.ascontiguousarray(x[i : i + batch]) for i in range(0, len(x), batch)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {INPUT_NAME: item}

    return Batches()


def _name_nodes(proto: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (`nodes_to_exclude` matches on names)."""
    used = {n.name for n in proto.graph.node if n.name}
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def quantize_int8(
    fp32: bytes, calibration: np.ndarray, options: QuantOptions | None = None
) -> bytes:
    """The INT8 ONNX graph (bytes) of a float32 graph, calibrated on `calibration`.

    `calibration` is (N, 1, S, S) float32, preprocessed like the inputs the graph will score.
    Inputs and outputs stay float32 (same names and shapes as the float32 graph); the
    metadata gains `precision=int8`, `cam_precision` and `quant_format`.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    opts = options or QuantOptions()
    x = np.ascontiguousarray(calibration, dtype=np.float32)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"calibration must be a non-empty (N, 1, S, S) array, got {x.shape}")
    prepared = preprocess_for_quantization(fp32) if opts.preprocess else fp32
    proto = onnx.load_from_string(prepared)
    _name_nodes(proto)
    exclude = cam_branch_nodes(proto) if opts.cam_precision == "fp32" else []
    exclude += stem_nodes(proto) if opts.float_stem else []
    exclude += head_nodes(proto) if opts.float_head else []
    symmetric = opts.target == "tensorrt"
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[opts.method]
    with tempfile.TemporaryDirectory(prefix="scintiflow-int8-") as tmp:
        dst = Path(tmp) / "int8.onnx"
        quantize_static(
            proto,
            str(dst),
            _reader(x, opts.calibration_batch),
            quant_format=QuantFormat.QDQ if opts.fmt == "qdq" else QuantFormat.QOperator,
            per_channel=opts.per_channel,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude or None,
            calibrate_method=method,
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
        )
        out = onnx.load(str(dst))
    meta = {p.key: p.value for p in onnx.load_from_string(fp32).metadata_props}
    meta.update(precision="int8", cam_precision=opts.cam_precision, quant_format=opts.fmt)
    del out.metadata_props[:]
    for key, value in meta.items():
        prop = out.metadata_props.add()
        prop.key, prop.value = key, value
    return bytes(out.SerializeToString())
