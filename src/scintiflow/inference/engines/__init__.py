"""Scoring engines: one protocol, three runners (torch, ONNX Runtime, TensorRT).

    sm = load_scoring_model(store, "thyroid", "champion")   # registry -> model + its config
    engine = open_engine(select_engine("auto", sm), sm)       # logged choice
    probs, cams = engine.run(batch)                            # batch (B, 1, S, S) float32

`probs` are temperature-scaled softmax probabilities (B, K) in the model's class order.
`cams` is (B, K, h, w) (one map per class, e.g. the in-graph CAM at the last conv block) or
(B, 1, h, w) (the predicted class only: the Grad-CAM path of heads that are not GAP-linear),
or None when the engine draws no maps. Maps are raw (not normalised); `scintiflow.inference.explain`
upsamples and normalises them.

Every engine says what ran: `engine.name` (recorded in every prediction row: `onnxruntime`,
`onnxruntime-int8`, `torch`, `torch-cuda`, `tensorrt`, `tensorrt-int8`, or `<name>+gradcam`)
and `engine.precision` (`fp32`, `int8`, `fp16` or `bf16`: the arithmetic of the network).

Engine choice (`select_engine(requested, sm)`):
- `auto`: `tensorrt` (fp16) when TensorRT imports and a CUDA GPU is present; on CPU
  `onnxruntime-int8` when the version's INT8 proof (`int8.json`, `engines.int8`) allows it on
  this CPU's int8 instruction class, else `onnxruntime` (fp32), the reason logged.
  For heads that are not GAP-linear (AlexNet, MobileNetV3), heatmaps need real gradients,
  which neither ONNX Runtime nor TensorRT give: `auto` then picks `torch` (CUDA when present),
  which computes probabilities and Grad-CAM in one forward + backward pass.
- Explicit choices are honoured: `onnxruntime-int8` only for a version whose proof allows
  it (`EngineError(int8_not_allowed)` otherwise); `tensorrt-int8` (the TensorRT INT8 option,
  calibrated on the version's stored INT8 calibration set) only with TensorRT and a GPU.
  For a head that is not GAP-linear an explicit `onnxruntime*` / `tensorrt*` gives
  probabilities from that engine and maps from pytorch-grad-cam on the torch model, for the
  class the engine predicted (the engine's name then reads e.g. `onnxruntime+gradcam`).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from scintiflow import CLASSES
from scintiflow.ml.preprocess import PreprocessConfig

if TYPE_CHECKING:
    from torch import nn

    from scintiflow.storage import ObjectStore

log = logging.getLogger(__name__)

ENGINES: tuple[str, ...] = (
    "auto",
    "onnxruntime",
    "onnxruntime-int8",
    "torch",
    "tensorrt",
    "tensorrt-int8",
)
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "fp16", "bf16")
DEFAULT_LOW_CONFIDENCE_THRESHOLD = 0.6
"""Used when a model card has no `low_confidence_threshold`."""


class EngineError(Exception):
    """An engine cannot be chosen or run; `reason` is a stable lower_snake code.

    Codes: `unknown_engine`, `engine_unavailable`, `bad_batch`, `onnx_export_failed`,
    `tensorrt_build_failed`, `int8_not_allowed`.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@runtime_checkable
class Engine(Protocol):
    """Runs a preprocessed batch; what every scoring path calls."""

    name: str  # recorded in every prediction row, e.g. "onnxruntime", "onnxruntime-int8"
    precision: str  # one of PRECISIONS: the network's arithmetic, e.g. "int8"

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, 1, S, S) float32 -> (probs (B, K), cams (B, K|1, h, w) or None)."""
        ...


@dataclass(frozen=True, eq=False)
class ScoringModel:
    """A model version ready to score: torch module, class list, temperature, preprocessing.

    `store` (the registry) is where `model.onnx` and TensorRT plans are cached, in the
    immutable version folder `<models_prefix>/<name>/<version>/`; without a store they are
    built in memory only (tests, benchmarks).
    """

    arch: str
    model: nn.Module = field(repr=False)
    preprocess: PreprocessConfig
    classes: tuple[str, ...] = CLASSES
    temperature: float = 1.0
    name: str = ""
    version: str = ""
    card: dict[str, Any] = field(default_factory=dict, repr=False)
    store: ObjectStore | None = field(default=None, repr=False)
    models_prefix: str = "models"
    _cache: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def gap_linear(self) -> bool:
        """Whether the head is GAP + one linear layer (CAM computed inside the graph)."""
        from scintiflow.ml.models import get_spec

        return get_spec(self.arch).gap_linear

    @property
    def version_prefix(self) -> str | None:
        """`<models_prefix>/<name>/<version>` in the registry, or None without a store."""
        if self.store is None or not self.name or not self.version:
            return None
        prefix = self.models_prefix.strip("/")
        return f"{prefix}/{self.name}/{self.version}" if prefix else f"{self.name}/{self.version}"

    @property
    def low_confidence_threshold(self) -> float:
        """From the model card (`low_confidence_threshold`), else the default 0.6."""
        value = self.card.get("low_confidence_threshold", DEFAULT_LOW_CONFIDENCE_THRESHOLD)
        return float(value)

    def cached(self, filename: str, build: Callable[[], bytes]) -> bytes:
        """A derived artifact of this version: read from the version folder, or built once.

        Written with `if_absent=True`: the first writer wins and a file is never rewritten;
        a concurrent builder that loses the race reads the winner's bytes.
        """
        from scintiflow.storage import KeyExistsError

        if filename in self._cache:
            return self._cache[filename]
        prefix = self.version_prefix
        if prefix is None or self.store is None:
            data = build()
        else:
            key = f"{prefix}/{filename}"
            if self.store.exists(key):
                data = self.store.get(key)
            else:
                data = build()
                try:
                    self.store.put(key, data, if_absent=True)
                except KeyExistsError:
                    data = self.store.get(key)
                else:
                    log.info("cached %s in the model version folder", filename)
        self._cache[filename] = data
        return data


def load_scoring_model(
    store: ObjectStore, name: str, version: str = "champion", models_prefix: str = "models"
) -> ScoringModel:
    """A registered version (`champion`, `latest` or an id) as a `ScoringModel` (CPU, eval)."""
    from scintiflow.ml.registry import load_model

    model, meta = load_model(store, name, version, models_prefix)
    return ScoringModel(
        arch=meta.arch,
        model=model,
        preprocess=PreprocessConfig.from_dict(meta.preprocess),
        classes=tuple(meta.classes),
        temperature=float(meta.temperature),
        name=meta.name,
        version=meta.version,
        card=dict(meta.card),
        store=store,
        models_prefix=models_prefix,
    )


def softmax_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Temperature-scaled softmax over the last axis, float32, numerically stable."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def check_batch(batch: np.ndarray, image_size: int) -> np.ndarray:
    """The batch as C-contiguous float32 (B, 1, S, S); `EngineError(bad_batch)` otherwise."""
    arr = np.ascontiguousarray(batch, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[1:] != (1, image_size, image_size):
        raise EngineError(
            f"expected a batch of shape (B, 1, {image_size}, {image_size}), got {arr.shape}",
            reason="bad_batch",
        )
    return arr


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU (imports torch)."""
    import torch

    return bool(torch.cuda.is_available())


def tensorrt_importable() -> bool:
    """Whether the `tensorrt` package can be imported (without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


def select_engine(
    requested: str,
    model: bool | ScoringModel = True,
    *,
    has_tensorrt: bool | None = None,
    has_cuda: bool | None = None,
    int8_allowed: bool | None = None,
) -> str:
    """Resolve `requested` (one of `ENGINES`) to a concrete engine name (logged with why).

    `model` is the version (`ScoringModel`: its head and its INT8 proof are read) or just
    whether its head is GAP-linear (then INT8 is never chosen: the proof is not known).
    `has_tensorrt`/`has_cuda`/`int8_allowed` override the detection (tests). An explicit
    tensorrt without TensorRT or a GPU, or an explicit INT8 engine the proof does not allow,
    is an error.
    """
    if requested not in ENGINES:
        raise EngineError(
            f"unknown engine {requested!r}; choose one of {', '.join(ENGINES)}",
            reason="unknown_engine",
        )
    gap_linear = model if isinstance(model, bool) else model.gap_linear
    trt = tensorrt_importable() if has_tensorrt is None else has_tensorrt
    gpu = has_cuda if has_cuda is not None else (cuda_available() if trt else False)
    if requested.startswith("tensorrt") and not (trt and gpu):
        raise EngineError(
            f"engine {requested} needs the tensorrt package and a CUDA GPU "
            f"(tensorrt importable: {trt}, GPU: {gpu})",
            reason="engine_unavailable",
        )
    int8_ok, int8_why = _int8_permission(model, int8_allowed, requested, trt and gpu)
    if requested == "onnxruntime-int8" and not int8_ok:
        raise EngineError(f"engine onnxruntime-int8 refused: {int8_why}", reason="int8_not_allowed")
    if requested != "auto":
        chosen, why = requested, "requested"
    elif not gap_linear:
        chosen, why = "torch", "head is not GAP-linear: Grad-CAM needs gradients"
    elif trt and gpu:
        chosen, why = "tensorrt", "TensorRT importable and a CUDA GPU present"
    elif int8_ok:
        chosen, why = "onnxruntime-int8", f"no TensorRT with a GPU here; {int8_why}"
    else:
        chosen, why = "onnxruntime", f"no TensorRT with a GPU here; fp32: {int8_why}"
    log.info("engine %s (%s)", chosen, why)
    return chosen


def _int8_permission(
    model: bool | ScoringModel, override: bool | None, requested: str, gpu_engine: bool
) -> tuple[bool, str]:
    """Whether the version may score in ONNX Runtime INT8 here, and why (reads int8.json)."""
    if override is not None:
        return override, "INT8 allowed (given)" if override else "INT8 not allowed (given)"
    if isinstance(model, bool):
        return False, "no scoring model given, so no INT8 proof read"
    if requested not in ("auto", "onnxruntime-int8") or gpu_engine:
        return False, "INT8 not considered"
    from scintiflow.inference.engines.int8 import int8_permission

    return int8_permission(model)


def open_engine(
    kind: str,
    sm: ScoringModel,
    *,
    all_class_maps: bool = False,
    maps: bool = True,
    threads: int | None = None,
    device: str = "auto",
) -> Engine:
    """Open engine `kind` (a concrete name; resolve `auto` with `select_engine` first).

    `maps=False` skips heatmaps (cams None); `all_class_maps` asks the Grad-CAM path for a map
    per class (K backward passes) instead of the predicted class only. GAP-linear engines
    always return every class's map (they cost nothing extra).
    """
    if kind == "auto":
        kind = select_engine("auto", sm)
    engine: Engine
    if kind == "torch":
        from scintiflow.inference.engines.torch_engine import TorchEngine

        return TorchEngine(
            sm, device=device, maps=maps, all_class_maps=all_class_maps, threads=threads
        )
    if kind in ("onnxruntime", "onnxruntime-int8"):
        from scintiflow.inference.engines.ort_engine import OrtEngine

        precision = "int8" if kind == "onnxruntime-int8" else "fp32"
        engine = OrtEngine(sm, threads=threads, cams=maps, precision=precision)
    elif kind in ("tensorrt", "tensorrt-int8"):
        from scintiflow.inference.engines.tensorrt_engine import TensorRTEngine

        engine = TensorRTEngine(sm, cams=maps, int8=kind == "tensorrt-int8")
    else:
        raise EngineError(f"unknown engine {kind!r}", reason="unknown_engine")
    if maps and not sm.gap_linear:
        from scintiflow.inference.engines.torch_engine import GradCamCompanion

        return GradCamCompanion(engine, sm, all_class_maps=all_class_maps, threads=threads)
    return engine


__all__ = [
    "DEFAULT_LOW_CONFIDENCE_THRESHOLD",
    "ENGINES",
    "PRECISIONS",
    "Engine",
    "EngineError",
    "ScoringModel",
    "check_batch",
    "load_scoring_model",
    "open_engine",
    "select_engine",
    "softmax_probs",
]
