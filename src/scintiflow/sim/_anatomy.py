"""Neck anatomy and tracer uptake per class, drawn at random and rendered to a count image.

Coordinates are millimetres at the object plane: x grows towards the image right (the
patient's left on an anterior view), y grows towards the feet, (0, 0) is the image centre.
Drawing (`draw_anatomy`) is the only random step besides the Poisson noise; rendering
(`render_expected`) is a pure function of an `Anatomy` and a site, so tests and evaluations
can re-render noise-free maps and region masks from a stored case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy import ndimage

from scintiflow import CLASSES
from scintiflow.sim._sites import SITES, SiteProfile

_PINHOLE_OBJECT_DISTANCE_MM = 150.0  # sets the cos^3 sensitivity fall-off of the pinhole
_FOV_RADIUS_FRACTION = 0.48  # round pinhole field of view, as a fraction of the matrix edge


@dataclass(frozen=True, slots=True)
class Blob:
    """A projected ellipsoid: peak * sqrt(1 - r^2), optionally pear-shaped along its long axis."""

    cx: float
    cy: float
    a: float  # semi-axis across (mm)
    b: float  # semi-axis along (mm)
    theta: float = 0.0  # rotation (rad), positive turns the lower end towards +x
    peak: float = 1.0
    pear: float = 0.0  # > 0 widens the lower (+v) end


@dataclass(frozen=True, slots=True)
class Nodule:
    """A focal lesion inside one thyroid lobe."""

    kind: str  # "cold" or "hot"
    lobe: str  # patient side: "right" (image left) or "left" (image right)
    cx: float
    cy: float
    radius_mm: float
    contrast: float  # cold: fractional defect depth (0..1); hot: added peak, lobe peak = 1
    suppression: float  # factor on the rest of the gland (1.0 = none; toxic adenoma < 1)


@dataclass(frozen=True, slots=True)
class Anatomy:
    """Everything drawn for one acquisition; `render_expected` turns it into counts."""

    label: str
    severity: float  # 0 = subtle, 1 = florid (for normal: 1 = textbook)
    confuser: str | None  # e.g. "high_normal", "asymmetric", "faint" for hard normals
    tx: float  # gland centre (mm)
    ty: float
    lobes: tuple[Blob, Blob]  # (patient right = image left, patient left = image right)
    isthmus: Blob
    pyramidal: Blob | None
    parotids: tuple[Blob, Blob]
    submandibulars: tuple[Blob, Blob]
    mouth: Blob | None
    oesophagus: Blob | None
    marker: Blob | None
    marker_kind: str | None  # "sternal_notch" or "chin"
    marker_fraction: float  # share of all counts in the marker
    nodule: Nodule | None
    thyroid_to_salivary: float  # lobe peak / parotid peak (activity, before blur)
    thyroid_to_background: float  # lobe peak / soft-tissue level
    gland_scale: float
    neck_half_width: float
    vessel_amp: float
    texture_amp: float
    texture_seed: int
    blur_scale: float
    motion_mm: float
    motion_angle_deg: float
    expected_counts: float


# ----------------------------------------------------------------------------- rendering


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


# ----------------------------------------------------------------------------- drawing


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * t


def _log_lerp(lo: float, hi: float, t: float) -> float:
    return math.exp(_lerp(math.log(lo), math.log(hi), t))


def _severity(rng: np.random.Generator, difficulty: float) -> float:
    """How florid a finding is: mostly high at difficulty 0, spread out at 0.5, low at 1."""
    floor = 0.5 * (1.0 - difficulty) ** 2
    beta = float(rng.beta(1.0 + 3.0 * (1.0 - difficulty), 1.0 + 3.0 * difficulty))
    return floor + (1.0 - floor) * beta


def _rotate(px: float, py: float, cx: float, cy: float, ang: float) -> tuple[float, float]:
    """Rotate a point about (cx, cy) in the same sense as `Blob.theta`."""
    c, s = math.cos(ang), math.sin(ang)
    dx, dy = px - cx, py - cy
    return cx + c * dx + s * dy, cy - s * dx + c * dy


def draw_anatomy(
    label: str, site: SiteProfile, rng: np.random.Generator, difficulty: float = 0.5
) -> Anatomy:
    """Draw one patient's neck anatomy and uptake pattern for `label` at `site`."""
    if label not in CLASSES:
        raise ValueError(f"unknown class {label!r}; expected one of {CLASSES}")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError("difficulty must lie in [0, 1]")
    d = difficulty
    sev = _severity(rng, d)
    confuser: str | None = None

    # --- normal baseline (every class starts here) -------------------------------------
    scale = float(math.exp(rng.normal(0.0, 0.10)))
    ts = _log_uniform(rng, 1.3, 4.8)
    tb = _log_uniform(rng, 6.0, 14.0)
    texture = float(rng.uniform(0.03, 0.07) + 0.03 * d)
    isthmus_peak = float(rng.uniform(0.3, 0.6))
    vessel_amp = float(rng.uniform(0.0, 0.25))
    roundness = 1.0
    size_r = float(math.exp(rng.normal(0.04, 0.05 + 0.10 * d)))
    size_l = float(math.exp(rng.normal(0.0, 0.05 + 0.10 * d)))
    act_r = float(math.exp(rng.normal(0.0, 0.04 + 0.08 * d)))
    act_l = float(math.exp(rng.normal(0.0, 0.04 + 0.08 * d)))
    pyramidal = False
    counts_u = float(rng.uniform()) ** (1.0 + d)

    if label == "normal":
        u = float(rng.uniform())
        if u < 0.30 * d:  # high-normal: looks like mild Graves'
            confuser = "high_normal"
            ts = _log_uniform(rng, 4.0, 6.5)
            tb = _log_uniform(rng, 11.0, 20.0)
            scale *= float(rng.uniform(1.05, 1.22))
        elif u < 0.55 * d:  # asymmetric lobes: looks like a nodule/hemi-defect
            confuser = "asymmetric"
            if rng.uniform() < 0.5:
                size_r *= float(rng.uniform(0.55, 0.8))
                act_r *= float(rng.uniform(0.7, 0.9))
            else:
                size_l *= float(rng.uniform(0.55, 0.8))
                act_l *= float(rng.uniform(0.7, 0.9))
        elif u < 0.70 * d:  # low uptake (iodine load): looks like thyroiditis
            confuser = "faint"
            ts = _log_uniform(rng, 0.7, 1.4)
            tb = _log_uniform(rng, 2.8, 6.0)
    elif label == "graves":
        scale *= 1.0 + _lerp(0.0, 0.55, sev) * float(rng.uniform(0.8, 1.2))
        roundness = 1.0 + 0.25 * sev
        ts = _log_lerp(3.8, 22.0, sev) * float(math.exp(rng.normal(0.0, 0.15)))
        tb = _log_lerp(11.0, 60.0, sev) * float(math.exp(rng.normal(0.0, 0.15)))
        texture = float(rng.uniform(0.02, 0.04))
        isthmus_peak = _lerp(0.4, 0.85, sev) * float(rng.uniform(0.9, 1.1))
        pyramidal = bool(rng.uniform() < 0.3)
        vessel_amp = float(rng.uniform(0.0, 0.1))
    elif label == "subacute_thyroiditis":
        scale *= float(rng.uniform(1.0, 1.2))
        ts = _log_lerp(1.3, 0.04, sev) * float(math.exp(rng.normal(0.0, 0.15)))
        tb = max(_log_lerp(5.0, 1.05, sev) * float(math.exp(rng.normal(0.0, 0.1))), 0.6)
        texture = _lerp(0.06, 0.22, sev)
        vessel_amp = float(rng.uniform(0.1, 0.45))
        counts_u *= 0.75
        if rng.uniform() < 0.2 * d:  # focal (one-lobe) thyroiditis: the other lobe still works
            confuser = "focal"
            ts = _log_uniform(rng, 1.2, 3.0)
            tb = _log_uniform(rng, 4.0, 9.0)
            if rng.uniform() < 0.5:
                act_r *= float(rng.uniform(0.08, 0.3))
            else:
                act_l *= float(rng.uniform(0.08, 0.3))

    # --- gland geometry ------------------------------------------------------------------
    tx = float(rng.normal(0.0, 5.0))
    ty = float(rng.uniform(2.0, 14.0))
    rot = math.radians(float(rng.normal(0.0, 4.0)))
    half_len = float(rng.uniform(19.0, 25.0)) * scale
    half_wid = float(rng.uniform(7.0, 9.5)) * scale * roundness
    gap = float(rng.uniform(5.0, 8.5))
    tilt = math.radians(float(rng.uniform(4.0, 14.0)))
    pear = float(rng.uniform(0.0, 0.35))

    nodule_side = "right" if rng.uniform() < 0.5 else "left"
    nod_radius = 0.0
    if label == "thyroid_tumor":
        nod_radius = _lerp(5.5, 13.0, sev) * float(rng.uniform(0.85, 1.15))
        grow = 1.0 + 0.3 * sev
        if nodule_side == "right":
            size_r *= grow
        else:
            size_l *= grow

    lobes: list[Blob] = []
    for side, size, act in (("right", size_r, act_r), ("left", size_l, act_l)):
        sign = -1.0 if side == "right" else 1.0
        a, b = half_wid * size, half_len * size
        if side == nodule_side and nod_radius > 0:
            a, b = max(a, 1.1 * nod_radius), max(b, 1.6 * nod_radius)
        cx, cy = _rotate(tx + sign * (gap + 0.9 * a), ty, tx, ty, rot)
        lobes.append(Blob(cx, cy, a, b, theta=rot - sign * tilt, peak=act, pear=pear))
    right, left = lobes
    isthmus_y = ty + 0.45 * half_len
    ix, iy = _rotate(tx, isthmus_y, tx, ty, rot)
    isthmus = Blob(
        ix,
        iy,
        a=float(rng.uniform(3.0, 6.0)) * scale,
        b=0.5 * math.hypot(left.cx - right.cx, left.cy - right.cy) + 0.3 * half_wid,
        theta=rot + math.pi / 2.0,
        peak=isthmus_peak * 0.5 * (act_r + act_l),
    )
    pyr: Blob | None = None
    if pyramidal:
        plen = float(rng.uniform(6.0, 13.0)) * scale
        px, py = _rotate(tx + float(rng.uniform(-7.0, 3.0)), isthmus_y - plen, tx, ty, rot)
        pyr = Blob(px, py, float(rng.uniform(2.2, 3.5)), plen, theta=rot, peak=0.5 + 0.2 * sev)

    nodule: Nodule | None = None
    if label == "thyroid_tumor":
        host = right if nodule_side == "right" else left
        u = float(rng.uniform(-0.3, 0.3)) * host.a
        v = float(rng.uniform(-0.5, 0.5)) * host.b
        c, s = math.cos(host.theta), math.sin(host.theta)
        nx, ny = host.cx + c * u + s * v, host.cy - s * u + c * v
        if rng.uniform() < 0.25:
            suppressed = bool(rng.uniform() < 0.5 * sev)
            nodule = Nodule(
                "hot",
                nodule_side,
                nx,
                ny,
                nod_radius,
                contrast=_lerp(0.6, 2.0, sev) * host.peak,
                suppression=float(rng.uniform(0.05, 0.35)) if suppressed else 1.0,
            )
        else:
            nodule = Nodule("cold", nodule_side, nx, ny, nod_radius, _lerp(0.6, 0.97, sev), 1.0)

    # --- salivary glands, mouth, oesophagus, marker -------------------------------------
    par_dx, par_dy = float(rng.uniform(42.0, 52.0)), float(rng.uniform(56.0, 68.0))
    sub_dx, sub_dy = float(rng.uniform(24.0, 32.0)), float(rng.uniform(30.0, 40.0))
    par_a, par_b = float(rng.uniform(9.0, 13.0)), float(rng.uniform(14.0, 19.0))
    sub_a, sub_b = float(rng.uniform(8.0, 11.0)), float(rng.uniform(6.0, 8.5))
    sub_peak = float(rng.uniform(0.55, 0.9))
    parotids = []
    submand = []
    for sign in (-1.0, 1.0):
        jitter = float(math.exp(rng.normal(0.0, 0.08)))
        parotids.append(
            Blob(tx + sign * par_dx, ty - par_dy, par_a, par_b, -sign * 0.2, peak=jitter)
        )
        submand.append(
            Blob(tx + sign * sub_dx, ty - sub_dy, sub_a, sub_b, sign * 0.3, peak=sub_peak * jitter)
        )
    mouth = None
    if rng.uniform() < 0.7:
        mouth = Blob(
            tx + float(rng.normal(0.0, 3.0)),
            ty - par_dy - float(rng.uniform(0.0, 10.0)),
            float(rng.uniform(14.0, 24.0)),
            float(rng.uniform(5.0, 10.0)),
            peak=float(rng.uniform(0.2, 0.9)),
        )
    oesophagus = None
    if rng.uniform() < 0.08 + 0.12 * d:
        length = float(rng.uniform(40.0, 65.0))
        oesophagus = Blob(
            tx + float(rng.uniform(-2.0, 6.0)),
            ty - 10.0 + float(rng.uniform(-5.0, 15.0)),
            float(rng.uniform(2.0, 3.5)),
            length,
            peak=float(rng.uniform(0.15, 0.5)),
        )
    marker = None
    marker_kind = None
    if rng.uniform() < 0.12:
        if rng.uniform() < 0.6:
            marker_kind, my = "sternal_notch", ty + float(rng.uniform(32.0, 45.0))
        else:
            marker_kind, my = "chin", ty - float(rng.uniform(70.0, 80.0))
        marker = Blob(tx + float(rng.normal(0.0, 2.0)), my, 2.5, 2.5)

    lo, hi = site.counts_range
    expected = _log_lerp(lo * 1.03, hi * 0.97, counts_u)
    moving = bool(rng.uniform() < 0.05 + 0.20 * d)
    return Anatomy(
        label=label,
        severity=sev,
        confuser=confuser,
        tx=tx,
        ty=ty,
        lobes=(right, left),
        isthmus=isthmus,
        pyramidal=pyr,
        parotids=(parotids[0], parotids[1]),
        submandibulars=(submand[0], submand[1]),
        mouth=mouth,
        oesophagus=oesophagus,
        marker=marker,
        marker_kind=marker_kind,
        marker_fraction=float(rng.uniform(0.005, 0.03)),
        nodule=nodule,
        thyroid_to_salivary=ts,
        thyroid_to_background=tb,
        gland_scale=scale,
        neck_half_width=float(rng.uniform(44.0, 56.0)),
        vessel_amp=vessel_amp,
        texture_amp=texture,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        blur_scale=float(math.exp(rng.normal(0.0, 0.08))),
        motion_mm=float(rng.uniform(3.0, 6.0 + 8.0 * d)) if moving else 0.0,
        motion_angle_deg=float(rng.uniform(0.0, 180.0)),
        expected_counts=expected,
    )


def _shift_blob(blob: Blob | None, dx: float, dy: float) -> Blob | None:
    return None if blob is None else replace(blob, cx=blob.cx + dx, cy=blob.cy + dy)


def _shift_pair(pair: tuple[Blob, Blob], dx: float, dy: float) -> tuple[Blob, Blob]:
    return (
        replace(pair[0], cx=pair[0].cx + dx, cy=pair[0].cy + dy),
        replace(pair[1], cx=pair[1].cx + dx, cy=pair[1].cy + dy),
    )


def follow_up(
    an: Anatomy, site: SiteProfile, rng: np.random.Generator, difficulty: float = 0.5
) -> Anatomy:
    """The same patient imaged again: repositioned, new counts, motion and salivary state."""
    dx, dy = float(rng.normal(0.0, 4.0)), float(rng.normal(0.0, 4.0))
    nod = an.nodule
    if nod is not None:
        nod = replace(nod, cx=nod.cx + dx, cy=nod.cy + dy)
    lo, hi = site.counts_range
    counts_u = float(rng.uniform()) ** (1.0 + difficulty)
    if an.label == "subacute_thyroiditis":
        counts_u *= 0.75
    moving = bool(rng.uniform() < 0.05 + 0.20 * difficulty)
    return replace(
        an,
        tx=an.tx + dx,
        ty=an.ty + dy,
        lobes=_shift_pair(an.lobes, dx, dy),
        isthmus=replace(an.isthmus, cx=an.isthmus.cx + dx, cy=an.isthmus.cy + dy),
        pyramidal=_shift_blob(an.pyramidal, dx, dy),
        parotids=_shift_pair(an.parotids, dx, dy),
        submandibulars=_shift_pair(an.submandibulars, dx, dy),
        mouth=_shift_blob(an.mouth, dx, dy),
        oesophagus=_shift_blob(an.oesophagus, dx, dy) if rng.uniform() < 0.5 else None,
        marker=_shift_blob(an.marker, dx, dy),
        nodule=nod,
        thyroid_to_salivary=an.thyroid_to_salivary * float(math.exp(rng.normal(0.0, 0.1))),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        blur_scale=float(math.exp(rng.normal(0.0, 0.08))),
        motion_mm=float(rng.uniform(3.0, 6.0 + 8.0 * difficulty)) if moving else 0.0,
        motion_angle_deg=float(rng.uniform(0.0, 180.0)),
        expected_counts=_log_lerp(lo * 1.03, hi * 0.97, counts_u),
    )


def oblique(an: Anatomy, side: str) -> Anatomy:
    """An approximate 45-degree anterior oblique view ("LAO" or "RAO") of the same neck.

    Lateral offsets shrink by cos 45 and the lobe further from the camera is attenuated.
    """
    squeeze = math.cos(math.pi / 4.0)
    far = "right" if side == "LAO" else "left"

    def tilt(blob: Blob, attenuate: bool = False) -> Blob:
        return replace(
            blob,
            cx=an.tx + (blob.cx - an.tx) * squeeze,
            a=blob.a * 0.85,
            peak=blob.peak * (0.8 if attenuate else 1.0),
        )

    right, left = an.lobes
    nod = an.nodule
    if nod is not None:
        nod = replace(nod, cx=an.tx + (nod.cx - an.tx) * squeeze, radius_mm=nod.radius_mm)
    return replace(
        an,
        lobes=(tilt(right, far == "right"), tilt(left, far == "left")),
        isthmus=tilt(an.isthmus),
        pyramidal=None if an.pyramidal is None else tilt(an.pyramidal),
        parotids=(tilt(an.parotids[0], far == "right"), tilt(an.parotids[1], far == "left")),
        submandibulars=(
            tilt(an.submandibulars[0], far == "right"),
            tilt(an.submandibulars[1], far == "left"),
        ),
        nodule=nod,
        marker=None,
    )


# ----------------------------------------------------------------------------- masks


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


def site_profile(site: str | SiteProfile) -> SiteProfile:
    """Resolve a site name to its profile."""
    if isinstance(site, SiteProfile):
        return site
    try:
        return SITES[site]
    except KeyError:
        raise ValueError(f"unknown site {site!r}; known: {sorted(SITES)}") from None
