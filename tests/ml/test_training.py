"""Real (small) training runs on CPU: it learns, it is reproducible, the helpers hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scintiflow import CLASSES
from scintiflow.ml.models import create_model
from scintiflow.ml.preprocess import PreprocessConfig, preprocess_batch
from scintiflow.ml.training import (
    TrainConfig,
    available_cores,
    class_weights,
    fit,
    predict_logits,
    recalibrate_batchnorm,
    resolve_device,
    resolve_lr,
)
from scintiflow.sim import simulate_cases


def _easy(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    cases = simulate_cases(n, sites=("A", "B"), seed=seed, difficulty=0.0)
    return [c.image for c in cases], np.array([CLASSES.index(c.label) for c in cases])


def test_class_weights_balance_the_loss() -> None:
    y = np.array([0, 0, 0, 1, 2, 2])
    w = class_weights(y, 4)
    counts = np.bincount(y, minlength=4)
    assert w[3] == 0.0  # absent class
    # Every present class contributes the same total weight.
    assert np.allclose((w * counts)[:3], (w * counts)[0])
    assert np.isclose((w * counts).sum(), len(y))


def test_device_resolution_uses_every_available_core() -> None:
    dev = resolve_device("cpu")
    assert dev.type == "cpu"
    assert torch.get_num_threads() == available_cores()


def test_learning_rate_defaults_per_architecture_and_the_run_overrides() -> None:
    default = TrainConfig()
    assert default.lr is None
    assert resolve_lr(default, "alexnet") == 3e-4  # no BatchNorm: a gentler default
    assert resolve_lr(default, "shufflenet_v2") == 2e-3
    assert resolve_lr(default, "resnet34") == 1e-3
    assert resolve_lr(default) == 1e-3  # no arch named
    assert resolve_lr(TrainConfig(lr=0.02), "alexnet") == 0.02
    assert resolve_lr(TrainConfig(lr=0.0), "resnet34") == 0.0  # 0 is a value, not "unset"
    with pytest.raises(KeyError, match="unknown architecture"):
        resolve_lr(default, "vgg16")


def test_fit_trains_with_the_resolved_learning_rate() -> None:
    images, y = _easy(24, seed=3)
    model = create_model("alexnet", num_classes=len(CLASSES))
    res = fit(
        model,
        images[:16],
        y[:16],
        images[16:],
        y[16:],
        TrainConfig(epochs=2, image_size=64, batch_size=8, warmup_epochs=0, augment=False),
        arch="alexnet",
    )
    # No warm-up, 2 epochs: after the first the cosine is half-way, at half alexnet's peak.
    assert res.history[0]["lr"] == pytest.approx(0.5 * 3e-4, rel=1e-6)


@pytest.mark.slow
def test_small_run_beats_chance_and_lowers_validation_loss() -> None:
    train_x, train_y = _easy(192, seed=11)
    val_x, val_y = _easy(64, seed=12)
    torch.manual_seed(0)
    model = create_model("shufflenet_v2")
    seen: list[tuple[int, float, float]] = []
    res = fit(
        model,
        train_x,
        train_y,
        val_x,
        val_y,
        TrainConfig(epochs=8, image_size=64, batch_size=32, lr=3e-3, patience=8, seed=0),
        progress=lambda _a, _f, epoch, loss, val_loss: seen.append((epoch, loss, val_loss)),
    )
    assert [e for e, _, _ in seen] == list(range(1, res.epochs_run + 1))
    val_losses = [h["val_loss"] for h in res.history]
    assert min(val_losses) < val_losses[0] - 0.2
    # The model holds the best epoch's weights: its logits are the returned ones.
    logits = predict_logits(model, preprocess_batch(val_x, PreprocessConfig(image_size=64)))
    assert np.allclose(logits, res.val_logits, atol=1e-4)
    accuracy = float((logits.argmax(1) == val_y).mean())
    assert accuracy >= 0.6  # chance is ~0.3 (the largest class)
    assert res.train_images_per_s > 0
    assert res.best_epoch >= min(TrainConfig().min_epochs, 8)  # never a pre-settling epoch


def test_same_seed_same_logits() -> None:
    train_x, train_y = _easy(40, seed=21)
    val_x, val_y = _easy(12, seed=22)
    cfg = TrainConfig(epochs=1, image_size=32, batch_size=16, seed=5)
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        model = create_model("shufflenet_v2")
        outs.append(fit(model, train_x, train_y, val_x, val_y, cfg).val_logits)
    assert np.array_equal(outs[0], outs[1])
    torch.manual_seed(6)
    other = fit(create_model("shufflenet_v2"), train_x, train_y, val_x, val_y, cfg).val_logits
    assert not np.allclose(outs[0], other)


def test_fit_needs_a_validation_set() -> None:
    x, y = _easy(8, seed=1)
    with pytest.raises(ValueError, match="validation"):
        fit(create_model("shufflenet_v2"), x, y, [], np.array([]), TrainConfig(epochs=1))


def test_batchnorm_recalibration_gives_exact_training_statistics() -> None:
    torch.manual_seed(0)
    model = create_model("resnet34").eval()
    x = torch.rand(40, 1, 32, 32) * 3
    recalibrate_batchnorm(model, x, 20, torch.device("cpu"))  # equal batches: exact mean
    with torch.no_grad():
        feats = model.conv1(x)  # (B, 64, 16, 16): what bn1 normalises
    assert torch.allclose(model.bn1.running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-4)
    assert model.bn1.momentum == 0.1  # restored
    assert not model.training  # the mode it had
