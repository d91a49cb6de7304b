"""A labelled picture of simulated cases, one row per class (docs/montage.png)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scintiflow import CLASSES
from scintiflow.sim._draw import draw_anatomy
from scintiflow.sim._render import acquire
from scintiflow.sim._sites import site_profile

_HOT_IRON = np.array(
    # position, red, green, blue: black -> dark red -> orange -> yellow -> white
    [
        [0.00, 0.0, 0.0, 0.0],
        [0.30, 0.55, 0.0, 0.05],
        [0.55, 0.95, 0.35, 0.0],
        [0.80, 1.0, 0.85, 0.15],
        [1.00, 1.0, 1.0, 1.0],
    ]
)


def colourise(
    counts: np.ndarray, *, colormap: str = "hot", clip_percentile: float = 99.7
) -> np.ndarray:
    """Counts -> (rows, cols, 3) uint8 display image, windowed to a high percentile.

    `colormap` is "hot" (hot iron) or "inverted_grey" (dark = high counts, the common
    printed-film look of thyroid scans).
    """
    top = float(np.percentile(counts, clip_percentile)) or 1.0
    x = np.clip(counts.astype(np.float64) / top, 0.0, 1.0)
    if colormap == "inverted_grey":
        g = np.round(255.0 * (1.0 - x)).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    if colormap != "hot":
        raise ValueError(f"unknown colormap {colormap!r}")
    rgb = np.stack([np.interp(x, _HOT_IRON[:, 0], _HOT_IRON[:, i]) for i in (1, 2, 3)], axis=-1)
    return np.round(255.0 * rgb).astype(np.uint8)


def render_montage(
    per_class: int = 4,
    *,
    seed: int = 0,
    sites: Sequence[str] = ("A", "B", "C"),
    difficulty: float = 0.5,
    tile: int = 128,
    colormap: str = "hot",
) -> Image.Image:
    """A grid with one row per class (labelled) and `per_class` images cycling over sites."""
    label_w, gap, head = 170, 4, 22
    width = label_w + per_class * (tile + gap)
    height = head + len(CLASSES) * (tile + gap)
    canvas = Image.new("RGB", (width, height), (18, 18, 24))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=11)
    draw.text(
        (8, 4),
        f"scintiflow phantom  seed={seed}  difficulty={difficulty}",
        font=small,
        fill=(200, 200, 200),
    )
    for row, label in enumerate(CLASSES):
        y0 = head + row * (tile + gap)
        draw.text((8, y0 + tile // 2 - 10), label, font=font, fill=(235, 235, 235))
        for col in range(per_class):
            site = site_profile(sites[col % len(sites)])
            rng = np.random.default_rng([seed, row, col])
            anatomy = draw_anatomy(label, site, rng, difficulty)
            counts = acquire(anatomy, site, rng)
            img = Image.fromarray(colourise(counts, colormap=colormap)).resize(
                (tile, tile), Image.Resampling.BILINEAR
            )
            x0 = label_w + col * (tile + gap)
            canvas.paste(img, (x0, y0))
            caption = f"site {site.name}  {counts.sum() / 1000:.0f}k"
            draw.text((x0 + 4, y0 + tile - 14), caption, font=small, fill=(160, 200, 255))
            if anatomy.nodule is not None:
                lesion = f"{anatomy.nodule.kind} nodule, {anatomy.nodule.lobe} lobe"
                draw.text((x0 + 4, y0 + 3), lesion, font=small, fill=(160, 200, 255))
    return canvas
