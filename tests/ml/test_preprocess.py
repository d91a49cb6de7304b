"""Preprocessing: count-robust normalisation, resizing, the config contract, augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scintiflow.ml.preprocess import (
    Augment,
    PreprocessConfig,
    normalise_counts,
    preprocess,
    preprocess_batch,
)
from scintiflow.sim import simulate_case


@pytest.fixture(scope="module")
def scan() -> np.ndarray:
    return simulate_case("normal", "A", np.random.default_rng(0)).astype(np.float32)


def test_config_round_trips_through_json() -> None:
    cfg = PreprocessConfig(image_size=96, clip_percentile=99.0, mean=0.5, std=0.25)
    again = PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown"):
        PreprocessConfig.from_dict({**cfg.to_dict(), "gamma": 2})
    with pytest.raises(ValueError, match="newer"):
        PreprocessConfig.from_dict({**cfg.to_dict(), "version": 99})


def test_output_shape_and_standardisation(scan: np.ndarray) -> None:
    cfg = PreprocessConfig(image_size=64)
    x = preprocess(scan, cfg)
    assert x.shape == (1, 64, 64)
    assert x.dtype == np.float32
    lo, hi = (0 - cfg.mean) / cfg.std, (1 - cfg.mean) / cfg.std
    assert x.min() >= lo - 1e-5
    assert x.max() <= hi + 1e-5


def test_normalisation_ignores_the_total_count(scan: np.ndarray) -> None:
    cfg = PreprocessConfig(image_size=64)
    assert np.allclose(preprocess(scan, cfg), preprocess(scan * 4.0, cfg), atol=1e-5)


def test_a_hot_pixel_saturates_instead_of_darkening_the_rest(scan: np.ndarray) -> None:
    hot = scan.copy()
    hot[5, 5] = scan.max() * 50
    base = normalise_counts(scan, 99.5)
    with_hot = normalise_counts(hot, 99.5)
    assert with_hot[5, 5] == 1.0
    mask = np.ones_like(scan, dtype=bool)
    mask[5, 5] = False
    assert np.abs(base[mask] - with_hot[mask]).max() < 0.02
    assert with_hot.min() >= 0.0
    assert with_hot.max() <= 1.0


def test_blank_image_does_not_divide_by_zero() -> None:
    assert not np.isnan(preprocess(np.zeros((128, 128)), PreprocessConfig(image_size=32))).any()


def test_mixed_matrices_batch_like_single_images(scan: np.ndarray) -> None:
    big = simulate_case("graves", "C", np.random.default_rng(1)).astype(np.float32)
    cfg = PreprocessConfig(image_size=48)
    batch = preprocess_batch([scan, big, scan], cfg)
    assert batch.shape == (3, 1, 48, 48)
    assert np.allclose(batch[1], preprocess(big, cfg), atol=1e-6)
    assert np.allclose(batch[0], batch[2])


def test_thinning_scales_total_counts_by_the_keep_factor(scan: np.ndarray) -> None:
    aug = Augment()
    rng = np.random.default_rng(3)
    total = scan.sum()
    for keep in (0.25, 0.5, 0.8):
        thinned = aug.thin(scan, keep, rng)
        sd = np.sqrt(total * keep * (1 - keep))  # binomial
        assert abs(thinned.sum() - keep * total) < 5 * sd
        assert np.all(thinned <= scan)  # a count can only be lost, never gained
        assert np.all(thinned == np.round(thinned))
    assert np.array_equal(aug.thin(scan, 1.0, rng), np.rint(scan))
    assert aug.thin(scan, 0.0, rng).sum() == 0


def test_augmentation_without_randomness_is_plain_preprocessing(scan: np.ndarray) -> None:
    cfg = PreprocessConfig(image_size=64)
    identity = Augment(
        thin_probability=0.0,
        intensity_range=(1.0, 1.0),
        rotation_deg=0.0,
        translate=0.0,
        scale_range=(1.0, 1.0),
        flip=False,
    )
    out = identity(scan, cfg, np.random.default_rng(0))
    assert np.allclose(out, preprocess(scan, cfg), atol=1e-4)


def test_augmentation_is_seeded_and_varies(scan: np.ndarray) -> None:
    cfg = PreprocessConfig(image_size=64)
    aug = Augment()
    a = aug(scan, cfg, np.random.default_rng([1, 2]))
    b = aug(scan, cfg, np.random.default_rng([1, 2]))
    c = aug(scan, cfg, np.random.default_rng([1, 3]))
    assert a.shape == (1, 64, 64)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_percentile_is_numpys_linear_percentile_exactly() -> None:
    """The one-partition percentile returns NumPy's value bit for bit: count images (ties),
    continuous values, constant and tiny images, every q the code uses and the ends; and
    NumPy's own answer for what it does not handle (other dtypes, NaN)."""
    from scintiflow.ml.preprocess import percentile

    rng = np.random.default_rng(7)
    checked = 0
    for trial in range(300):
        shape = tuple(int(x) for x in rng.choice([1, 2, 3, 64, 128, 255, 256], size=2))
        kind = trial % 4
        if kind == 0:
            a = rng.poisson(rng.uniform(0.1, 200), shape).astype(np.float32)
        elif kind == 1:
            a = (rng.random(shape) * 1e4).astype(np.float32)
        elif kind == 2:
            a = np.full(shape, 3.0, np.float32)
        else:
            a = (rng.standard_normal(shape) * 1e3).astype(np.float32)
        for q in (99.5, 99.0, 50.0, 0.0, 100.0, 37.3):
            assert percentile(a, q) == float(np.percentile(a, q)), (shape, kind, q)
            checked += 1
    assert checked == 1800
    counts = rng.poisson(20, (64, 64))
    assert percentile(counts, 99.5) == float(np.percentile(counts, 99.5))  # int64: NumPy's
    with_nan = np.array([1.0, np.nan, 3.0], dtype=np.float32)
    assert np.isnan(percentile(with_nan, 50.0))
