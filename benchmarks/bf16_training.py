"""bf16 autocast for training on CPU: images/s and accuracy of one short fit, fp32 vs bf16.

    .venv/bin/python benchmarks/bf16_training.py [--arch resnet34] [--size 64] [--epochs 5]
                                                 [--scale 0.08] [--write-docs]

`training.fit` uses AMP on CUDA only. To measure what bf16 would give on a CPU node, this
runs the SAME `fit` (same loop, optimiser, augmentation, early stopping, seed) twice on a
tiny simulated study, once as it is (fp32) and once with its AMP dtype set to bfloat16 on
CPU (`torch.autocast("cpu", torch.bfloat16)`, for this process only; the training defaults
are untouched). It also times bare training steps (forward + backward + AdamW) at fp32 and
bf16, each with and without channels_last, since `fit` uses channels_last on CUDA only.
Reports images/s and internal/external accuracy; speed is measured here, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np


def _fit(arch: str, data: Any, size: int, epochs: int, bf16: bool) -> dict[str, float]:
    """One real `fit` (fp32, or bf16 autocast on CPU); accuracy on the held-out sets."""
    import torch

    from scintiflow.ml import training
    from scintiflow.ml.models import create_model
    from scintiflow.ml.preprocess import PreprocessConfig, preprocess_batch

    original = training._amp_dtype
    if bf16:
        training._amp_dtype = lambda device: torch.bfloat16  # type: ignore[assignment]
    try:
        torch.manual_seed(0)
        model = create_model(arch)
        images = [im.pixels for im in data.train]
        y = np.array([im.label for im in data.train])
        n_val = max(8, len(images) // 7)
        config = training.TrainConfig(
            epochs=epochs, image_size=size, device="cpu", patience=epochs, min_epochs=1
        )
        res = training.fit(
            model, images[n_val:], y[n_val:], images[:n_val], y[:n_val], config, arch=arch
        )
    finally:
        training._amp_dtype = original
    out = {"train_images_per_s": res.train_images_per_s, "seconds": res.seconds}
    pcfg = PreprocessConfig(image_size=size)
    model.load_state_dict(res.state_dict)
    for name, part in (("internal", data.internal), ("external", data.external)):
        x = preprocess_batch([im.pixels for im in part], pcfg)
        logits = training.predict_logits(model.eval(), x, 128, torch.device("cpu"))
        out[name] = float((logits.argmax(1) == np.array([im.label for im in part])).mean())
    return out


def _steps(arch: str, size: int, batch: int, steps: int) -> dict[str, float]:
    """Bare training steps/s as images/s: fp32 / bf16 x plain / channels_last."""
    import torch

    from scintiflow.ml.models import create_model

    rng = np.random.default_rng(0)
    x0 = torch.from_numpy(rng.standard_normal((batch, 1, size, size)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 4, batch))
    out = {}
    loss_fn = torch.nn.CrossEntropyLoss()
    for cl in (False, True):
        for bf16 in (False, True):
            torch.manual_seed(0)
            model = create_model(arch).train()
            x = x0
            if cl:
                model = model.to(memory_format=torch.channels_last)
                x = x0.contiguous(memory_format=torch.channels_last)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)

            def step(model: Any = model, x: Any = x, opt: Any = opt, bf16: bool = bf16) -> None:
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                    loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()

            step()
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            label = ("bf16" if bf16 else "fp32") + (" channels_last" if cl else "")
            out[label] = steps * batch / (time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--scale", type=float, default=0.08, help="share of the study's data")
    parser.add_argument("--steps", type=int, default=10, help="bare steps per variant")
    parser.add_argument("--write-docs", action="store_true", help="into docs/int8.md")
    args = parser.parse_args()
    import torch

    from scintiflow.ml.study import simulate_study_data
    from scintiflow.ml.training import available_cores

    torch.set_num_threads(available_cores())
    data = simulate_study_data(args.scale, seed=0, difficulty=0.5)
    fits = {p: _fit(args.arch, data, args.size, args.epochs, p == "bf16") for p in ("fp32", "bf16")}
    steps = _steps(args.arch, args.size, 32, args.steps)
    lines = [
        "| training | fit images/s | internal accuracy | external accuracy |",
        "|---|---|---|---|",
    ]
    for p, r in fits.items():
        lines.append(
            f"| `fit`, {p} | {r['train_images_per_s']:.1f} | {r['internal']:.3f} "
            f"| {r['external']:.3f} |"
        )
    lines += ["", "| bare training step (batch 32) | images/s |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in steps.items()]
    counts = {k: v["n"] for k, v in data.counts().items() if k != "skipped"}
    lines += [
        "",
        f"{args.arch} at {args.size} px, {args.epochs} epochs, simulated study at scale "
        f"{args.scale} ({counts}), {available_cores()} threads, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs.",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if args.write_docs:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _tables import write_section

        write_section("bf16_training", markdown)


if __name__ == "__main__":
    main()
