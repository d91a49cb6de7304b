"""Drift: PSI/KS against a training reference, thresholds in one config object."""

from __future__ import annotations

import numpy as np
import pytest

from scintiflow import CLASSES
from scintiflow.ml.preprocess import PreprocessConfig
from scintiflow.ml.study import simulate_study_data, training_reference
from scintiflow.pipeline.drift import (
    DriftThresholds,
    compare,
    drift_table,
    image_stats,
    night_statistics,
    psi,
    sample_keys,
)
from scintiflow.sim import simulate_cases


@pytest.fixture(scope="module")
def reference() -> dict[str, object]:
    data = simulate_study_data(0.03, seed=0)  # sites A and B
    probs = np.eye(4)[np.arange(len(data.train)) % 4]
    return training_reference(data.train, probs, PreprocessConfig(image_size=64))


def _night(sites: tuple[str, ...], n: int, seed: int) -> dict[str, object]:
    cases = simulate_cases(n, sites=sites, seed=seed)
    stats = [image_stats(c.image, (c.profile.pixel_spacing_mm,) * 2, 99.5) for c in cases]
    labels = [CLASSES[i % 4] for i in range(n)]
    return night_statistics(stats, labels, CLASSES)


def test_psi_is_zero_for_equal_and_grows_with_shift() -> None:
    assert psi([0.25] * 4, [0.25] * 4) == pytest.approx(0.0)
    small = psi([0.25] * 4, [0.3, 0.2, 0.25, 0.25])
    big = psi([0.25] * 4, [0.7, 0.1, 0.1, 0.1])
    assert 0 < small < 0.1
    assert big > 0.25


def test_same_sites_are_stable_a_new_site_drifts(reference: dict[str, object]) -> None:
    same = compare(reference, _night(("A", "B"), 60, seed=11))
    assert same["status"] == "ok"
    assert same["drifted_features"] == []
    assert same["features"]["total_counts"]["ks"] < 0.2
    shifted = compare(reference, _night(("C",), 60, seed=12))  # 256 px, 0.75 mm, I-123
    assert shifted["status"] == "drift"
    assert {"matrix", "pixel_spacing_mm"} <= set(shifted["drifted_features"])
    assert shifted["features"]["matrix"]["psi"] > 1.0
    rows = {r["feature"]: r for r in drift_table(shifted)}
    assert rows["matrix"]["drift"]
    assert not rows["prediction_mix"]["drift"]


def test_thresholds_come_from_the_config_and_small_nights_flag_nothing(
    reference: dict[str, object],
) -> None:
    night = _night(("A", "B"), 60, seed=11)
    strict = compare(reference, night, DriftThresholds(psi_drift=0.0, ks_drift=0.0))
    assert strict["drift"]
    assert strict["thresholds"]["psi_drift"] == 0.0
    few = compare(reference, _night(("C",), 5, seed=3))
    assert few["status"] == "too_few_images"
    assert not few["drift"]
    assert few["features"]["matrix"]["psi"] > 1.0  # still reported


def test_sample_is_deterministic_whatever_the_order() -> None:
    hashes = {f"k{i}": f"{(i * 7919) % 101:064x}" for i in range(50)}
    keys = list(hashes)
    assert sample_keys(keys, hashes, 10) == sample_keys(keys[::-1], hashes, 10)
    assert len(sample_keys(keys, hashes, 10)) == 10
