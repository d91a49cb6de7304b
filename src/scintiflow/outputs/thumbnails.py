"""The report's small pictures, written by the shard while the pixels are in memory.

    thumbs/<sha256>.scan.jpg      the scan in grey, windowed like the overlay
    thumbs/<sha256>.overlay.jpg   the heatmap overlay, downscaled

At most `THUMB_SIZE` px on the long side, baseline JPEG at quality `JPEG_QUALITY` with a bare
JFIF header (no EXIF, no comment: no metadata of any kind), so the report embeds them
without fetching or decoding any DICOM pixel data. JPEG, not PNG, because Chromium passes
JPEG streams into the PDF as they are, while every PNG is decoded and compressed again:
measured on a 400-study report, printing took 7.3 s with PNG thumbnails and 4.3 s with JPEG
(the page 11.9 -> 4.5 MB, the PDF 13.3 -> 5.8 MB). The thumbnails are pictures for finding
the study, not for reading it: the full-size overlay PNG and the DICOM SC stay lossless.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

THUMB_SIZE = 128
JPEG_QUALITY = 85


def _jpeg(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _fit(image: Any, size: int) -> Any:
    from PIL import Image

    if max(image.size) <= size:
        return image
    scale = size / max(image.size)
    target = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    return image.resize(target, Image.Resampling.LANCZOS)


def scan_thumbnail(pixels: np.ndarray, size: int = THUMB_SIZE) -> bytes:
    """Counts -> an 8-bit grey JPEG of at most `size` px (the overlay's windowing)."""
    from PIL import Image

    from scintiflow.inference.explain import scan_grey

    grey = np.round(255.0 * scan_grey(pixels)).astype(np.uint8)
    return _jpeg(_fit(Image.fromarray(grey, mode="L"), size))


def overlay_thumbnail(png: bytes, size: int = THUMB_SIZE) -> bytes:
    """An overlay PNG downscaled to at most `size` px, as an RGB JPEG."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return _jpeg(_fit(img.convert("RGB"), size))
