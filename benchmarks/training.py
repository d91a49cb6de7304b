"""Training and evaluation throughput per architecture on this machine.

    .venv/bin/python benchmarks/training.py [--image-size 64] [--n 192] [--epochs 2]
                                            [--archs all] [--device auto]

Trains each architecture with the real loop (`scintiflow.ml.training.fit`: augmentation,
AdamW, class-balanced loss) for a few epochs on simulated scans and times it, then times
`predict_logits` on preprocessed images. Prints a markdown table of images/s; the study's
expected run time follows from it (images x epochs x fits / rate). Never asserted in tests.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from scintiflow import CLASSES
from scintiflow.ml.models import ARCHS, create_model
from scintiflow.ml.preprocess import PreprocessConfig, preprocess_batch
from scintiflow.ml.training import (
    TrainConfig,
    available_cores,
    fit,
    predict_logits,
    resolve_device,
)
from scintiflow.sim import simulate_cases


def run(
    archs: list[str], image_size: int, n: int, epochs: int, device: str, batch_size: int
) -> list[tuple[str, str, str, str]]:
    import torch

    cases = simulate_cases(n + 64, sites=("A", "B"), seed=3)
    images = [c.image for c in cases]
    y = np.array([CLASSES.index(c.label) for c in cases])
    train_x, train_y, val_x, val_y = images[:n], y[:n], images[n:], y[n:]
    pcfg = PreprocessConfig(image_size=image_size)
    eval_x = preprocess_batch(images, pcfg)
    dev = resolve_device(device)
    rows = []
    for arch in archs:
        torch.manual_seed(0)
        model = create_model(arch)
        cfg = TrainConfig(
            epochs=epochs,
            image_size=image_size,
            patience=epochs + 1,
            device=device,
            batch_size=batch_size,
        )
        res = fit(model, train_x, train_y, val_x, val_y, cfg, preprocess_config=pcfg)
        predict_logits(model, eval_x[:32], 128, dev)  # warm-up
        t0 = time.perf_counter()
        predict_logits(model, eval_x, 128, dev, amp=dev.type == "cuda")
        eval_rate = len(eval_x) / (time.perf_counter() - t0)
        rows.append(
            (
                arch,
                f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}",
                f"{res.train_images_per_s:,.0f}",
                f"{eval_rate:,.0f}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n", type=int, default=192, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--archs", default="all")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    archs = list(ARCHS) if args.archs == "all" else args.archs.split(",")
    rows = run(archs, args.image_size, args.n, args.epochs, args.device, args.batch_size)
    dev = resolve_device(args.device)
    where = (
        f"{available_cores()} CPU cores, {platform.machine()}"
        if dev.type == "cpu"
        else __import__("torch").cuda.get_device_name(dev)
    )
    print(
        f"Training throughput at {args.image_size} px, batch {args.batch_size}, "
        f"{args.n} images x {args.epochs} epochs ({where}; `python benchmarks/training.py`):\n"
    )
    print("| arch | params (M) | train images/s (incl. augmentation) | eval images/s |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
