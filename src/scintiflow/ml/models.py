"""Registry and factory of the study's four CNN architectures (timm-style).

    model = create_model("resnet34", num_classes=4, weights="none")   # (B, 1, H, W) -> (B, 4)
    layer = cam_target_layer(model, "resnet34")                        # for Grad-CAM / CAM

Grayscale input: every model takes ONE input channel. Scintigrams are single-channel count
images; rather than repeating them to three channels, the first convolution is adapted: its
ImageNet RGB kernels are summed over the colour axis. For an input repeated to 3 channels the
two are exactly equal (conv(repeat3(x), W) == conv(x, W.sum(1))), so pretrained features carry
over unchanged, while tensors, memory and first-layer FLOPs stay a third of the size.

ImageNet weights cannot be downloaded on the development machines: `weights="imagenet"` reads
torchvision's checkpoint cache (`torch.hub.get_dir()/checkpoints`, i.e. `$TORCH_HOME`) and fails
with reason `weights_unavailable` when the file is not there; any other string is a state dict
to load: a key in `store`, a file path, or a store URL (`file://...`, `s3://bucket/key`).

This module imports only torch and torchvision.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from scintiflow.storage import ObjectStore


class WeightsError(Exception):
    """Weights could not be found or do not fit the architecture; `reason` is a stable code."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


DEFAULT_LR = 1e-3
"""Peak AdamW learning rate of an architecture registered without its own."""


@dataclass(frozen=True)
class ModelSpec:
    """One registered architecture and what the rest of the pipeline needs to know about it.

    `cam_layer`, `first_conv` and `classifier` are dotted attribute paths into the module
    (integers index `nn.Sequential`s, negative ones from the end). `gap_linear` says the head is
    global-average-pool followed by one linear layer, so CAM (classifier weights x last feature
    map) equals Grad-CAM at `cam_layer` up to scale. `cam_grid_224` is the CAM map's edge length
    at a 224-px input.
    """

    name: str
    builder: Callable[[int], nn.Module]  # num_classes -> model with random init, 3 input chans
    torchvision_weights: str  # torchvision weights enum name, e.g. "ResNet34_Weights"
    first_conv: str
    classifier: str
    cam_layer: str
    gap_linear: bool
    cam_grid_224: int
    default_image_size: int = 224
    # AdamW peak learning rate when the run does not set one (`TrainConfig.lr=None`).
    default_lr: float = DEFAULT_LR


MODEL_SPECS: dict[str, ModelSpec] = {}

ARCHS: tuple[str, ...] = ("alexnet", "shufflenet_v2", "mobilenet_v3", "resnet34")
"""The study's four architectures, in the order tables list them."""


def register_model(
    *,
    name: str,
    torchvision_weights: str,
    first_conv: str,
    classifier: str,
    cam_layer: str,
    gap_linear: bool,
    cam_grid_224: int,
    default_image_size: int = 224,
    default_lr: float = DEFAULT_LR,
) -> Callable[[Callable[[int], nn.Module]], Callable[[int], nn.Module]]:
    """Decorator registering a builder `num_classes -> nn.Module` under `name`."""

    def wrap(builder: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        if name in MODEL_SPECS:
            raise ValueError(f"model {name!r} is already registered")
        MODEL_SPECS[name] = ModelSpec(
            name=name,
            builder=builder,
            torchvision_weights=torchvision_weights,
            first_conv=first_conv,
            classifier=classifier,
            cam_layer=cam_layer,
            gap_linear=gap_linear,
            cam_grid_224=cam_grid_224,
            default_image_size=default_image_size,
            default_lr=default_lr,
        )
        return builder

    return wrap


@register_model(
    name="alexnet",
    torchvision_weights="AlexNet_Weights",
    first_conv="features.0",
    classifier="classifier.6",
    cam_layer="features.11",  # ReLU after the last conv (13x13 at 224), before the last pool
    gap_linear=False,
    cam_grid_224=13,
    # No BatchNorm: from random init at 1e-3 it collapsed towards one class on the study-sized
    # simulated set (internal accuracy 0.687 after 40 epochs; 0.846 at 3e-4 after 30).
    default_lr=3e-4,
)
def _alexnet(num_classes: int) -> nn.Module:
    from torchvision.models import alexnet

    model = alexnet(weights=None, num_classes=num_classes)
    # The CAM layer's output must not be overwritten in place (Grad-CAM hooks read it).
    model.features[11] = nn.ReLU(inplace=False)
    return model


@register_model(
    name="shufflenet_v2",
    torchvision_weights="ShuffleNet_V2_X1_0_Weights",
    first_conv="conv1.0",
    classifier="fc",
    cam_layer="conv5",
    gap_linear=True,
    cam_grid_224=7,
    # From random init on the study-sized simulated set, 40 epochs: internal accuracy 0.839 at
    # 1e-3, 0.893 at 2e-3.
    default_lr=2e-3,
)
def _shufflenet_v2(num_classes: int) -> nn.Module:
    from torchvision.models import shufflenet_v2_x1_0

    return shufflenet_v2_x1_0(weights=None, num_classes=num_classes)


def _bn_momentum(model: nn.Module, momentum: float = 0.1) -> nn.Module:
    """Set every BatchNorm's running-stat momentum (torchvision's MobileNetV3 uses 0.01).

    At 0.01 the running statistics need hundreds of steps to leave their initial values; a
    study-sized dataset (tens of steps per epoch) then evaluates with near-initial statistics
    and predicts a constant. PyTorch's default 0.1 tracks them within an epoch or two. Only a
    training-time setting: weights and outputs in eval mode are unchanged.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = momentum
    return model


@register_model(
    name="mobilenet_v3",
    torchvision_weights="MobileNet_V3_Large_Weights",
    first_conv="features.0.0",
    classifier="classifier.3",
    cam_layer="features.-1",
    gap_linear=False,  # pool -> linear -> hardswish -> dropout -> linear
    cam_grid_224=7,
)
def _mobilenet_v3(num_classes: int) -> nn.Module:
    from torchvision.models import mobilenet_v3_large

    return _bn_momentum(mobilenet_v3_large(weights=None, num_classes=num_classes))


@register_model(
    name="mobilenet_v3_small",
    torchvision_weights="MobileNet_V3_Small_Weights",
    first_conv="features.0.0",
    classifier="classifier.3",
    cam_layer="features.-1",
    gap_linear=False,
    cam_grid_224=7,
)
def _mobilenet_v3_small(num_classes: int) -> nn.Module:
    from torchvision.models import mobilenet_v3_small

    return _bn_momentum(mobilenet_v3_small(weights=None, num_classes=num_classes))


@register_model(
    name="resnet34",
    torchvision_weights="ResNet34_Weights",
    first_conv="conv1",
    classifier="fc",
    cam_layer="layer4.-1",
    gap_linear=True,
    cam_grid_224=7,
)
def _resnet34(num_classes: int) -> nn.Module:
    from torchvision.models import resnet34

    return resnet34(weights=None, num_classes=num_classes)


def get_spec(name: str) -> ModelSpec:
    """The registered spec of `name`; `KeyError` naming the known architectures otherwise."""
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {sorted(MODEL_SPECS)}") from None


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted path; integer parts index (negative from the end)."""
    module: Any = model
    for part in path.split("."):
        module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)
    if not isinstance(module, nn.Module):
        raise TypeError(f"{path!r} is not a module")
    return module


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, last = path.rpartition(".")
    parent: Any = resolve_module(model, parent_path) if parent_path else model
    if last.lstrip("-").isdigit():
        parent[int(last)] = new
    else:
        setattr(parent, last, new)


def cam_target_layer(model: nn.Module, name: str) -> nn.Module:
    """The layer whose activations Grad-CAM (or CAM) uses for architecture `name`."""
    return resolve_module(model, get_spec(name).cam_layer)


def classifier_layer(model: nn.Module, name: str) -> nn.Linear:
    """The final linear layer (for GAP-linear heads: the CAM weights)."""
    layer = resolve_module(model, get_spec(name).classifier)
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"classifier of {name!r} is not nn.Linear")
    return layer


def _to_single_channel(model: nn.Module, spec: ModelSpec) -> None:
    """Replace the first conv by a 1-input-channel conv whose kernels are the RGB sum."""
    conv = resolve_module(model, spec.first_conv)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"first conv of {spec.name!r} is not nn.Conv2d")
    if conv.in_channels == 1:
        return
    new = nn.Conv2d(
        1,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    _set_module(model, spec.first_conv, new)


def _replace_head(model: nn.Module, spec: ModelSpec, num_classes: int) -> None:
    old = resolve_module(model, spec.classifier)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"classifier of {spec.name!r} is not nn.Linear")
    if old.out_features != num_classes:
        _set_module(model, spec.classifier, nn.Linear(old.in_features, num_classes))


def _imagenet_state_dict(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """torchvision's cached ImageNet checkpoint for `spec` (never downloads)."""
    import torchvision.models as tvm

    weights_enum = getattr(tvm, spec.torchvision_weights)
    url: str = weights_enum.DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not path.is_file():
        raise WeightsError(
            f"ImageNet weights for {spec.name!r} are not in torchvision's cache ({path}); "
            "download them where a network is available (or put the state dict in the store "
            "and pass its key/URL as weights)",
            reason="weights_unavailable",
        )
    state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def _read_weights_bytes(weights: str, store: ObjectStore | None) -> bytes:
    """Bytes of a state dict named by a store key, a file path or a store URL."""
    from scintiflow.storage import StoreError, open_store

    try:
        if store is not None and "://" not in weights and store.exists(weights):
            return store.get(weights)
        if "://" in weights:
            base, _, key = weights.rpartition("/")
            return open_store(base).get(key)
        path = Path(weights).expanduser()
        if path.is_file():
            return path.read_bytes()
    except StoreError as exc:
        raise WeightsError(f"cannot read weights {weights!r}: {exc}", reason=exc.reason) from exc
    raise WeightsError(f"no weights found at {weights!r}", reason="weights_unavailable")


def load_state_dict_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """A state dict from `torch.save` bytes (tensors only: never unpickles arbitrary code)."""
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"not a torch state dict: {exc}", reason="bad_weights") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError("weights file does not hold a state dict", reason="bad_weights")
    return dict(obj)


def state_dict_bytes(model: nn.Module) -> bytes:
    """`torch.save(model.state_dict())` as bytes (what the registry stores)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def _load_pretrained(
    model: nn.Module, spec: ModelSpec, state: dict[str, torch.Tensor], num_classes: int
) -> None:
    """Load `state` into a 3-channel model with any head size, then adapt channels and head.

    The state dict may come from a 3-channel ImageNet model (first conv summed to 1 channel)
    or from a 1-channel scintiflow model; a head of a different size is left at random init.
    """
    first_w = f"{spec.first_conv}.weight"
    head_w, head_b = f"{spec.classifier}.weight", f"{spec.classifier}.bias"
    state = dict(state)
    if first_w in state and state[first_w].shape[1] == 1:
        _to_single_channel(model, spec)
    head_fits = head_w in state and state[head_w].shape[0] == num_classes
    if head_fits:
        _replace_head(model, spec, num_classes)
    else:
        state.pop(head_w, None)
        state.pop(head_b, None)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape: another architecture's weights
        raise WeightsError(
            f"weights do not fit {spec.name!r}: {str(exc).splitlines()[-1].strip()}",
            reason="weights_mismatch",
        ) from None
    missing = [k for k in result.missing_keys if k not in (head_w, head_b)]
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"weights do not fit {spec.name!r}: {len(missing)} missing and "
            f"{len(result.unexpected_keys)} unexpected keys "
            f"(e.g. {(missing + list(result.unexpected_keys))[:3]})",
            reason="weights_mismatch",
        )
    _to_single_channel(model, spec)
    _replace_head(model, spec, num_classes)


def create_model(
    name: str,
    num_classes: int = 4,
    weights: str = "none",
    *,
    store: ObjectStore | None = None,
) -> nn.Module:
    """Build architecture `name` for 1-channel input and `num_classes` outputs.

    `weights`: "none" (random init, seeded by the caller's `torch.manual_seed`), "imagenet"
    (torchvision's local cache only), or a state dict's store key / file path / store URL.
    Raises `WeightsError` (reasons `weights_unavailable`, `bad_weights`, `weights_mismatch`).
    """
    spec = get_spec(name)
    if weights == "none":
        model = spec.builder(num_classes)
        _to_single_channel(model, spec)
        return model
    model = spec.builder(1000)
    if weights == "imagenet":
        state = _imagenet_state_dict(spec)
    else:
        state = load_state_dict_bytes(_read_weights_bytes(weights, store))
    _load_pretrained(model, spec, state, num_classes)
    return model
