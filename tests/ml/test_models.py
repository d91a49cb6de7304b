"""The architecture registry: shapes, CAM layers, grayscale adaptation, weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scintiflow.ml.models import (
    ARCHS,
    MODEL_SPECS,
    WeightsError,
    cam_target_layer,
    classifier_layer,
    create_model,
    get_spec,
    resolve_module,
    state_dict_bytes,
)
from scintiflow.storage import LocalStore


def _cam_shape(
    model: torch.nn.Module, arch: str, size: int
) -> tuple[torch.Tensor, tuple[int, ...]]:
    seen: dict[str, torch.Tensor] = {}
    handle = cam_target_layer(model, arch).register_forward_hook(
        lambda _m, _i, out: seen.__setitem__("out", out)
    )
    try:
        with torch.no_grad():
            logits = model.eval()(torch.randn(2, 1, size, size))
    finally:
        handle.remove()
    return logits, tuple(seen["out"].shape)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_gives_four_logits_and_documented_cam_grid(arch: str) -> None:
    torch.manual_seed(0)
    model = create_model(arch, num_classes=4)
    logits, cam = _cam_shape(model, arch, 224)
    assert logits.shape == (2, 4)
    assert torch.isfinite(logits).all()
    spec = get_spec(arch)
    assert cam[0] == 2
    assert cam[2:] == (spec.cam_grid_224, spec.cam_grid_224)
    # Small inputs (CPU studies) still work and keep a spatial map.
    logits64, cam64 = _cam_shape(model, arch, 64)
    assert logits64.shape == (2, 4)
    assert cam64[2] >= 1


@pytest.mark.parametrize("arch", ARCHS)
def test_one_input_channel_and_head_size(arch: str) -> None:
    model = create_model(arch, num_classes=3)
    first = resolve_module(model, get_spec(arch).first_conv)
    assert isinstance(first, torch.nn.Conv2d)
    assert first.in_channels == 1
    assert classifier_layer(model, arch).out_features == 3


def test_gap_linear_heads_are_the_two_documented_ones() -> None:
    assert {a for a in ARCHS if MODEL_SPECS[a].gap_linear} == {"resnet34", "shufflenet_v2"}


def test_unknown_arch_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="resnet34"):
        create_model("vgg16")


def test_weights_from_a_state_dict_in_the_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "bucket")
    torch.manual_seed(1)
    source = create_model("shufflenet_v2").eval()
    store.put("weights/shuffle.pt", state_dict_bytes(source))
    loaded = create_model("shufflenet_v2", weights="weights/shuffle.pt", store=store).eval()
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))
    # The same object by URL, without a store at hand.
    by_url = create_model("shufflenet_v2", weights=store.url_for("weights/shuffle.pt")).eval()
    with torch.no_grad():
        assert torch.equal(source(x), by_url(x))


def _imagenet_like_state(arch: str) -> dict[str, torch.Tensor]:
    """A 3-channel, 1000-class torchvision state dict (random), as ImageNet checkpoints are."""
    torch.manual_seed(2)
    return get_spec(arch).builder(1000).state_dict()


def test_rgb_1000_class_state_dict_is_summed_to_one_channel(tmp_path: Path) -> None:
    state = _imagenet_like_state("resnet34")
    path = tmp_path / "rgb.pt"
    torch.save(state, path)
    model = create_model("resnet34", num_classes=4, weights=str(path)).eval()
    assert torch.allclose(model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(model.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    assert model.fc.out_features == 4
    # Summing the kernels is exactly the 3-channel conv of the image repeated three times.
    rgb = torch.nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
    rgb.weight.data.copy_(state["conv1.weight"])
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.conv1(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-5)


def test_imagenet_weights_come_from_torchvisions_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as info:
        create_model("alexnet", weights="imagenet")
    assert info.value.reason == "weights_unavailable"
    # Put a checkpoint where torchvision would have cached it: it loads without a network.
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    state = _imagenet_like_state("alexnet")
    torch.save(state, tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    model = create_model("alexnet", weights="imagenet")
    assert torch.equal(model.features[3].weight, state["features.3.weight"])
    assert model.features[0].in_channels == 1
    assert model.classifier[6].out_features == 4


def test_weights_errors_have_reason_codes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("w/garbage.pt", b"not a state dict")
    store.put("w/resnet.pt", state_dict_bytes(create_model("resnet34")))
    cases = {
        "w/missing.pt": "weights_unavailable",
        "w/garbage.pt": "bad_weights",
        "w/resnet.pt": "weights_mismatch",  # a ResNet's weights do not fit a ShuffleNet
    }
    for key, reason in cases.items():
        with pytest.raises(WeightsError) as info:
            create_model("shufflenet_v2", weights=key, store=store)
        assert info.value.reason == reason, key


def test_mobilenet_batchnorm_tracks_statistics_at_pytorchs_default_rate() -> None:
    # torchvision's 0.01 leaves running stats near their init on study-sized data (a constant
    # prediction in eval mode); one training batch must move them by the default 10 %.
    model = create_model("mobilenet_v3")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns
    assert all(m.momentum == 0.1 for m in bns)
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 1, 64, 64) * 5 + 3)
    assert abs(float(bns[0].running_mean.abs().mean())) > 1e-3
