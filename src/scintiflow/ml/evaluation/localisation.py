"""Do heatmaps point at the disease? Localisation and faithfulness metrics on plain arrays.

Pure numpy; maps, masks and images are arrays already in memory. The ground truth comes from
the simulator's regions (`scintiflow.sim.ImageRegions`): nodule centre and radius, lobe and
salivary masks, in pixel coordinates of the image.

- `pointing_hit` / `pointing_game`: the map's peak falls inside the nodule, with a tolerance
  in millimetres (the same tolerance for every method and map resolution).
- `energy_in_region`: the share of the map's (non-negative) mass inside a mask.
- `deletion_curve` / `random_deletion_curve` / `deletion_check`: delete the most salient
  pixels first and watch the class probability fall (Petsiuk et al., 2018); a faithful map
  gives a smaller area under the curve than deleting in random order.
- `rank_correlation` / `randomisation_check`: maps of a model with randomised weights must
  differ from the trained model's maps (Adebayo et al., 2018): Spearman rank correlation
  below a bound; a constant map has no ranking and fails.

Maps coarser than the image (a 7 x 7 CAM of a 128 px scan) are placed on the image grid by
cell centres (`peak_px`) or by bilinear upsampling (`upsample_map`). The model's input is the
whole image resized (no crop; `scintiflow.ml.preprocess`), so a map over the model input
maps onto the image by scale alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

RANDOMISATION_BOUND = 0.5
"""Default bound on |Spearman rho| between trained and randomised-weight maps. A chosen
default (no data behind it yet): the check passes when the median |rho| lies below it."""

DELETION_STEPS = 20
"""Default number of deletion steps (the curve has DELETION_STEPS + 1 points)."""

Predict = Callable[[np.ndarray], np.ndarray]
"""(n, rows, cols) images -> (n,) probability of the class under test."""


def _finite_map(cam: np.ndarray) -> np.ndarray:
    m = np.asarray(cam, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"a map must be a non-empty 2-D array, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("a map must hold finite values")
    return m


def _spacing(pixel_spacing_mm: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(pixel_spacing_mm, int | float):
        row = col = float(pixel_spacing_mm)
    else:
        row, col = (float(v) for v in pixel_spacing_mm)
    if not (row > 0 and col > 0):
        raise ValueError("pixel spacing must be > 0")
    return row, col


def peak_px(cam: np.ndarray, image_shape: tuple[int, int] | None = None) -> tuple[float, float]:
    """(row, col) of the map's maximum in image pixel coordinates.

    A map coarser than `image_shape` covers the image in equal cells; the peak is the centre
    of its cell. Ties go to the first maximum in row-major order.
    """
    m = _finite_map(cam)
    r, c = np.unravel_index(int(np.argmax(m)), m.shape)
    if image_shape is None:
        return float(r), float(c)
    sr, sc = image_shape[0] / m.shape[0], image_shape[1] / m.shape[1]
    return (r + 0.5) * sr - 0.5, (c + 0.5) * sc - 0.5


def pointing_hit(
    cam: np.ndarray,
    centre_px: tuple[float, float],
    radius_px: float,
    *,
    pixel_spacing_mm: float | Sequence[float],
    tolerance_mm: float,
    image_shape: tuple[int, int] | None = None,
) -> bool:
    """Whether the map's peak lies within the nodule's radius plus `tolerance_mm`.

    Distances are measured in millimetres with `pixel_spacing_mm` (one value, or (row, col));
    use the spacing in which the nodule's radius is true (for the simulator's pinhole images
    that is `ImageRegions.object_spacing_mm`). A flat map has no peak and never hits.
    """
    m = _finite_map(cam)
    if tolerance_mm < 0:
        raise ValueError("tolerance_mm must be >= 0")
    if float(m.max()) == float(m.min()):
        return False
    sr, sc = _spacing(pixel_spacing_mm)
    row, col = peak_px(m, image_shape)
    dist_mm = math.hypot((row - centre_px[0]) * sr, (col - centre_px[1]) * sc)
    radius_mm = radius_px * math.sqrt(sr * sc)
    return dist_mm <= radius_mm + tolerance_mm


def pointing_game(
    cams: Sequence[np.ndarray],
    centres_px: Sequence[tuple[float, float]],
    radii_px: Sequence[float],
    *,
    pixel_spacing_mm: float | Sequence[float],
    tolerance_mm: float,
    image_shape: tuple[int, int] | None = None,
) -> float:
    """Share of maps whose peak hits the nodule (NaN for no maps).

    `pixel_spacing_mm` is one (square) spacing for every image, or one per image.
    """
    n = len(cams)
    if not (len(centres_px) == len(radii_px) == n):
        raise ValueError("cams, centres and radii need the same length")
    if n == 0:
        return float("nan")
    if isinstance(pixel_spacing_mm, int | float):
        spacings = [float(pixel_spacing_mm)] * n
    else:
        spacings = [float(v) for v in pixel_spacing_mm]
        if len(spacings) != n:
            raise ValueError("give one pixel spacing, or one per map")
    hits = [
        pointing_hit(
            cam,
            centre,
            radius,
            pixel_spacing_mm=sp,
            tolerance_mm=tolerance_mm,
            image_shape=image_shape,
        )
        for cam, centre, radius, sp in zip(cams, centres_px, radii_px, spacings, strict=True)
    ]
    return float(np.mean(hits))


def energy_in_region(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's mass inside `mask` (negative values count as 0; NaN for no mass).

    The map must be on the mask's grid (see `upsample_map`).
    """
    m = _finite_map(cam)
    region = np.asarray(mask, dtype=bool)
    if region.shape != m.shape:
        raise ValueError(f"map {m.shape} and mask {region.shape} differ in shape")
    pos = np.clip(m, 0.0, None)
    total = float(pos.sum())
    if total <= 0.0:
        return float("nan")
    return float(pos[region].sum() / total)


def upsample_map(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a map to `shape` (cell centres aligned, edges clamped)."""
    m = _finite_map(cam)

    def weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo

    r0, r1, wr = weights(m.shape[0], int(shape[0]))
    c0, c1, wc = weights(m.shape[1], int(shape[1]))
    rows = m[r0] * (1.0 - wr)[:, None] + m[r1] * wr[:, None]  # (R, w)
    return rows[:, c0] * (1.0 - wc)[None, :] + rows[:, c1] * wc[None, :]  # (R, C)


@dataclass(frozen=True, slots=True)
class DeletionCurve:
    """The class probability after deleting each fraction of the pixels."""

    fractions: tuple[float, ...]
    probabilities: tuple[float, ...]

    @property
    def auc(self) -> float:
        """Area under the curve (trapezoids over the deleted fraction, 0..1)."""
        f = np.asarray(self.fractions)
        p = np.asarray(self.probabilities)
        return float(np.sum((f[1:] - f[:-1]) * (p[1:] + p[:-1]) / 2.0))


def _deletion(
    image: np.ndarray, order: np.ndarray, predict: Predict, steps: int, fill: float
) -> DeletionCurve:
    """Delete pixels in `order` (flat indices) in `steps` equal parts; one predict call."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    img = np.asarray(image, dtype=np.float32)
    n = img.size
    counts = np.round(np.linspace(0.0, 1.0, steps + 1) * n).astype(np.int64)
    batch = np.repeat(img[None], steps + 1, axis=0).reshape(steps + 1, n)  # (S+1, N)
    for i, k in enumerate(counts):
        batch[i, order[:k]] = fill
    probs = np.asarray(predict(batch.reshape(steps + 1, *img.shape)), dtype=np.float64)
    if probs.shape != (steps + 1,):
        raise ValueError(f"predict must return one probability per image, got {probs.shape}")
    return DeletionCurve(
        tuple(float(k) / n for k in counts), tuple(float(p) for p in probs.ravel())
    )


def deletion_curve(
    image: np.ndarray,
    saliency: np.ndarray,
    predict: Predict,
    *,
    steps: int = DELETION_STEPS,
    fill: float = 0.0,
) -> DeletionCurve:
    """Delete the most salient pixels first (set them to `fill`) and record the probability.

    `saliency` must be on the image's grid (see `upsample_map`); equal saliencies are deleted
    in row-major order.
    """
    sal = _finite_map(saliency)
    if sal.shape != np.shape(image):
        raise ValueError(f"saliency {sal.shape} and image {np.shape(image)} differ in shape")
    order = np.argsort(-sal.ravel(), kind="stable")
    return _deletion(np.asarray(image), order, predict, steps, fill)


def random_deletion_curve(
    image: np.ndarray,
    predict: Predict,
    *,
    seed: int = 0,
    repeats: int = 4,
    steps: int = DELETION_STEPS,
    fill: float = 0.0,
) -> DeletionCurve:
    """The baseline: pixels deleted in random order, probabilities averaged over `repeats`."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    rng = np.random.default_rng(seed)
    img = np.asarray(image)
    curves = [
        _deletion(img, rng.permutation(img.size), predict, steps, fill) for _ in range(repeats)
    ]
    probs = np.mean([c.probabilities for c in curves], axis=0)
    return DeletionCurve(curves[0].fractions, tuple(float(p) for p in probs))


@dataclass(frozen=True, slots=True)
class DeletionCheck:
    """A map's deletion AUC against the random-order baseline on the same image."""

    auc: float
    random_auc: float

    @property
    def beats_random(self) -> bool:
        """True when deleting by the map lowers the probability faster than at random."""
        return self.auc < self.random_auc


def deletion_check(
    image: np.ndarray,
    saliency: np.ndarray,
    predict: Predict,
    *,
    seed: int = 0,
    repeats: int = 4,
    steps: int = DELETION_STEPS,
    fill: float = 0.0,
) -> DeletionCheck:
    """`deletion_curve` and `random_deletion_curve` of one image, as their two AUCs."""
    ordered = deletion_curve(image, saliency, predict, steps=steps, fill=fill)
    baseline = random_deletion_curve(
        image, predict, seed=seed, repeats=repeats, steps=steps, fill=fill
    )
    return DeletionCheck(ordered.auc, baseline.auc)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank."""
    order = np.argsort(values, kind="stable")
    sorted_v = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(values.size, dtype=np.float64)
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    for start, count in zip(first, counts, strict=True):
        if count > 1:
            ranks[order[start : start + count]] = start + (count - 1) / 2.0
    return ranks


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho between two maps of equal shape (NaN when either is constant)."""
    x = _finite_map(a).ravel()
    y = _finite_map(b).ravel()
    if x.shape != y.shape:
        raise ValueError(f"maps {np.shape(a)} and {np.shape(b)} differ in shape")
    rx, ry = _ranks(x), _ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if denom == 0.0:
        return float("nan")
    return float(rx @ ry) / denom


@dataclass(frozen=True, slots=True)
class RandomisationCheck:
    """Rank correlations between trained and randomised-weight maps, and the verdict."""

    rhos: tuple[float, ...]  # Spearman rho per image (NaN: a constant map)
    bound: float

    @property
    def median_abs_rho(self) -> float:
        """Median |rho|; a constant map counts as 1 (it carries no ranking)."""
        if not self.rhos:
            return float("nan")
        return float(np.median([abs(r) if math.isfinite(r) else 1.0 for r in self.rhos]))

    @property
    def passed(self) -> bool:
        """Every map has a ranking and the median |rho| lies below the bound."""
        return (
            bool(self.rhos)
            and all(math.isfinite(r) for r in self.rhos)
            and self.median_abs_rho < self.bound
        )


def randomisation_check(
    trained: Sequence[np.ndarray] | np.ndarray,
    randomised: Sequence[np.ndarray] | np.ndarray,
    *,
    bound: float = RANDOMISATION_BOUND,
) -> RandomisationCheck:
    """Do the maps change when the model's weights are randomised?

    `trained` and `randomised` hold one map or a stack of maps of the same images. The
    check fails when any map is constant (NaN rho) or the median |rho| reaches `bound`.
    """
    if not 0.0 < bound <= 1.0:
        raise ValueError("bound must lie in (0, 1]")
    t = np.asarray(trained, dtype=np.float64)
    r = np.asarray(randomised, dtype=np.float64)
    if t.shape != r.shape:
        raise ValueError(f"trained {t.shape} and randomised {r.shape} maps differ in shape")
    if t.ndim == 2:
        t, r = t[None], r[None]
    rhos = tuple(rank_correlation(a, b) for a, b in zip(t, r, strict=True))
    return RandomisationCheck(rhos, bound)
