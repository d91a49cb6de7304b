"""ONNX export with the class activation maps computed inside the graph.

For a head that is global-average-pool then one linear layer (ResNet-34, ShuffleNetV2),
Grad-CAM at the last conv block is exactly computable without gradients:

    dy_k / dA_c(i, j) = w_kc / (h * w)          (A: last feature map, (C, h, w))
    Grad-CAM_k = ReLU(sum_c mean_ij(dy_k/dA_c) * A_c) = ReLU(sum_c w_kc A_c) / (h * w)

so the graph gets a 1x1 convolution of the feature map with the FC weights (no bias), a ReLU
and a scale: output `cams` (B, K, h, w), equal to pytorch-grad-cam's raw map for every class.
Other heads export `logits` only.

Graph contract: input `input` (B, 1, S, S) float32 with S = the version's
`PreprocessConfig.image_size` (dynamic batch axis `batch`); outputs `logits` (B, K) float32
and, for GAP-linear heads, `cams` (B, K, h, w) float32. `export_onnx(..., fp16=True)` keeps
that float32 interface but computes in float16 inside (weights stored as float16): the graph
TensorRT 11 needs, because strongly typed networks take their precision from the graph.
Metadata props: arch, classes (JSON), image_size, has_cams, precision.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional

from scintiflow.ml.models import classifier_layer, get_spec, resolve_module

INPUT_NAME = "input"
OUTPUT_LOGITS = "logits"
OUTPUT_CAMS = "cams"
OPSET = 17


class CamGraph(nn.Module):
    """`model` -> (logits, cams) for a GAP-linear head; (logits,) otherwise.

    The feature map is captured with a forward hook on the CAM layer, so the wrapped model
    runs unchanged (one forward pass for both outputs).
    """

    def __init__(self, model: nn.Module, arch: str, *, cams: bool = True) -> None:
        super().__init__()
        spec = get_spec(arch)
        self.model = model
        self.with_cams = bool(cams and spec.gap_linear)
        self._features: list[torch.Tensor] = []
        if self.with_cams:
            fc = classifier_layer(model, arch)
            self.fc_weight = fc.weight  # (K, C), shared with the model
            resolve_module(model, spec.cam_layer).register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, _args: object, output: torch.Tensor) -> None:
        self._features.append(output)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._features.clear()
        logits = self.model(x)  # (B, K)
        if not self.with_cams:
            return (logits,)
        feats = self._features[-1]  # (B, C, h, w)
        self._features.clear()
        h, w = feats.shape[-2], feats.shape[-1]
        weight = self.fc_weight.to(feats.dtype)[:, :, None, None]  # (K, C, 1, 1)
        cams = functional.relu(functional.conv2d(feats, weight)) / float(h * w)  # (B, K, h, w)
        return logits, cams


class _Fp16Graph(nn.Module):
    """float32 in/out, float16 inside (for TensorRT 11's strongly typed networks)."""

    def __init__(self, inner: CamGraph) -> None:
        super().__init__()
        self.inner = inner.half()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.float() for t in self.inner(x.half()))


def _export_torchscript(graph: nn.Module, dummy: torch.Tensor, outputs: list[str]) -> bytes:
    import warnings

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The CAM scale 1/(h*w) is a constant for the version's fixed input size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            graph,
            (dummy,),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter takes file objects
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *outputs]},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    return buf.getvalue()


def _export_dynamo(graph: nn.Module, dummy: torch.Tensor, outputs: list[str]) -> bytes:
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        program = torch.onnx.export(
            graph,
            (dummy,),
            None,
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_shapes={"x": {0: batch}},
            opset_version=18,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("the dynamo exporter returned no program")
    return bytes(program.model_proto.SerializeToString())


def export_onnx(
    model: nn.Module,
    arch: str,
    image_size: int,
    *,
    classes: Sequence[str] = ("normal", "graves", "subacute_thyroiditis", "thyroid_tumor"),
    fp16: bool = False,
    cams: bool = True,
) -> bytes:
    """The ONNX graph (bytes) of `model` with a dynamic batch axis; see the module docstring.

    Uses the TorchScript exporter (`dynamo=False`; torch 2.14's default is dynamo): it handles
    the dynamic batch axis with `dynamic_axes` and the forward hook directly. Where it cannot
    (AlexNet's adaptive pool at inputs under 224 px) the dynamo exporter is tried. The model
    is copied, so the caller's module is untouched.
    """
    import copy

    import onnx

    from scintiflow.inference.engines import EngineError

    graph: nn.Module = CamGraph(copy.deepcopy(model).float().eval().cpu(), arch, cams=cams)
    has_cams = isinstance(graph, CamGraph) and graph.with_cams
    if fp16:
        graph = _Fp16Graph(graph)  # type: ignore[arg-type]
    graph.eval()
    outputs = [OUTPUT_LOGITS, OUTPUT_CAMS] if has_cams else [OUTPUT_LOGITS]
    dummy = torch.zeros(2, 1, image_size, image_size)
    try:
        data = _export_torchscript(graph, dummy, outputs)
    except Exception as first:  # e.g. AlexNet's adaptive pool at small sizes; try dynamo
        try:
            data = _export_dynamo(graph, dummy, outputs)
        except Exception as exc:  # the exporters raise many types
            raise EngineError(
                f"ONNX export of {arch} failed: {first}; dynamo exporter: {exc}",
                reason="onnx_export_failed",
            ) from exc
    proto = onnx.load_from_string(data)
    meta = {
        "arch": arch,
        "classes": json.dumps(list(classes)),
        "image_size": str(image_size),
        "has_cams": str(has_cams).lower(),
        "precision": "fp16" if fp16 else "fp32",
    }
    for key, value in meta.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def onnx_filename(fp16: bool = False) -> str:
    """`model.onnx` (float32) or `model.fp16.onnx` (for TensorRT 11) in the version folder."""
    return "model.fp16.onnx" if fp16 else "model.onnx"


def model_onnx(sm: object, *, fp16: bool = False) -> bytes:
    """The version's ONNX graph: read from its folder, or exported once and stored there."""
    from scintiflow.inference.engines import ScoringModel

    if not isinstance(sm, ScoringModel):
        raise TypeError("expected a ScoringModel")
    return sm.cached(
        onnx_filename(fp16),
        lambda: export_onnx(
            sm.model, sm.arch, sm.preprocess.image_size, classes=sm.classes, fp16=fp16
        ),
    )
