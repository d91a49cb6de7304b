"""The drawn neck of one acquisition: blobs, a nodule, uptake ratios (`Anatomy`).

Coordinates are millimetres at the object plane: x grows towards the image right (the
patient's left on an anterior view), y grows towards the feet, (0, 0) is the image centre.
Drawing (`scintiflow.sim._draw`) is the only random step besides the Poisson noise;
rendering (`scintiflow.sim._render`) is a pure function of an `Anatomy` and a site, so tests
and evaluations can re-render noise-free maps and region masks from a stored case.
`oblique` derives another view of the same neck.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


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
