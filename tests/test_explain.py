"""Heatmaps: map choice, upsampling to the matrix, [0, 1] normalisation, PNGs without text."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from scintiflow.inference.explain import (
    encode_png,
    heatmaps,
    map_png16,
    normalise_map,
    overlay_png,
    png_chunk_types,
    read_map_png16,
    select_maps,
    upsample_maps,
)

TEXT_CHUNKS = {"tEXt", "zTXt", "iTXt"}


def _probs(*preds: int) -> np.ndarray:
    p = np.full((len(preds), 4), 0.1, dtype=np.float32)
    for i, k in enumerate(preds):
        p[i, k] = 0.7
    return p


def test_upsample_keeps_a_constant_map_and_reaches_the_matrix_size() -> None:
    maps = np.full((2, 7, 7), 3.0, dtype=np.float32)
    up = upsample_maps(maps, 128, 96)
    assert up.shape == (2, 128, 96)
    np.testing.assert_allclose(up, 3.0, rtol=1e-6)


def test_upsample_puts_a_hot_cell_where_it_was() -> None:
    maps = np.zeros((1, 4, 4), dtype=np.float32)
    maps[0, 0, 3] = 1.0  # top-right cell
    up = upsample_maps(maps, 256, 256)[0]
    r, c = np.unravel_index(up.argmax(), up.shape)
    assert r < 64
    assert c >= 192


def test_normalise_to_unit_range_and_zero_stays_zero() -> None:
    rng = np.random.default_rng(0)
    m = normalise_map(rng.normal(size=(32, 32)).astype(np.float32))
    assert m.min() == 0.0
    assert m.max() == pytest.approx(1.0)
    zero = normalise_map(np.zeros((16, 16), np.float32))
    assert not zero.any()
    assert np.isfinite(zero).all()
    negative = normalise_map(-np.ones((8, 8), np.float32))
    assert not negative.any()


def test_select_maps_predicted_class_or_all() -> None:
    cams = np.arange(2 * 4 * 3 * 3, dtype=np.float32).reshape(2, 4, 3, 3)
    probs = _probs(2, 0)
    chosen = select_maps(probs, cams)
    assert [list(c) for c in chosen] == [[2], [0]]
    np.testing.assert_array_equal(chosen[0][2], cams[0, 2])
    every = select_maps(probs, cams, all_classes=True)
    assert [sorted(c) for c in every] == [[0, 1, 2, 3]] * 2
    # Grad-CAM engines give the predicted class's map only: (B, 1, h, w).
    single = select_maps(probs, cams[:, :1])
    assert [list(c) for c in single] == [[2], [0]]
    np.testing.assert_array_equal(single[1][0], cams[1, 0])


def test_heatmaps_match_each_scan_matrix_and_lie_in_unit_range() -> None:
    rng = np.random.default_rng(1)
    cams = rng.uniform(0, 5, size=(3, 4, 7, 7)).astype(np.float32)
    cams[2] = 0.0  # an all-zero map stays zero
    shapes = [(128, 128), (256, 256), (128, 128)]
    out = heatmaps(_probs(1, 3, 0), cams, shapes)
    for maps, shape in zip(out, shapes, strict=True):
        (heat,) = maps.values()
        assert heat.shape == shape
        assert heat.min() >= 0.0
        assert heat.max() <= 1.0
    assert out[0][1].max() == pytest.approx(1.0)
    assert not out[2][0].any()


def test_overlay_png_is_rgb_at_matrix_size_without_text_chunks() -> None:
    rng = np.random.default_rng(2)
    pixels = rng.poisson(20, size=(256, 192)).astype(np.float32)
    heat = normalise_map(rng.uniform(size=(256, 192)).astype(np.float32))
    data = overlay_png(pixels, heat)
    chunks = png_chunk_types(data)
    assert chunks[0] == "IHDR"
    assert chunks[-1] == "IEND"
    assert not set(chunks) & TEXT_CHUNKS
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "RGB"
        assert img.size == (192, 256)  # (width, height) = (cols, rows)
        assert not img.text  # PIL's own view of text chunks agrees
    # Where the heat is zero the overlay is the grey scan (R == G == B).
    zero = np.zeros_like(heat)
    with Image.open(io.BytesIO(overlay_png(pixels, zero))) as img:
        arr = np.asarray(img)
    assert (arr[..., 0] == arr[..., 1]).all()
    assert (arr[..., 1] == arr[..., 2]).all()
    with pytest.raises(ValueError, match="differ in shape"):
        overlay_png(pixels, heat[:-1])


def test_map_png16_round_trips_at_16_bits_without_text_chunks() -> None:
    heat = np.linspace(0, 1, 128 * 128, dtype=np.float32).reshape(128, 128)
    data = map_png16(heat)
    assert not set(png_chunk_types(data)) & TEXT_CHUNKS
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode.startswith("I;16")
        assert img.size == (128, 128)
    back = read_map_png16(data)
    assert np.abs(back - heat).max() <= 0.5 / 65535 + 1e-7
    assert data[24] == 16  # IHDR bit depth byte: a true 16-bit PNG


def test_png_chunk_parser_sees_text_chunks_when_present() -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x")
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PNG", pnginfo=info)
    assert "tEXt" in png_chunk_types(buf.getvalue())
    with pytest.raises(ValueError, match="not a PNG"):
        png_chunk_types(b"GIF89a")


@pytest.mark.parametrize(
    ("shape", "dtype", "mode"),
    [((37, 53), np.uint8, "L"), ((37, 53), np.uint16, "I;16"), ((37, 53, 3), np.uint8, "RGB")],
)
def test_encode_png_round_trips_exactly_through_pillow(
    shape: tuple[int, ...], dtype: type, mode: str
) -> None:
    rng = np.random.default_rng(5)
    arr = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    data = encode_png(arr)
    assert png_chunk_types(data) == ["IHDR", "IDAT", "IEND"]
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == mode
        assert img.size == (shape[1], shape[0])
        back = np.asarray(img)
    assert np.array_equal(back.astype(dtype), arr)


def test_encode_png_rejects_other_arrays() -> None:
    with pytest.raises(ValueError, match="cannot write a PNG"):
        encode_png(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="cannot write a PNG"):
        encode_png(np.zeros((4, 4, 4), dtype=np.uint8))
