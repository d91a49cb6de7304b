"""Acquisition site profiles: camera, collimator, matrix and case mix per (synthetic) centre.

Pinhole images are magnified: the header's Pixel Spacing is the detector pixel size, and the
gland appears `magnification` times larger than at a Pixel Spacing scale (as on real pinhole
scans, where object size depends on the distance to the aperture).
"""

from __future__ import annotations

from dataclasses import dataclass

from scintiflow import CLASSES


@dataclass(frozen=True, slots=True)
class SiteProfile:
    """One imaging centre's camera set-up and case mix (all names are synthetic)."""

    name: str
    matrix: int  # rows == cols
    pixel_spacing_mm: float  # as written to (0028,0030): detector pixel size after zoom
    magnification: float  # pinhole: image size / object size at the gland depth
    blur_fwhm_mm: float  # system resolution at the gland depth (aperture + intrinsic), object mm
    counts_range: tuple[int, int]  # total counts per view, drawn per image
    manufacturer: str
    model: str
    institution: str
    station: str
    radionuclide: str  # "Tc-99m" or "I-123"
    collimator_name: str
    collimator_type: str  # DICOM (0018,1181) defined term: PINH = pinhole
    pinhole_aperture_mm: float
    focal_distance_mm: int  # pinhole cone length, (0018,1182)
    class_prior: tuple[float, float, float, float]  # in CLASSES order

    @property
    def object_spacing_mm(self) -> float:
        """Pixel size at the gland: a pinhole magnifies, so it is smaller than Pixel Spacing."""
        return self.pixel_spacing_mm / self.magnification

    @property
    def fov_mm(self) -> float:
        """Edge length of the square field of view at the object plane."""
        return self.matrix * self.object_spacing_mm

    @property
    def blur_sigma_px(self) -> float:
        """Gaussian sigma of the system blur, in pixels."""
        return self.blur_fwhm_mm / 2.3548 / self.object_spacing_mm

    def prior(self) -> dict[str, float]:
        """The class prior as a mapping label -> probability."""
        return dict(zip(CLASSES, self.class_prior, strict=True))


SITES: dict[str, SiteProfile] = {
    "A": SiteProfile(
        name="A",
        matrix=128,
        pixel_spacing_mm=1.8,
        magnification=1.35,
        blur_fwhm_mm=6.5,
        counts_range=(80_000, 300_000),
        manufacturer="SIMULATED Gamma Systems",
        model="SimCam 400 Pinhole",
        institution="SIM University Hospital A",
        station="SIMNM-A1",
        radionuclide="Tc-99m",
        collimator_name="PINHOLE 4MM",
        collimator_type="PINH",
        pinhole_aperture_mm=4.0,
        focal_distance_mm=250,
        class_prior=(0.34, 0.26, 0.14, 0.26),
    ),
    "B": SiteProfile(
        name="B",
        matrix=128,
        pixel_spacing_mm=2.2,
        magnification=1.3,
        blur_fwhm_mm=9.5,
        counts_range=(50_000, 220_000),
        manufacturer="SYNTHETIC Nuclear Imaging",
        model="SynthoGraph DH-2",
        institution="SIM General Hospital B",
        station="SIMNM-B2",
        radionuclide="Tc-99m",
        collimator_name="PINHOLE 6MM",
        collimator_type="PINH",
        pinhole_aperture_mm=6.0,
        focal_distance_mm=230,
        class_prior=(0.30, 0.30, 0.15, 0.25),
    ),
    "C": SiteProfile(
        name="C",
        matrix=256,
        pixel_spacing_mm=0.75,
        magnification=1.1,
        blur_fwhm_mm=5.0,
        counts_range=(120_000, 400_000),
        manufacturer="PHANTOM Medical Devices",
        model="PhantomSPECT 3",
        institution="SIM External Centre C",
        station="SIMNM-C1",
        radionuclide="I-123",
        collimator_name="PINHOLE 3MM",
        collimator_type="PINH",
        pinhole_aperture_mm=3.0,
        focal_distance_mm=280,
        class_prior=(0.40, 0.20, 0.18, 0.22),
    ),
}
"""Named site profiles. "A" and "B" are the internal centres, "C" the external one."""


def site_profile(site: str | SiteProfile) -> SiteProfile:
    """Resolve a site name to its profile."""
    if isinstance(site, SiteProfile):
        return site
    try:
        return SITES[site]
    except KeyError:
        raise ValueError(f"unknown site {site!r}; known: {sorted(SITES)}") from None
