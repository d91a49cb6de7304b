"""An `Anatomy` on a site's pixel grid: expected counts, a noisy acquisition, regions of interest.

Each blob is a projected ellipsoid drawn into a window around it; the thyroid, salivary
glands, soft tissue and an optional marker are summed, blurred (system resolution, patient
motion) and weighted by the pinhole's field of view and cos^3 sensitivity. Everything here
is a pure function of the anatomy and the site except the Poisson noise of `acquire`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

import numpy as np
from scipy import ndimage

from scintiflow.sim._anatomy import Anatomy, Blob
from scintiflow.sim._sites import SiteProfile

_PINHOLE_OBJECT_DISTANCE_MM = 150.0  # sets the cos^3 sensitivity fall-off of the pinhole
_FOV_RADIUS_FRACTION = 0.48  # round pinhole field of view, as a fraction of the matrix edge


@lru_cache(maxsize=16)
def _axes(site: SiteProfile) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (mm) along columns (x) and rows (y)."""
    n = site.matrix
    c = (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * site.object_spacing_mm
    c.setflags(write=False)
    return c, c


@lru_cache(maxsize=16)
def _detector_response(site: SiteProfile) -> np.ndarray:
    """Round pinhole field of view with a soft edge times the cos^3 sensitivity fall-off."""
    x, y = _axes(site)
    r = np.hypot(x[None, :], y[:, None])
    radius = _FOV_RADIUS_FRACTION * site.fov_mm
    mask = np.clip((radius - r) / (1.5 * site.object_spacing_mm), 0.0, 1.0)
    sens = (1.0 + (r / _PINHOLE_OBJECT_DISTANCE_MM) ** 2) ** -1.5
    out = mask * sens
    out.setflags(write=False)
    return out


def _window(
    site: SiteProfile, cx: float, cy: float, extent: float
) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """Row/column slices covering a square of half-size `extent` mm around (cx, cy)."""
    x, y = _axes(site)
    s = site.object_spacing_mm
    half = (site.matrix - 1) / 2.0
    c0 = max(0, math.floor((cx - extent) / s + half))
    c1 = min(site.matrix, math.ceil((cx + extent) / s + half) + 1)
    r0 = max(0, math.floor((cy - extent) / s + half))
    r1 = min(site.matrix, math.ceil((cy + extent) / s + half) + 1)
    rows, cols = slice(r0, max(r0, r1)), slice(c0, max(c0, c1))
    return rows, cols, x[cols][None, :], y[rows][:, None]


def _blob_r2(blob: Blob, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Normalised squared radius of each pixel in the blob's own frame (< 1 inside)."""
    c, s = math.cos(blob.theta), math.sin(blob.theta)
    dx, dy = xs - blob.cx, ys - blob.cy
    u = c * dx - s * dy
    v = s * dx + c * dy
    if blob.pear:
        a = blob.a * (1.0 + blob.pear * np.clip(v / blob.b, -1.0, 1.0))
    else:
        a = np.full_like(u, blob.a)
    return (u / a) ** 2 + (v / blob.b) ** 2


def _draw(out: np.ndarray, site: SiteProfile, blob: Blob, *, mode: str = "add") -> None:
    """Add (or take the maximum with) one blob's projected thickness into `out`."""
    extent = max(blob.a * (1.0 + abs(blob.pear)), blob.b) + site.object_spacing_mm
    rows, cols, xs, ys = _window(site, blob.cx, blob.cy, extent)
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return
    val = blob.peak * np.sqrt(np.clip(1.0 - _blob_r2(blob, xs, ys), 0.0, None))
    if mode == "add":
        out[rows, cols] += val
    else:
        np.maximum(out[rows, cols], val, out=out[rows, cols])


def _mask(site: SiteProfile, blob: Blob, r2_max: float = 1.0) -> np.ndarray:
    """Boolean support of a blob (r^2 < r2_max)."""
    out = np.zeros((site.matrix, site.matrix), dtype=bool)
    extent = max(blob.a * (1.0 + abs(blob.pear)), blob.b) + site.object_spacing_mm
    rows, cols, xs, ys = _window(site, blob.cx, blob.cy, extent)
    if rows.start < rows.stop and cols.start < cols.stop:
        out[rows, cols] = _blob_r2(blob, xs, ys) < r2_max
    return out


def _soft_tissue(an: Anatomy, site: SiteProfile) -> np.ndarray:
    """Neck, face and shoulder soft tissue (unit level) with faint carotid/jugular bands."""
    x, y = _axes(site)
    xs, ys = x[None, :], y[:, None]
    up = 1.0 / (1.0 + np.exp(-((an.ty - 42.0) - ys) / 10.0))  # face/jaw region above
    down = 1.0 / (1.0 + np.exp(-(ys - (an.ty + 50.0)) / 10.0))  # shoulders below
    half_width = an.neck_half_width + 25.0 * up + 80.0 * down
    dist = np.abs(xs - an.tx)
    tissue = 1.0 / (1.0 + np.exp(-(half_width - dist) / 5.0))
    vessels = np.exp(-(((dist - an.neck_half_width * 0.55) / 5.0) ** 2))
    return tissue * (1.0 + an.vessel_amp * vessels * (1.0 - up))


def _texture(an: Anatomy, site: SiteProfile) -> np.ndarray:
    """Smooth multiplicative parenchymal heterogeneity, unit standard deviation."""
    rng = np.random.default_rng(an.texture_seed)
    sigma = 3.5 / site.object_spacing_mm
    field = ndimage.gaussian_filter(rng.standard_normal((site.matrix, site.matrix)), sigma)
    return field * (2.0 * math.sqrt(math.pi) * sigma)


def render_thyroid(an: Anatomy, site: SiteProfile) -> np.ndarray:
    """Noise-free, unblurred thyroid activity (lobe peak ~ 1), nodule included."""
    n = site.matrix
    thy = np.zeros((n, n))
    for lobe in an.lobes:
        _draw(thy, site, lobe)
    _draw(thy, site, an.isthmus, mode="max")
    if an.pyramidal is not None:
        _draw(thy, site, an.pyramidal, mode="max")
    if an.texture_amp > 0:
        thy *= np.clip(1.0 + an.texture_amp * _texture(an, site), 0.2, None)
    nod = an.nodule
    if nod is not None:
        disk = np.zeros((n, n))
        _draw(disk, site, Blob(nod.cx, nod.cy, nod.radius_mm, nod.radius_mm))
        if nod.kind == "cold":
            thy *= 1.0 - nod.contrast * disk
        thy *= nod.suppression
        if nod.kind == "hot":
            thy += nod.contrast * disk
    return thy


def render_expected(an: Anatomy, site: SiteProfile) -> np.ndarray:
    """Noise-free expected counts per pixel (float64, sums to `an.expected_counts`)."""
    n = site.matrix
    s_peak = 1.0 / an.thyroid_to_salivary
    act = render_thyroid(an, site)
    sal = np.zeros((n, n))
    for blob in (*an.parotids, *an.submandibulars):
        _draw(sal, site, blob)
    for extra in (an.mouth, an.oesophagus):
        if extra is not None:
            _draw(sal, site, extra)
    act += s_peak * sal
    act += _soft_tissue(an, site) / an.thyroid_to_background
    if an.marker is not None:
        point = np.zeros((n, n))
        _draw(point, site, an.marker)
        total = float(point.sum())
        if total > 0:
            act += point * (an.marker_fraction / (1.0 - an.marker_fraction)) * act.sum() / total
    act = ndimage.gaussian_filter(act, site.blur_sigma_px * an.blur_scale, mode="constant")
    if an.motion_mm > 0:
        act = _motion_blur(act, site, an.motion_mm, an.motion_angle_deg)
    act *= _detector_response(site)
    return act * (an.expected_counts / act.sum())


def _motion_blur(
    img: np.ndarray, site: SiteProfile, length_mm: float, angle_deg: float
) -> np.ndarray:
    """Patient motion during the acquisition: the mean of shifted copies along one line."""
    steps = int(min(9, max(3, math.ceil(length_mm / site.object_spacing_mm) + 1)))
    ang = math.radians(angle_deg)
    out = np.zeros_like(img)
    for t in np.linspace(-0.5, 0.5, steps):
        d = t * length_mm / site.object_spacing_mm
        out += ndimage.shift(img, (d * math.sin(ang), d * math.cos(ang)), order=1, mode="constant")
    return out / steps


def acquire(an: Anatomy, site: SiteProfile, rng: np.random.Generator) -> np.ndarray:
    """One noisy acquisition: Poisson counts of the expected image, as uint16."""
    counts = rng.poisson(render_expected(an, site))
    return np.minimum(counts, 65535).astype(np.uint16)


def region_masks(an: Anatomy, site: SiteProfile) -> dict[str, np.ndarray]:
    """Boolean regions of interest for evaluation and tests (geometry, not thresholds).

    Keys: thyroid, right_lobe, left_lobe, salivary, background, and for tumours nodule and
    nodule_lobe_rest (the host lobe outside a margin around the nodule).
    """
    right = _mask(site, an.lobes[0], 0.7)
    left = _mask(site, an.lobes[1], 0.7)
    thyroid = right | left | _mask(site, an.isthmus, 0.7)
    salivary = np.zeros_like(thyroid)
    for blob in (*an.parotids, *an.submandibulars):
        salivary |= _mask(site, blob, 0.6)
    x, y = _axes(site)
    xs, ys = x[None, :], y[:, None]
    organs = np.zeros_like(thyroid)
    for blob in (*an.lobes, an.isthmus, *an.parotids, *an.submandibulars):
        organs |= _mask(site, replace(blob, a=blob.a + 12.0, b=blob.b + 12.0, pear=0.0))
    for extra in (an.pyramidal, an.mouth, an.oesophagus, an.marker):
        if extra is not None:
            organs |= _mask(site, replace(extra, a=extra.a + 12.0, b=extra.b + 12.0))
    in_fov = _detector_response(site) > 0.5
    neck = (np.abs(xs - an.tx) < 0.8 * an.neck_half_width) & (np.abs(ys - an.ty) < 45.0)
    out = {
        "thyroid": thyroid,
        "right_lobe": right,
        "left_lobe": left,
        "salivary": salivary,
        "background": neck & in_fov & ~organs,
    }
    nod = an.nodule
    if nod is not None:
        core = Blob(nod.cx, nod.cy, nod.radius_mm * 0.6, nod.radius_mm * 0.6)
        margin = Blob(nod.cx, nod.cy, nod.radius_mm + 4.0, nod.radius_mm + 4.0)
        host = right if nod.lobe == "right" else left
        out["nodule"] = _mask(site, core)
        out["nodule_lobe_rest"] = host & ~_mask(site, margin)
    return out
