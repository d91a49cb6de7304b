"""Fit one model: AdamW, cosine schedule with warm-up, class-balanced loss, early stopping.

    result = fit(model, train_images, train_y, val_images, val_y, TrainConfig(epochs=20))
    model.load_state_dict(result.state_dict)          # the best epoch by validation loss

Inputs are raw count images (2-D arrays, any size) plus integer labels in `CLASSES` order;
preprocessing (`scintiflow.ml.preprocess`) happens here, with `Augment` on training images only.
No I/O happens inside the loops. On CUDA it uses AMP (bf16 where supported, else fp16 with a
grad scaler), channels_last and DataLoader workers; on CPU it runs single-process with
`torch.set_num_threads` = the cores this process may use.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from scintiflow.ml.preprocess import Augment, PreprocessConfig, preprocess_batch

if TYPE_CHECKING:
    import torch
    from torch import nn

ProgressFn = Callable[[str, "int | None", int, float, float], None]
"""progress(arch, fold, epoch, train_loss, val_loss), called after every epoch."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one fit (stored in the model card)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float | None = None  # None: the architecture's `ModelSpec.default_lr` (see `resolve_lr`)
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    patience: int = 6  # epochs without validation-loss improvement before stopping
    # The best epoch is chosen from this epoch on, and stopping cannot come earlier: a net
    # trained from scratch starts at the uniform-prediction loss (ln 4), which its first noisy
    # epochs (BatchNorm statistics still settling) often exceed, so selecting among them
    # would keep a constant classifier.
    min_epochs: int = 5
    # Re-estimate BatchNorm statistics on the (unaugmented) training images before every
    # validation: the running averages lag weights that still move fast, and on study-sized
    # data MobileNetV3 then predicted one class in eval mode (0.27 -> 0.87 on an easy set).
    recalibrate_bn: bool = True
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    image_size: int = 224
    amp: bool = True  # CUDA only
    num_workers: int = 4  # CUDA only; CPU runs in-process
    balance: str = "loss"  # "loss": class-weighted cross-entropy; "none"
    augment: bool = True
    eval_batch_size: int = 128

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        from dataclasses import asdict

        return asdict(self)


@dataclass
class FitResult:
    """The best epoch's weights (CPU tensors) and how the fit went."""

    state_dict: dict[str, Any] = field(repr=False)
    history: list[dict[str, float]]
    epochs_run: int
    best_epoch: int
    seconds: float
    val_logits: np.ndarray = field(repr=False)  # (N_val, K) at the best epoch
    train_images_per_s: float


def available_cores() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` -> CUDA when available, else CPU. Also sets CPU threads to the usable cores."""
    import torch

    torch.set_num_threads(available_cores())
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and ask for deterministic kernels where they exist."""
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights N / (K * n_k), mean 1 over present classes; 0 if absent."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=num_classes).astype(float)
    w = np.zeros(num_classes)
    present = counts > 0
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w


class _CountsDataset:
    """Raw count images -> augmented tensors; image i in epoch e uses rng(seed, e, i)."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        y: np.ndarray,
        config: PreprocessConfig,
        augment: Augment | None,
        seed: int,
    ) -> None:
        self.images = images
        self.y = np.asarray(y, dtype=np.int64)
        self.config = config
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._plain = None if augment is not None else preprocess_batch(images, config)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        if self._plain is not None:
            return self._plain[i], int(self.y[i])
        assert self.augment is not None
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return self.augment(self.images[i], self.config, rng), int(self.y[i])


def _collate(items: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    x = torch.from_numpy(np.stack([a for a, _ in items]))
    y = torch.tensor([b for _, b in items], dtype=torch.long)
    return x, y


def _amp_dtype(device: torch.device) -> torch.dtype | None:
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def recalibrate_batchnorm(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
) -> None:
    """Reset every BatchNorm's running statistics to their exact average over `images`.

    Like `torch.optim.swa_utils.update_bn`: cumulative averaging (momentum None) over one
    pass in train mode without gradients, then the momenta are restored. No-op without BN.
    """
    import torch
    from torch import nn as tnn

    bns = [m for m in model.modules() if isinstance(m, tnn.modules.batchnorm._BatchNorm)]
    if not bns or len(images) == 0:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device, non_blocking=True)
            if len(x) < 2:  # a single image has no batch variance
                continue
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(
                device.type, dtype=amp_dtype or torch.float32, enabled=bool(amp_dtype)
            ):
                model(x)
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def predict_logits(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    *,
    amp: bool = False,
) -> np.ndarray:
    """Preprocessed images (N, 1, S, S) -> logits (N, K) float32, model in eval mode."""
    import torch

    dev = torch.device(device) if isinstance(device, str) else device
    if dev.type == "cpu":
        torch.set_num_threads(available_cores())
    x_all = torch.as_tensor(images)
    model = model.to(dev).eval()
    amp_dtype = _amp_dtype(dev) if amp else None
    outs: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(x_all), batch_size):
            x = x_all[start : start + batch_size].to(dev, non_blocking=True)
            if dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(
                dev.type, dtype=amp_dtype or torch.float32, enabled=bool(amp_dtype)
            ):
                logits = model(x)
            outs.append(logits.float().cpu().numpy())
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32, copy=False)


def resolve_lr(config: TrainConfig, arch: str = "") -> float:
    """The peak learning rate of a fit: `config.lr`, else `arch`'s registered default."""
    if config.lr is not None:
        return config.lr
    from scintiflow.ml.models import DEFAULT_LR, get_spec

    return get_spec(arch).default_lr if arch else DEFAULT_LR


@dataclass
class _FitSetup:
    """Everything one fit's epochs share: device, data, loss, optimiser and schedule."""

    device: torch.device
    amp_dtype: torch.dtype | None
    dataset: _CountsDataset
    loader: torch.utils.data.DataLoader[tuple[np.ndarray, int]]
    val_x: torch.Tensor
    val_y: np.ndarray
    plain_train_x: torch.Tensor | None  # for BatchNorm recalibration
    criterion: nn.Module
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def _make_loader(
    dataset: _CountsDataset, config: TrainConfig, on_cuda: bool
) -> torch.utils.data.DataLoader[tuple[np.ndarray, int]]:
    import torch

    return torch.utils.data.DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
        collate_fn=_collate,
        num_workers=config.num_workers if on_cuda else 0,
        pin_memory=on_cuda,
        persistent_workers=False,
        drop_last=len(dataset) % config.batch_size == 1,  # BatchNorm cannot train on 1 image
    )


def _make_optimiser(
    model: nn.Module, config: TrainConfig, arch: str, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW at the resolved peak rate; linear warm-up, then a cosine decay to zero."""
    import torch

    # The fused kernel is several times faster than the per-tensor loop (on CPU too).
    optimiser = torch.optim.AdamW(
        model.parameters(),
        lr=resolve_lr(config, arch),
        weight_decay=config.weight_decay,
        fused=True,
    )
    total_steps = steps_per_epoch * config.epochs
    warmup = steps_per_epoch * config.warmup_epochs

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_frac = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_frac)))

    return optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, lr_lambda)


def _prepare_fit(
    model: nn.Module,
    train: tuple[Sequence[np.ndarray], np.ndarray],
    val: tuple[Sequence[np.ndarray], np.ndarray],
    config: TrainConfig,
    pcfg: PreprocessConfig,
    augment: Augment | None,
    arch: str,
    num_classes: int,
) -> tuple[nn.Module, _FitSetup]:
    """Seed, pick the device, move the model and build the data, loss and optimiser."""
    import torch
    from torch import nn as tnn

    seed_everything(config.seed)
    device = resolve_device(config.device)
    on_cuda = device.type == "cuda"
    model = model.to(device)
    if on_cuda:
        model = model.to(memory_format=torch.channels_last)
    train_images, val_images = train[0], val[0]
    train_y = np.asarray(train[1], dtype=np.int64)
    dataset = _CountsDataset(train_images, train_y, pcfg, augment, config.seed)
    plain = (
        torch.from_numpy(preprocess_batch(train_images, pcfg)) if config.recalibrate_bn else None
    )
    loader = _make_loader(dataset, config, on_cuda)
    weights = (
        torch.tensor(class_weights(train_y, num_classes), dtype=torch.float32, device=device)
        if config.balance == "loss"
        else None
    )
    optimiser, scheduler = _make_optimiser(model, config, arch, max(1, len(loader)))
    amp_dtype = _amp_dtype(device) if config.amp else None
    return model, _FitSetup(
        device=device,
        amp_dtype=amp_dtype,
        dataset=dataset,
        loader=loader,
        val_x=torch.from_numpy(preprocess_batch(val_images, pcfg)),
        val_y=np.asarray(val[1], dtype=np.int64),
        plain_train_x=plain,
        criterion=tnn.CrossEntropyLoss(weight=weights),
        optimiser=optimiser,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16),
    )


def _train_epoch(
    model: nn.Module, setup: _FitSetup, epoch: int, batch_size: int
) -> tuple[float, int]:
    """One pass over the (augmented) training images, then the BatchNorm recalibration
    (`batch_size` images at a time); returns (summed loss, images seen)."""
    import torch

    setup.dataset.epoch = epoch
    model.train()
    device, amp_dtype = setup.device, setup.amp_dtype
    loss_sum, n_seen = 0.0, 0
    for x_cpu, y_cpu in setup.loader:
        x = x_cpu.to(device, non_blocking=True)
        y = y_cpu.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        setup.optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=bool(amp_dtype)):
            loss = setup.criterion(model(x), y)
        setup.scaler.scale(loss).backward()
        setup.scaler.step(setup.optimiser)
        setup.scaler.update()
        setup.scheduler.step()
        loss_sum += float(loss.detach()) * len(y)
        n_seen += len(y)
    if setup.plain_train_x is not None:
        recalibrate_batchnorm(
            model, setup.plain_train_x, batch_size, device, amp_dtype=setup.amp_dtype
        )
    return loss_sum, n_seen


def _validate(
    model: nn.Module, setup: _FitSetup, config: TrainConfig
) -> tuple[np.ndarray, float, float]:
    """(logits, loss, accuracy) on the validation images."""
    import torch

    device = setup.device
    logits = predict_logits(
        model, setup.val_x, config.eval_batch_size, device, amp=setup.amp_dtype is not None
    )
    val_loss = float(
        setup.criterion(
            torch.from_numpy(logits).to(device), torch.from_numpy(setup.val_y).to(device)
        )
    )
    return logits, val_loss, float((logits.argmax(1) == setup.val_y).mean())


@dataclass
class _BestEpoch:
    """Early stopping: the lowest validation loss so far, its weights and logits."""

    logits: np.ndarray
    loss: float = math.inf
    epoch: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    stale: int = 0

    def update(
        self, epoch: int, val_loss: float, model: nn.Module, logits: np.ndarray, patience: int
    ) -> bool:
        """Keep `epoch` if it improves by more than 1e-4; True when it is time to stop."""
        if val_loss < self.loss - 1e-4:
            self.loss, self.epoch, self.stale = val_loss, epoch, 0
            self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            self.logits = logits
            return False
        self.stale += 1
        return self.stale >= patience


def fit(
    model: nn.Module,
    train_images: Sequence[np.ndarray],
    train_y: np.ndarray,
    val_images: Sequence[np.ndarray],
    val_y: np.ndarray,
    config: TrainConfig,
    *,
    preprocess_config: PreprocessConfig | None = None,
    augment: Augment | None = None,
    progress: ProgressFn | None = None,
    arch: str = "",
    fold: int | None = None,
    num_classes: int = 4,
) -> FitResult:
    """Train `model` in place; return the best (lowest validation loss) epoch's state.

    `train_images`/`val_images` are raw count images; `train_y`/`val_y` class indices.
    The model ends holding the best state. Same seed, same data -> same weights on CPU.
    """
    import torch

    if len(train_images) != len(train_y) or len(val_images) != len(val_y):
        raise ValueError("images and labels differ in length")
    if len(val_images) == 0:
        raise ValueError("a validation set is needed for early stopping")
    pcfg = preprocess_config or PreprocessConfig(image_size=config.image_size)
    aug = (augment or Augment()) if config.augment else None
    model, setup = _prepare_fit(
        model, (train_images, train_y), (val_images, val_y), config, pcfg, aug, arch, num_classes
    )
    best = _BestEpoch(logits=np.zeros((len(val_y), num_classes), dtype=np.float32))
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    train_seconds, images_seen, epochs_run = 0.0, 0, 0
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        loss_sum, n_seen = _train_epoch(model, setup, epoch, config.eval_batch_size)
        train_seconds += time.perf_counter() - t0
        logits, val_loss, val_acc = _validate(model, setup, config)
        images_seen += n_seen
        train_loss = loss_sum / max(1, n_seen)
        epochs_run = epoch + 1
        history.append(
            {
                "epoch": float(epochs_run),
                "loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": float(setup.optimiser.param_groups[0]["lr"]),
            }
        )
        if progress is not None:
            progress(arch, fold, epochs_run, train_loss, val_loss)
        if epochs_run < min(config.min_epochs, config.epochs):
            continue
        if best.update(epochs_run, val_loss, model, logits, config.patience):
            break
    model.load_state_dict(best.state)
    model.to("cpu")
    if setup.device.type == "cuda":
        model.to(memory_format=torch.contiguous_format)
    return FitResult(
        state_dict=best.state,
        history=history,
        epochs_run=epochs_run,
        best_epoch=best.epoch,
        seconds=time.perf_counter() - started,
        val_logits=best.logits,
        train_images_per_s=images_seen / train_seconds if train_seconds > 0 else 0.0,
    )
