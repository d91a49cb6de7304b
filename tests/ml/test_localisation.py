"""Localisation and faithfulness metrics against hand-built maps and a simulated nodule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scintiflow.ml.evaluation.localisation import (
    RANDOMISATION_BOUND,
    deletion_check,
    deletion_curve,
    energy_in_region,
    peak_px,
    pointing_game,
    pointing_hit,
    random_deletion_curve,
    randomisation_check,
    rank_correlation,
    upsample_map,
)

SHAPE = (32, 32)
CENTRE = (10.0, 20.0)
RADIUS = 3.0


def _disc(centre: tuple[float, float], radius: float, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(rr - centre[0], cc - centre[1]) <= radius


def _bump(centre: tuple[float, float], sigma: float = 2.0, shape=SHAPE) -> np.ndarray:  # type: ignore[no-untyped-def]
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((rr - centre[0]) ** 2 + (cc - centre[1]) ** 2) / (2 * sigma**2))


def test_pointing_game_scores_one_inside_and_zero_outside() -> None:
    inside = _bump(CENTRE)
    outside = _bump((25.0, 5.0))
    kw = {"pixel_spacing_mm": 2.0, "tolerance_mm": 0.0}
    assert pointing_hit(inside, CENTRE, RADIUS, **kw)
    assert not pointing_hit(outside, CENTRE, RADIUS, **kw)
    assert pointing_game([inside] * 3, [CENTRE] * 3, [RADIUS] * 3, **kw) == 1.0
    assert pointing_game([outside] * 3, [CENTRE] * 3, [RADIUS] * 3, **kw) == 0.0
    assert pointing_game([inside, outside], [CENTRE] * 2, [RADIUS] * 2, **kw) == 0.5
    assert math.isnan(pointing_game([], [], [], **kw))


def test_pointing_tolerance_is_in_millimetres() -> None:
    # peak 5 px from the centre: outside a 3 px nodule; 2 px = 4 mm at 2 mm, 2 mm at 1 mm
    cam = _bump((CENTRE[0] + 5.0, CENTRE[1]))
    assert not pointing_hit(cam, CENTRE, RADIUS, pixel_spacing_mm=2.0, tolerance_mm=3.9)
    assert pointing_hit(cam, CENTRE, RADIUS, pixel_spacing_mm=2.0, tolerance_mm=4.0)
    assert not pointing_hit(cam, CENTRE, RADIUS, pixel_spacing_mm=1.0, tolerance_mm=1.9)
    assert pointing_hit(cam, CENTRE, RADIUS, pixel_spacing_mm=1.0, tolerance_mm=2.0)


def test_a_flat_map_never_points() -> None:
    flat = np.ones(SHAPE)
    assert not pointing_hit(flat, (0.0, 0.0), 5.0, pixel_spacing_mm=1.0, tolerance_mm=10.0)


def test_a_coarse_map_peaks_at_its_cell_centre() -> None:
    cam = np.zeros((4, 4))
    cam[1, 2] = 1.0  # cell rows 8..15, cols 16..23 of a 32 px image
    assert peak_px(cam, SHAPE) == (11.5, 19.5)
    assert peak_px(cam) == (1.0, 2.0)
    assert pointing_hit(
        cam, CENTRE, RADIUS, pixel_spacing_mm=1.0, tolerance_mm=0.0, image_shape=SHAPE
    )
    up = upsample_map(cam, SHAPE)
    assert up.shape == SHAPE
    r, c = np.unravel_index(int(np.argmax(up)), SHAPE)
    assert 8 <= r <= 15
    assert 16 <= c <= 23
    np.testing.assert_allclose(upsample_map(np.full((7, 7), 0.3), SHAPE), 0.3)


def test_energy_in_region() -> None:
    mask = _disc(CENTRE, RADIUS)
    assert energy_in_region(mask.astype(float), mask) == 1.0
    assert energy_in_region((~mask).astype(float), mask) == 0.0
    uniform = energy_in_region(np.ones(SHAPE), mask)
    assert uniform == pytest.approx(mask.mean())
    assert energy_in_region(_bump(CENTRE), mask) > 0.5
    assert math.isnan(energy_in_region(np.zeros(SHAPE), mask))
    assert energy_in_region(np.where(mask, 1.0, -5.0), mask) == 1.0  # negatives count as 0
    with pytest.raises(ValueError, match="differ in shape"):
        energy_in_region(np.ones((4, 4)), mask)


def _nodule_classifier(mask: np.ndarray):  # type: ignore[no-untyped-def]
    """A probability that rises with the counts inside the nodule (what a tumour model sees)."""
    total = float(mask.sum())

    def predict(batch: np.ndarray) -> np.ndarray:
        inside = (batch * mask[None]).reshape(len(batch), -1).sum(axis=1) / total
        return 1.0 / (1.0 + np.exp(-(inside - 0.5) * 10.0))

    return predict


def test_deletion_auc_of_a_perfect_map_is_below_random() -> None:
    mask = _disc(CENTRE, RADIUS)
    image = 0.2 + mask.astype(float)
    predict = _nodule_classifier(mask)
    perfect = deletion_curve(image, mask.astype(float), predict, steps=32)
    assert perfect.fractions[0] == 0.0
    assert perfect.fractions[-1] == 1.0
    assert perfect.probabilities[0] == pytest.approx(float(predict(image[None])[0]))
    baseline = random_deletion_curve(image, predict, seed=1, repeats=4, steps=32)
    assert perfect.auc < 0.5 * baseline.auc
    wrong = deletion_curve(image, (~mask).astype(float), predict, steps=32)
    assert wrong.auc > baseline.auc  # deleting everything but the nodule first is worst
    check = deletion_check(image, mask.astype(float), predict, seed=1, steps=32)
    assert check.beats_random
    assert check.auc == pytest.approx(perfect.auc)
    assert not deletion_check(image, (~mask).astype(float), predict, seed=1, steps=32).beats_random


def test_rank_correlation_matches_spearman() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    a = rng.normal(size=(8, 8))
    b = a + rng.normal(scale=1.0, size=(8, 8))
    ties = np.round(a)  # with ties: average ranks
    assert rank_correlation(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel())[0])
    assert rank_correlation(ties, b) == pytest.approx(spearmanr(ties.ravel(), b.ravel())[0])
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert math.isnan(rank_correlation(a, np.ones((8, 8))))


def test_randomisation_check() -> None:
    rng = np.random.default_rng(4)
    trained = np.stack([_bump((rng.uniform(5, 27), rng.uniform(5, 27))) for _ in range(5)])
    unrelated = rng.uniform(size=trained.shape)
    changed = randomisation_check(trained, unrelated)
    assert changed.passed
    assert changed.median_abs_rho < RANDOMISATION_BOUND
    same = randomisation_check(trained, 3.0 * trained)  # maps that ignore the weights
    assert not same.passed
    assert same.median_abs_rho == pytest.approx(1.0)
    constant = np.ones(SHAPE)
    assert not randomisation_check(constant, constant).passed
    assert not randomisation_check(trained[0], constant).passed
    assert randomisation_check(trained[0], unrelated[0]).passed


def test_metrics_on_a_simulated_nodule() -> None:
    """A map peaked on the sidecar's nodule hits it; one on the other lobe misses."""
    from scintiflow.sim import simulate_cases

    case = simulate_cases(4, sites=("A",), seed=6, class_weights={"thyroid_tumor": 1.0})[0]
    regions = case.regions()
    nod = regions.nodule
    assert nod is not None
    on_nodule = _bump((nod.row, nod.col), shape=regions.shape)
    other = regions.mask("left_lobe" if nod.lobe == "right" else "right_lobe")
    rows, cols = np.nonzero(other)
    off = _bump((rows.mean(), cols.mean()), shape=regions.shape)
    kw = {"pixel_spacing_mm": regions.object_spacing_mm, "tolerance_mm": 0.0}
    assert pointing_hit(on_nodule, (nod.row, nod.col), nod.radius_px, **kw)
    assert not pointing_hit(off, (nod.row, nod.col), nod.radius_px, **kw)
    assert energy_in_region(on_nodule, regions.thyroid()) > 0.8
    assert energy_in_region(off, regions.salivary()) < 0.05
