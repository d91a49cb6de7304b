"""Drawing one patient's neck anatomy and uptake pattern per class, and their follow-ups.

Every random draw of a case's anatomy happens here, in a fixed order per generator, so equal
seeds give equal anatomies: `draw_anatomy` for a new patient, `follow_up` for the same
patient imaged again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from scintiflow import CLASSES
from scintiflow.sim._anatomy import Anatomy, Blob, Nodule
from scintiflow.sim._sites import SiteProfile


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


@dataclass(slots=True)
class _Uptake:
    """A patient's activity and size factors: the normal baseline, then changed per class."""

    scale: float  # gland size factor
    ts: float  # thyroid-to-salivary peak ratio
    tb: float  # thyroid-to-background ratio
    texture: float
    isthmus_peak: float
    vessel_amp: float
    size_r: float  # lobe size and activity factors, patient right and left
    size_l: float
    act_r: float
    act_l: float
    counts_u: float  # where the total counts fall in the site's range (0..1, log scale)
    roundness: float = 1.0
    pyramidal: bool = False
    confuser: str | None = None  # what a hard normal or a focal thyroiditis looks like


@dataclass(frozen=True, slots=True)
class _Pose:
    """Where the gland sits and how its lobes are shaped (mm, radians)."""

    tx: float  # gland centre
    ty: float
    rot: float
    half_len: float
    half_wid: float
    gap: float
    tilt: float
    pear: float


def draw_anatomy(
    label: str, site: SiteProfile, rng: np.random.Generator, difficulty: float = 0.5
) -> Anatomy:
    """Draw one patient's neck anatomy and uptake pattern for `label` at `site`.

    The steps draw from `rng` in a fixed order (uptake, gland, nodule, salivary glands,
    mouth, oesophagus, marker, acquisition), so a seed always gives the same anatomy.
    """
    if label not in CLASSES:
        raise ValueError(f"unknown class {label!r}; expected one of {CLASSES}")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError("difficulty must lie in [0, 1]")
    d = difficulty
    sev = _severity(rng, d)
    up = _uptake(label, rng, d, sev)
    pose = _pose(rng, up)
    nodule_side, nod_radius = _nodule_size(label, rng, sev, up)
    (right, left), isthmus, pyr = _gland(rng, pose, up, sev, nodule_side, nod_radius)
    nodule = _nodule(
        label, rng, sev, nodule_side, nod_radius, right if nodule_side == "right" else left
    )
    parotids, submand, par_dy = _salivary_glands(rng, pose.tx, pose.ty)
    mouth = _mouth(rng, pose.tx, pose.ty, par_dy)
    oesophagus = _oesophagus(rng, pose.tx, pose.ty, d)
    marker, marker_kind = _marker(rng, pose.tx, pose.ty)

    lo, hi = site.counts_range
    expected = _log_lerp(lo * 1.03, hi * 0.97, up.counts_u)
    moving = bool(rng.uniform() < 0.05 + 0.20 * d)
    return Anatomy(
        label=label,
        severity=sev,
        confuser=up.confuser,
        tx=pose.tx,
        ty=pose.ty,
        lobes=(right, left),
        isthmus=isthmus,
        pyramidal=pyr,
        parotids=parotids,
        submandibulars=submand,
        mouth=mouth,
        oesophagus=oesophagus,
        marker=marker,
        marker_kind=marker_kind,
        marker_fraction=float(rng.uniform(0.005, 0.03)),
        nodule=nodule,
        thyroid_to_salivary=up.ts,
        thyroid_to_background=up.tb,
        gland_scale=up.scale,
        neck_half_width=float(rng.uniform(44.0, 56.0)),
        vessel_amp=up.vessel_amp,
        texture_amp=up.texture,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        blur_scale=float(math.exp(rng.normal(0.0, 0.08))),
        motion_mm=float(rng.uniform(3.0, 6.0 + 8.0 * d)) if moving else 0.0,
        motion_angle_deg=float(rng.uniform(0.0, 180.0)),
        expected_counts=expected,
    )


def _uptake(label: str, rng: np.random.Generator, d: float, sev: float) -> _Uptake:
    """The normal baseline every class starts from, changed by the class's physiology."""
    up = _normal_baseline(rng, d)
    if label == "normal":
        _normal_confuser(up, rng, d)
    elif label == "graves":
        _graves(up, rng, sev)
    elif label == "subacute_thyroiditis":
        _thyroiditis(up, rng, d, sev)
    return up


def _normal_baseline(rng: np.random.Generator, d: float) -> _Uptake:
    """A normal gland: moderate uptake, symmetric lobes (the spread grows with difficulty)."""
    scale = float(math.exp(rng.normal(0.0, 0.10)))
    ts = _log_uniform(rng, 1.3, 4.8)
    tb = _log_uniform(rng, 6.0, 14.0)
    texture = float(rng.uniform(0.03, 0.07) + 0.03 * d)
    isthmus_peak = float(rng.uniform(0.3, 0.6))
    vessel_amp = float(rng.uniform(0.0, 0.25))
    size_r = float(math.exp(rng.normal(0.04, 0.05 + 0.10 * d)))
    size_l = float(math.exp(rng.normal(0.0, 0.05 + 0.10 * d)))
    act_r = float(math.exp(rng.normal(0.0, 0.04 + 0.08 * d)))
    act_l = float(math.exp(rng.normal(0.0, 0.04 + 0.08 * d)))
    counts_u = float(rng.uniform()) ** (1.0 + d)
    return _Uptake(
        scale=scale,
        ts=ts,
        tb=tb,
        texture=texture,
        isthmus_peak=isthmus_peak,
        vessel_amp=vessel_amp,
        size_r=size_r,
        size_l=size_l,
        act_r=act_r,
        act_l=act_l,
        counts_u=counts_u,
    )


def _normal_confuser(up: _Uptake, rng: np.random.Generator, d: float) -> None:
    """Hard normals (more often at high difficulty) that look like one of the diseases."""
    u = float(rng.uniform())
    if u < 0.30 * d:  # high-normal: looks like mild Graves'
        up.confuser = "high_normal"
        up.ts = _log_uniform(rng, 4.0, 6.5)
        up.tb = _log_uniform(rng, 11.0, 20.0)
        up.scale *= float(rng.uniform(1.05, 1.22))
    elif u < 0.55 * d:  # asymmetric lobes: looks like a nodule/hemi-defect
        up.confuser = "asymmetric"
        if rng.uniform() < 0.5:
            up.size_r *= float(rng.uniform(0.55, 0.8))
            up.act_r *= float(rng.uniform(0.7, 0.9))
        else:
            up.size_l *= float(rng.uniform(0.55, 0.8))
            up.act_l *= float(rng.uniform(0.7, 0.9))
    elif u < 0.70 * d:  # low uptake (iodine load): looks like thyroiditis
        up.confuser = "faint"
        up.ts = _log_uniform(rng, 0.7, 1.4)
        up.tb = _log_uniform(rng, 2.8, 6.0)


def _graves(up: _Uptake, rng: np.random.Generator, sev: float) -> None:
    """Graves' disease: an enlarged, rounder, intensely and evenly active gland."""
    up.scale *= 1.0 + _lerp(0.0, 0.55, sev) * float(rng.uniform(0.8, 1.2))
    up.roundness = 1.0 + 0.25 * sev
    up.ts = _log_lerp(3.8, 22.0, sev) * float(math.exp(rng.normal(0.0, 0.15)))
    up.tb = _log_lerp(11.0, 60.0, sev) * float(math.exp(rng.normal(0.0, 0.15)))
    up.texture = float(rng.uniform(0.02, 0.04))
    up.isthmus_peak = _lerp(0.4, 0.85, sev) * float(rng.uniform(0.9, 1.1))
    up.pyramidal = bool(rng.uniform() < 0.3)
    up.vessel_amp = float(rng.uniform(0.0, 0.1))


def _thyroiditis(up: _Uptake, rng: np.random.Generator, d: float, sev: float) -> None:
    """Subacute thyroiditis: little or no uptake over a patchy gland (sometimes one lobe)."""
    up.scale *= float(rng.uniform(1.0, 1.2))
    up.ts = _log_lerp(1.3, 0.04, sev) * float(math.exp(rng.normal(0.0, 0.15)))
    up.tb = max(_log_lerp(5.0, 1.05, sev) * float(math.exp(rng.normal(0.0, 0.1))), 0.6)
    up.texture = _lerp(0.06, 0.22, sev)
    up.vessel_amp = float(rng.uniform(0.1, 0.45))
    up.counts_u *= 0.75
    if rng.uniform() < 0.2 * d:  # focal (one-lobe) thyroiditis: the other lobe still works
        up.confuser = "focal"
        up.ts = _log_uniform(rng, 1.2, 3.0)
        up.tb = _log_uniform(rng, 4.0, 9.0)
        if rng.uniform() < 0.5:
            up.act_r *= float(rng.uniform(0.08, 0.3))
        else:
            up.act_l *= float(rng.uniform(0.08, 0.3))


def _pose(rng: np.random.Generator, up: _Uptake) -> _Pose:
    """The gland's position, rotation and lobe shape."""
    tx = float(rng.normal(0.0, 5.0))
    ty = float(rng.uniform(2.0, 14.0))
    rot = math.radians(float(rng.normal(0.0, 4.0)))
    half_len = float(rng.uniform(19.0, 25.0)) * up.scale
    half_wid = float(rng.uniform(7.0, 9.5)) * up.scale * up.roundness
    gap = float(rng.uniform(5.0, 8.5))
    tilt = math.radians(float(rng.uniform(4.0, 14.0)))
    pear = float(rng.uniform(0.0, 0.35))
    return _Pose(tx, ty, rot, half_len, half_wid, gap, tilt, pear)


def _nodule_size(
    label: str, rng: np.random.Generator, sev: float, up: _Uptake
) -> tuple[str, float]:
    """(host lobe side, nodule radius in mm); a tumour also enlarges its host lobe."""
    nodule_side = "right" if rng.uniform() < 0.5 else "left"
    nod_radius = 0.0
    if label == "thyroid_tumor":
        nod_radius = _lerp(5.5, 13.0, sev) * float(rng.uniform(0.85, 1.15))
        grow = 1.0 + 0.3 * sev
        if nodule_side == "right":
            up.size_r *= grow
        else:
            up.size_l *= grow
    return nodule_side, nod_radius


def _gland(
    rng: np.random.Generator,
    pose: _Pose,
    up: _Uptake,
    sev: float,
    nodule_side: str,
    nod_radius: float,
) -> tuple[tuple[Blob, Blob], Blob, Blob | None]:
    """((right lobe, left lobe), isthmus, pyramidal lobe or None)."""
    tx, ty, rot = pose.tx, pose.ty, pose.rot
    lobes: list[Blob] = []
    for side, size, act in (("right", up.size_r, up.act_r), ("left", up.size_l, up.act_l)):
        sign = -1.0 if side == "right" else 1.0
        a, b = pose.half_wid * size, pose.half_len * size
        if side == nodule_side and nod_radius > 0:
            a, b = max(a, 1.1 * nod_radius), max(b, 1.6 * nod_radius)
        cx, cy = _rotate(tx + sign * (pose.gap + 0.9 * a), ty, tx, ty, rot)
        lobes.append(Blob(cx, cy, a, b, theta=rot - sign * pose.tilt, peak=act, pear=pose.pear))
    right, left = lobes
    isthmus_y = ty + 0.45 * pose.half_len
    ix, iy = _rotate(tx, isthmus_y, tx, ty, rot)
    isthmus = Blob(
        ix,
        iy,
        a=float(rng.uniform(3.0, 6.0)) * up.scale,
        b=0.5 * math.hypot(left.cx - right.cx, left.cy - right.cy) + 0.3 * pose.half_wid,
        theta=rot + math.pi / 2.0,
        peak=up.isthmus_peak * 0.5 * (up.act_r + up.act_l),
    )
    pyr: Blob | None = None
    if up.pyramidal:
        plen = float(rng.uniform(6.0, 13.0)) * up.scale
        px, py = _rotate(tx + float(rng.uniform(-7.0, 3.0)), isthmus_y - plen, tx, ty, rot)
        pyr = Blob(px, py, float(rng.uniform(2.2, 3.5)), plen, theta=rot, peak=0.5 + 0.2 * sev)
    return (right, left), isthmus, pyr


def _nodule(
    label: str,
    rng: np.random.Generator,
    sev: float,
    nodule_side: str,
    nod_radius: float,
    host: Blob,
) -> Nodule | None:
    """A tumour's nodule inside its host lobe: cold (3 in 4) or hot, perhaps suppressing."""
    if label != "thyroid_tumor":
        return None
    u = float(rng.uniform(-0.3, 0.3)) * host.a
    v = float(rng.uniform(-0.5, 0.5)) * host.b
    c, s = math.cos(host.theta), math.sin(host.theta)
    nx, ny = host.cx + c * u + s * v, host.cy - s * u + c * v
    if rng.uniform() < 0.25:
        suppressed = bool(rng.uniform() < 0.5 * sev)
        return Nodule(
            "hot",
            nodule_side,
            nx,
            ny,
            nod_radius,
            contrast=_lerp(0.6, 2.0, sev) * host.peak,
            suppression=float(rng.uniform(0.05, 0.35)) if suppressed else 1.0,
        )
    return Nodule("cold", nodule_side, nx, ny, nod_radius, _lerp(0.6, 0.97, sev), 1.0)


def _salivary_glands(
    rng: np.random.Generator, tx: float, ty: float
) -> tuple[tuple[Blob, Blob], tuple[Blob, Blob], float]:
    """(parotids, submandibular glands, the parotids' height above the gland in mm)."""
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
    return (parotids[0], parotids[1]), (submand[0], submand[1]), par_dy


def _mouth(rng: np.random.Generator, tx: float, ty: float, par_dy: float) -> Blob | None:
    """Tracer in the mouth (saliva), in 7 of 10 patients."""
    if rng.uniform() < 0.7:
        return Blob(
            tx + float(rng.normal(0.0, 3.0)),
            ty - par_dy - float(rng.uniform(0.0, 10.0)),
            float(rng.uniform(14.0, 24.0)),
            float(rng.uniform(5.0, 10.0)),
            peak=float(rng.uniform(0.2, 0.9)),
        )
    return None


def _oesophagus(rng: np.random.Generator, tx: float, ty: float, d: float) -> Blob | None:
    """Swallowed tracer in the oesophagus, more often at high difficulty."""
    if rng.uniform() < 0.08 + 0.12 * d:
        length = float(rng.uniform(40.0, 65.0))
        return Blob(
            tx + float(rng.uniform(-2.0, 6.0)),
            ty - 10.0 + float(rng.uniform(-5.0, 15.0)),
            float(rng.uniform(2.0, 3.5)),
            length,
            peak=float(rng.uniform(0.15, 0.5)),
        )
    return None


def _marker(rng: np.random.Generator, tx: float, ty: float) -> tuple[Blob | None, str | None]:
    """A point source on the sternal notch or the chin, in 12 of 100 images: (blob, kind)."""
    if rng.uniform() < 0.12:
        if rng.uniform() < 0.6:
            marker_kind, my = "sternal_notch", ty + float(rng.uniform(32.0, 45.0))
        else:
            marker_kind, my = "chin", ty - float(rng.uniform(70.0, 80.0))
        return Blob(tx + float(rng.normal(0.0, 2.0)), my, 2.5, 2.5), marker_kind
    return None, None


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
