"""Scoring engines: one protocol, three runners (torch, ONNX Runtime, TensorRT).

    sm = load_scoring_model(store, "thyroid", "champion")   # registry -> model + its config
    engine = open_engine(select_engine("auto", sm), sm)       # logged choice
    probs, cams = engine.run(batch)                            # batch (B, 1, S, S) float32

`probs` are temperature-scaled softmax probabilities (B, K) in the model's class order.
`cams` is (B, K, h, w) (one map per class, e.g. the in-graph CAM at the last conv block) or
(B, 1, h, w) (the predicted class only: the Grad-CAM path of heads that are not GAP-linear),
or None when the engine draws no maps. Maps are raw (not normalised); `scintiflow.inference.explain`
upsamples and normalises them.

Engine choice (`select_engine`):
- `auto`: `tensorrt` when TensorRT imports and a CUDA GPU is present, else `onnxruntime`.
  For heads that are not GAP-linear (AlexNet, MobileNetV3), heatmaps need real gradients,
  which neither ONNX Runtime nor TensorRT give: `auto` then picks `torch` (CUDA when present),
  which computes probabilities and Grad-CAM in one forward + backward pass.
- An explicit `onnxruntime` / `tensorrt` for such a head is honoured: probabilities come from
  that engine and the maps from pytorch-grad-cam on the torch model, for the class the engine
  predicted (the engine's name then reads e.g. `onnxruntime+gradcam`).
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

ENGINES: tuple[str, ...] = ("auto", "onnxruntime", "torch", "tensorrt")
DEFAULT_LOW_CONFIDENCE_THRESHOLD = 0.6
"""Used when a model card has no `low_confidence_threshold`."""


class EngineError(Exception):
    """An engine cannot be chosen or run; `reason` is a stable lower_snake code.

    Codes: `unknown_engine`, `engine_unavailable`, `bad_batch`, `onnx_export_failed`,
    `tensorrt_build_failed`.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@runtime_checkable
class Engine(Protocol):
    """Runs a preprocessed batch; what every scoring path calls."""

    name: str  # recorded in every prediction row, e.g. "onnxruntime"

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
    gap_linear: bool = True,
    *,
    has_tensorrt: bool | None = None,
    has_cuda: bool | None = None,
) -> str:
    """Resolve `auto|onnxruntime|torch|tensorrt` to a concrete engine name (logged).

    `auto`: tensorrt if importable with a GPU, else onnxruntime; for heads that are not
    GAP-linear, torch (Grad-CAM needs gradients). `has_tensorrt`/`has_cuda` override the
    detection (tests). An explicit tensorrt without TensorRT or a GPU is an error.
    """
    if requested not in ENGINES:
        raise EngineError(
            f"unknown engine {requested!r}; choose one of {', '.join(ENGINES)}",
            reason="unknown_engine",
        )
    trt = tensorrt_importable() if has_tensorrt is None else has_tensorrt
    gpu = has_cuda if has_cuda is not None else (cuda_available() if trt else False)
    if requested == "tensorrt" and not (trt and gpu):
        raise EngineError(
            "engine tensorrt needs the tensorrt package and a CUDA GPU "
            f"(tensorrt importable: {trt}, GPU: {gpu})",
            reason="engine_unavailable",
        )
    if requested != "auto":
        chosen = requested
        why = "requested"
    elif not gap_linear:
        chosen, why = "torch", "head is not GAP-linear: Grad-CAM needs gradients"
    elif trt and gpu:
        chosen, why = "tensorrt", "TensorRT importable and a CUDA GPU present"
    else:
        chosen, why = "onnxruntime", "no TensorRT with a GPU here"
    log.info("engine %s (%s)", chosen, why)
    return chosen


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
        kind = select_engine("auto", sm.gap_linear)
    engine: Engine
    if kind == "torch":
        from scintiflow.inference.engines.torch_engine import TorchEngine

        return TorchEngine(
            sm, device=device, maps=maps, all_class_maps=all_class_maps, threads=threads
        )
    if kind == "onnxruntime":
        from scintiflow.inference.engines.ort_engine import OrtEngine

        engine = OrtEngine(sm, threads=threads, cams=maps)
    elif kind == "tensorrt":
        from scintiflow.inference.engines.tensorrt_engine import TensorRTEngine

        engine = TensorRTEngine(sm, cams=maps)
    else:
        raise EngineError(f"unknown engine {kind!r}", reason="unknown_engine")
    if maps and not sm.gap_linear:
        from scintiflow.inference.engines.torch_engine import GradCamCompanion

        return GradCamCompanion(engine, sm, all_class_maps=all_class_maps, threads=threads)
    return engine


__all__ = [
    "DEFAULT_LOW_CONFIDENCE_THRESHOLD",
    "ENGINES",
    "Engine",
    "EngineError",
    "ScoringModel",
    "check_batch",
    "load_scoring_model",
    "open_engine",
    "select_engine",
    "softmax_probs",
]
