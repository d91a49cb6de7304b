"""The torch engine: the reference, on CPU or CUDA; and Grad-CAM for non-GAP-linear heads.

GAP-linear heads run the same `CamGraph` as the ONNX export (logits + in-graph CAM in one
forward pass, under `inference_mode`). Other heads run pytorch-grad-cam's `GradCAM` at the
architecture's CAM layer: one forward + one backward pass per requested class, with ONE
`ClassifierOutputTarget` per image (a single target for a batch would give maps only for
image 0; see docs/scoring.md). On CUDA the model runs in channels_last with fp16 autocast.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np

from scintiflow.inference.engines import Engine, ScoringModel, check_batch, softmax_probs

if TYPE_CHECKING:
    import torch
    from torch import nn


def _device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _prepare(model: nn.Module, dev: torch.device, threads: int | None) -> nn.Module:
    import torch

    from scintiflow.ml.training import available_cores

    if dev.type == "cpu":
        torch.set_num_threads(threads or available_cores())
    model = copy.deepcopy(model).float().eval().to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def gradcam_maps(
    model: nn.Module,
    arch: str,
    batch: torch.Tensor,
    classes: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-grad-cam GradCAM for one class per image -> (logits (B, K), maps (B, S, S)).

    `classes` None: the predicted class of each image (argmax of the logits). Maps are the
    library's output: per image min-max scaled to [0, 1] and resized to the input size.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from scintiflow.ml.models import cam_target_layer

    targets = None if classes is None else [ClassifierOutputTarget(int(c)) for c in classes]
    with GradCAM(model=model, target_layers=[cam_target_layer(model, arch)]) as cam:
        maps = cam(input_tensor=batch, targets=targets)  # (B, S, S)
        logits = cam.outputs.detach().float().cpu().numpy()
    return logits, np.asarray(maps, dtype=np.float32)


class TorchEngine:
    """Reference engine; `name` is `torch` (CPU, `precision` fp32) or `torch-cuda` (fp16
    autocast)."""

    def __init__(
        self,
        sm: ScoringModel,
        *,
        device: str = "auto",
        maps: bool = True,
        all_class_maps: bool = False,
        threads: int | None = None,
    ) -> None:
        from scintiflow.inference.engines.export import CamGraph

        self.sm = sm
        self.device = _device(device)
        self.name = "torch" if self.device.type == "cpu" else "torch-cuda"
        self.precision = "fp32" if self.device.type == "cpu" else "fp16"
        self.model = _prepare(sm.model, self.device, threads)
        self.maps = maps
        self.all_class_maps = all_class_maps
        self.graph = CamGraph(self.model, sm.arch, cams=maps) if sm.gap_linear else None

    def _input(self, batch: np.ndarray) -> torch.Tensor:
        import torch

        x = torch.from_numpy(check_batch(batch, self.sm.preprocess.image_size)).to(self.device)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, 1, S, S) -> (probs (B, K), cams (B, K, h, w) | (B, 1|K, S, S) Grad-CAM | None)."""
        import torch

        x = self._input(batch)
        on_cuda = self.device.type == "cuda"
        if self.graph is not None or not self.maps:
            with (
                torch.inference_mode(),
                torch.autocast(self.device.type, dtype=torch.float16, enabled=on_cuda),
            ):
                outs: tuple[torch.Tensor, ...] = (
                    self.graph(x) if self.graph is not None else (self.model(x),)
                )
            logits = outs[0].float().cpu().numpy()
            cams = outs[1].float().cpu().numpy() if len(outs) > 1 else None
            return softmax_probs(logits, self.sm.temperature), cams
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=on_cuda):
            logits, first = gradcam_maps(self.model, self.sm.arch, x, None)
            if not self.all_class_maps:
                return softmax_probs(logits, self.sm.temperature), first[:, None]
            k = logits.shape[1]
            per_class = [
                gradcam_maps(self.model, self.sm.arch, x, np.full(len(x), c))[1] for c in range(k)
            ]
        return softmax_probs(logits, self.sm.temperature), np.stack(per_class, axis=1)


class GradCamCompanion:
    """Probabilities from another engine, maps from pytorch-grad-cam on the torch model.

    For an explicit `onnxruntime`/`tensorrt` choice with a head that is not GAP-linear: the
    maps are drawn for the class the inner engine predicted (or every class).
    """

    def __init__(
        self,
        inner: Engine,
        sm: ScoringModel,
        *,
        all_class_maps: bool = False,
        threads: int | None = None,
    ) -> None:
        self.inner = inner
        self.sm = sm
        self.name = f"{inner.name}+gradcam"
        self.precision = inner.precision  # of the probabilities; the maps come from torch
        self.device = _device("auto")
        self.model = _prepare(sm.model, self.device, threads)
        self.all_class_maps = all_class_maps

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Inner engine's probs; Grad-CAM maps (B, 1|K, S, S)."""
        import torch

        probs, _ = self.inner.run(batch)
        x = torch.from_numpy(check_batch(batch, self.sm.preprocess.image_size)).to(self.device)
        if not self.all_class_maps:
            _, maps = gradcam_maps(self.model, self.sm.arch, x, probs.argmax(1))
            return probs, maps[:, None]
        per_class = [
            gradcam_maps(self.model, self.sm.arch, x, np.full(len(x), c))[1]
            for c in range(probs.shape[1])
        ]
        return probs, np.stack(per_class, axis=1)
