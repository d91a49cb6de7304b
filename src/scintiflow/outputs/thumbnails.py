"""The report's small pictures, written by the shard while the pixels are in memory.

    thumbs/<sha256>.scan.png      the scan in grey, windowed like the overlay
    thumbs/<sha256>.overlay.png   the heatmap overlay, downscaled

At most `THUMB_SIZE` px on the long side, PNG without text chunks (no metadata of any kind),
so the report embeds them without fetching or decoding any DICOM pixel data.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

THUMB_SIZE = 128


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _fit(image: Any, size: int) -> Any:
    from PIL import Image

    if max(image.size) <= size:
        return image
    scale = size / max(image.size)
    target = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    return image.resize(target, Image.Resampling.LANCZOS)


def scan_thumbnail_png(pixels: np.ndarray, size: int = THUMB_SIZE) -> bytes:
    """Counts -> an 8-bit grey PNG of at most `size` px (the overlay's windowing)."""
    from PIL import Image

    from scintiflow.inference.explain import scan_grey

    grey = np.round(255.0 * scan_grey(pixels)).astype(np.uint8)
    return _png(_fit(Image.fromarray(grey, mode="L"), size))


def overlay_thumbnail_png(png: bytes, size: int = THUMB_SIZE) -> bytes:
    """An overlay PNG downscaled to at most `size` px (RGB)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return _png(_fit(img.convert("RGB"), size))
