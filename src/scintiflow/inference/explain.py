"""Heatmaps: engine maps -> per-image maps at the scan's own matrix size -> two PNGs.

An engine gives raw maps at the last conv block's resolution: (B, K, h, w) for the in-graph
CAM of GAP-linear heads (equal to Grad-CAM; see `scintiflow.inference.engines.export`) or
(B, 1, S, S) from pytorch-grad-cam for the predicted class. Here a map is chosen (the
predicted class by default; every class on request), upsampled bilinearly to the ORIGINAL
matrix (rows, cols of the DICOM: preprocessing resized the whole field of view, so the whole
map spans it too), clipped at 0 and divided by its maximum, so it lies in [0, 1]. A map that
is zero everywhere stays zero (no division by zero; untrained or saturated nets can produce
one).

Two PNGs per map:
- `overlay_png`: 8-bit RGB, the scan in grey with the map colour-coded on top (for people);
- `map_png16`: 16-bit single-channel, the map scaled to 0..65535 (for tools).
Neither carries text chunks (no tEXt/zTXt/iTXt: nothing that could hold an identifier).
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Sequence

import numpy as np

# Perceptually ordered colour map for the heat (blue -> cyan -> yellow -> red), stops in [0, 1].
_HEAT_STOPS = np.array(
    [
        [0.00, 0.05, 0.05, 0.35],
        [0.25, 0.00, 0.45, 0.90],
        [0.50, 0.10, 0.85, 0.75],
        [0.75, 0.98, 0.85, 0.10],
        [1.00, 0.85, 0.05, 0.05],
    ]
)
# The colour map sampled at 1024 levels: a table lookup is ~20x faster than interpolating
# every pixel, and 1024 levels are finer than the 8-bit overlay can show.
_HEAT_LEVELS = 1024
_HEAT_LUT = np.stack(
    [
        np.interp(np.linspace(0.0, 1.0, _HEAT_LEVELS), _HEAT_STOPS[:, 0], _HEAT_STOPS[:, c])
        for c in (1, 2, 3)
    ],
    axis=-1,
).astype(np.float32)  # (levels, 3)
OVERLAY_ALPHA = 0.5
PNG_COMPRESS_LEVEL = 1  # zlib level 1: near level 3's size on these smooth maps, less CPU


def upsample_maps(maps: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(N, h, w) -> (N, rows, cols) float32, bilinear (half-pixel centres, like cv2)."""
    import torch
    from torch.nn import functional

    arr = np.ascontiguousarray(maps, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"expected (N, h, w) maps, got shape {arr.shape}")
    if arr.shape[1:] == (rows, cols):
        return arr.copy()
    t = torch.from_numpy(arr)[:, None]  # (N, 1, h, w)
    out = functional.interpolate(t, size=(rows, cols), mode="bilinear", align_corners=False)
    return out[:, 0].numpy()


def normalise_map(heat: np.ndarray) -> np.ndarray:
    """Clip at 0 and scale to max 1 (float32); an all-zero map stays all zero."""
    out = np.clip(np.asarray(heat, dtype=np.float32), 0.0, None)
    top = float(out.max()) if out.size else 0.0
    if top > 0.0 and np.isfinite(top):
        out /= top
    else:
        out[...] = 0.0
    return out


def select_maps(
    probs: np.ndarray, cams: np.ndarray, *, all_classes: bool = False
) -> list[dict[int, np.ndarray]]:
    """Per image {class index: raw map (h, w)}: the predicted class, or every class.

    `cams` is (B, K, h, w) (a map per class) or (B, 1, h, w) (already the predicted class).
    """
    if cams.ndim != 4 or cams.shape[0] != probs.shape[0]:
        raise ValueError(f"cams of shape {cams.shape} do not match probs {probs.shape}")
    predicted = probs.argmax(axis=1)
    per_class = cams.shape[1] == probs.shape[1]
    out: list[dict[int, np.ndarray]] = []
    for i, pred in enumerate(predicted):
        if not per_class:
            out.append({int(pred): cams[i, 0]})
        elif all_classes:
            out.append({k: cams[i, k] for k in range(cams.shape[1])})
        else:
            out.append({int(pred): cams[i, int(pred)]})
    return out


def heatmaps(
    probs: np.ndarray,
    cams: np.ndarray,
    shapes: Sequence[tuple[int, int]],
    *,
    all_classes: bool = False,
) -> list[dict[int, np.ndarray]]:
    """Per image {class index: map (rows, cols) in [0, 1]} at each scan's own matrix size.

    Images of equal shape are upsampled together (one interpolate call per shape).
    """
    chosen = select_maps(probs, cams, all_classes=all_classes)
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, maps in enumerate(chosen):
        for k in maps:
            groups.setdefault(tuple(shapes[i]), []).append((i, k))  # type: ignore[arg-type]
    out: list[dict[int, np.ndarray]] = [{} for _ in chosen]
    for (rows, cols), members in groups.items():
        stack = np.stack([chosen[i][k] for i, k in members])
        for (i, k), up in zip(members, upsample_maps(stack, rows, cols), strict=True):
            out[i][k] = normalise_map(up)
    return out


def colour_heat(heat: np.ndarray) -> np.ndarray:
    """Map in [0, 1] (rows, cols) -> (rows, cols, 3) float32 RGB in [0, 1]."""
    index = np.rint(np.clip(heat, 0.0, 1.0) * (_HEAT_LEVELS - 1)).astype(np.intp)
    return _HEAT_LUT[index]


def scan_grey(pixels: np.ndarray, clip_percentile: float = 99.5) -> np.ndarray:
    """Counts -> grey level in [0, 1] windowed at a high percentile (float32)."""
    from scintiflow.ml.preprocess import percentile

    img = np.asarray(pixels, dtype=np.float32)
    top = percentile(img, clip_percentile) if img.size else 0.0
    if not np.isfinite(top) or top <= 0.0:
        top = float(img.max()) if img.size else 0.0
    if top <= 0.0:
        return np.zeros_like(img)
    return np.clip(img / top, 0.0, 1.0)


@functools.lru_cache(maxsize=8)
def _blend_table(alpha: float) -> np.ndarray:
    """(256 heat levels x 256 grey levels,) uint32: the blended RGB of every pair, packed as
    the bytes R, G, B, 0 (one 4-byte gather per pixel is faster than three 1-byte ones)."""
    heat = np.linspace(0.0, 1.0, 256, dtype=np.float32)[:, None, None]  # (256, 1, 1)
    grey = np.linspace(0.0, 1.0, 256, dtype=np.float32)[None, :, None]  # (1, 256, 1)
    weight = alpha * heat
    rgb = (1.0 - weight) * grey + weight * colour_heat(heat[:, 0, 0])[:, None, :]
    packed = np.zeros((256, 256, 4), dtype=np.uint8)
    packed[..., :3] = np.round(255.0 * np.clip(rgb, 0.0, 1.0))
    return packed.view(np.uint32).reshape(-1)


def overlay_rgb(pixels: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """(rows, cols, 3) uint8: the scan in grey, the heat blended in where it is high.

    Both inputs are quantised to 8 bits and the blend is read from a 256 x 256 table (one
    lookup per pixel instead of float arithmetic per channel); it differs from blending in
    float by at most two levels, and where the heat is 0 the pixel is the 8-bit grey scan.
    """
    if pixels.shape != heat.shape:
        raise ValueError(f"scan {pixels.shape} and map {heat.shape} differ in shape")
    grey = np.rint(255.0 * scan_grey(pixels)).astype(np.uint16)
    level = np.rint(255.0 * np.clip(heat, 0.0, 1.0)).astype(np.uint16)
    packed = np.take(_blend_table(float(alpha)), (level << 8) | grey)
    return packed.view(np.uint8).reshape(*pixels.shape, 4)[..., :3]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(image: np.ndarray) -> bytes:
    """A PNG of a (rows, cols) uint8/uint16 grey or (rows, cols, 3) uint8 RGB array.

    Written here rather than by Pillow: the file holds IHDR, IDAT and IEND only (no text,
    dpi or colour profile chunks), every row uses PNG's "Sub" filter, computed for the whole
    image at once with numpy, and zlib runs at `PNG_COMPRESS_LEVEL`. Measured on the
    heatmap PNGs: 1.4 ms instead of 2.6 ms (RGB overlay, 256 px) and 0.6 ms instead of
    1.7 ms at half the size (16-bit map) compared with Pillow's adaptive filtering.
    """
    arr = np.asarray(image)
    if arr.dtype == np.uint16 and arr.ndim == 2:
        colour_type, depth, raw = 0, 16, arr.astype(">u2").view(np.uint8)
        bpp = 2
    elif arr.dtype == np.uint8 and arr.ndim == 2:
        colour_type, depth, raw, bpp = 0, 8, arr, 1
    elif arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        colour_type, depth, raw, bpp = 2, 8, arr, 3
    else:
        raise ValueError(f"cannot write a PNG of a {arr.dtype} array of shape {arr.shape}")
    rows, cols = arr.shape[:2]
    raw = np.ascontiguousarray(raw).reshape(rows, -1)
    filtered = np.empty((rows, raw.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 1  # filter type Sub: each byte minus the byte one pixel to its left
    filtered[:, 1 : 1 + bpp] = raw[:, :bpp]
    np.subtract(raw[:, bpp:], raw[:, :-bpp], out=filtered[:, 1 + bpp :])  # wraps mod 256
    header = struct.pack(">IIBBBBB", cols, rows, depth, colour_type, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), PNG_COMPRESS_LEVEL)),
            _png_chunk(b"IEND", b""),
        )
    )


def overlay_png(pixels: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA) -> bytes:
    """8-bit RGB PNG of `overlay_rgb` (rows x cols, no text chunks)."""
    return encode_png(overlay_rgb(pixels, heat, alpha))


def map_png16(heat: np.ndarray) -> bytes:
    """16-bit greyscale PNG of a [0, 1] map (value * 65535, rounded; no text chunks)."""
    return encode_png(np.round(np.clip(heat, 0.0, 1.0) * 65535.0).astype(np.uint16))


def read_map_png16(data: bytes) -> np.ndarray:
    """Inverse of `map_png16`: the map as float32 in [0, 1]."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return (np.asarray(img, dtype=np.float64) / 65535.0).astype(np.float32)


def png_chunk_types(data: bytes) -> list[str]:
    """The chunk types of a PNG file in order (e.g. ['IHDR', 'IDAT', 'IEND'])."""
    import struct

    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, types = 8, []
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        types.append(data[pos + 4 : pos + 8].decode("ascii", "replace"))
        pos += 12 + length
    return types
