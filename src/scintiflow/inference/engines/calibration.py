"""The calibration set of a version's INT8 graph: drawn from its own training images,
stratified by class and site, preprocessed exactly as scoring inputs are.

    calib = calibration_set(data.train, pcfg, n=32)   # .x (N, 1, S, S), .keys, .strata
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from scintiflow.ml.preprocess import PreprocessConfig

DEFAULT_CALIBRATION_SIZE = 32


class LabelledImage(Protocol):
    """What a calibration candidate must carry (e.g. `ml.study.StudyImage`)."""

    @property
    def key(self) -> str: ...
    @property
    def label(self) -> int: ...
    @property
    def site(self) -> str: ...
    @property
    def pixels(self) -> np.ndarray: ...


@dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed calibration inputs and where they came from (keys, strata)."""

    x: np.ndarray = field(repr=False)  # (N, 1, S, S) float32
    keys: tuple[str, ...]
    strata: dict[str, int]  # "site/class index" -> images drawn
    seed: int = 0


def stratified_sample(
    labels: Sequence[int], sites: Sequence[str], n: int, seed: int = 0
) -> list[int]:
    """`n` indices spread over the (site, class) strata in proportion to their sizes.

    Every stratum gets at least one image when `n` allows (the largest strata first when it
    does not); the rest is allocated by largest remainder. Deterministic for a seed.
    """
    if len(labels) != len(sites):
        raise ValueError("labels and sites differ in length")
    rng = np.random.default_rng(seed)
    strata: dict[tuple[str, int], list[int]] = {}
    for i, (site, label) in enumerate(zip(sites, labels, strict=True)):
        strata.setdefault((str(site), int(label)), []).append(i)
    order = sorted(strata, key=lambda s: (-len(strata[s]), s))
    members = {s: list(rng.permutation(strata[s])) for s in order}
    n = min(int(n), len(labels))
    quota = dict.fromkeys(order, 0)
    for s in order[:n]:
        quota[s] = 1
    rest = n - sum(quota.values())
    spare = {s: len(members[s]) - quota[s] for s in order}
    total = sum(spare.values())
    if rest > 0 and total > 0:
        ideal = {s: rest * spare[s] / total for s in order}
        for s in order:
            quota[s] += int(ideal[s])
        left = n - sum(quota.values())
        by_remainder = sorted(order, key=lambda s: (-(ideal[s] - int(ideal[s])), order.index(s)))
        for s in by_remainder:
            if left == 0:
                break
            if quota[s] < len(members[s]):
                quota[s] += 1
                left -= 1
    return sorted(int(i) for s in order for i in members[s][: quota[s]])


def calibration_set(
    images: Sequence[LabelledImage],
    preprocess: PreprocessConfig,
    *,
    n: int = DEFAULT_CALIBRATION_SIZE,
    seed: int = 0,
) -> CalibrationSet:
    """`n` training images stratified by class and site, preprocessed for the version."""
    from scintiflow.ml.preprocess import preprocess_batch

    idx = stratified_sample([im.label for im in images], [im.site for im in images], n, seed)
    if not idx:
        raise ValueError("no images to calibrate on")
    chosen = [images[i] for i in idx]
    strata = Counter(f"{im.site}/{int(im.label)}" for im in chosen)
    return CalibrationSet(
        x=preprocess_batch([im.pixels for im in chosen], preprocess),
        keys=tuple(im.key for im in chosen),
        strata=dict(sorted(strata.items())),
        seed=seed,
    )
