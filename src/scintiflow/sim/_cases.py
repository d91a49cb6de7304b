"""Simulated patients and their labelled count images."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from scintiflow import CLASSES
from scintiflow.sim._anatomy import Anatomy
from scintiflow.sim._draw import draw_anatomy, follow_up
from scintiflow.sim._regions import ImageRegions, image_regions
from scintiflow.sim._render import acquire, region_masks
from scintiflow.sim._sites import SITES, SiteProfile, site_profile

VISITS_PER_PATIENT: tuple[float, float, float] = (0.74, 0.18, 0.08)
"""Probability that a patient has 1, 2 or 3 images (about a quarter have more than one)."""


@dataclass(frozen=True, slots=True, eq=False)
class PhantomCase:
    """One simulated labelled anterior view and what was drawn to make it."""

    label: str
    site: str
    patient_id: str
    image: np.ndarray = field(repr=False)  # (rows, cols) uint16 counts
    anatomy: Anatomy = field(repr=False)
    visit: int = 0  # 0-based index of this image among the patient's images
    n_visits: int = 1
    days_before: int = 0  # acquisition this many days before the export night
    age: int = 45
    sex: str = "F"
    weight_kg: float = 70.0

    @property
    def total_counts(self) -> int:
        """Counts in the image."""
        return int(self.image.sum(dtype=np.int64))

    @property
    def profile(self) -> SiteProfile:
        """The acquisition site's profile."""
        return SITES[self.site]

    @property
    def nodule_kind(self) -> str | None:
        """The lesion kind ("cold" or "hot"); None without a nodule."""
        return None if self.anatomy.nodule is None else self.anatomy.nodule.kind

    @property
    def nodule_center_px(self) -> tuple[float, float] | None:
        """(row, col) of the nodule centre in pixel coordinates, if any."""
        nod = self.anatomy.nodule
        if nod is None:
            return None
        prof = self.profile
        half = (prof.matrix - 1) / 2.0
        return nod.cy / prof.object_spacing_mm + half, nod.cx / prof.object_spacing_mm + half

    @property
    def nodule_radius_px(self) -> float | None:
        """Nodule radius in pixels, if any."""
        nod = self.anatomy.nodule
        return None if nod is None else nod.radius_mm / self.profile.object_spacing_mm

    def masks(self) -> dict[str, np.ndarray]:
        """Regions of interest (see `region_masks`)."""
        return region_masks(self.anatomy, self.profile)

    def regions(self) -> ImageRegions:
        """The diagnostic regions on the image's pixel grid (see `image_regions`)."""
        return image_regions(self.anatomy, self.profile)


def simulate_case(
    label: str, site: str, rng: np.random.Generator, *, difficulty: float = 0.5
) -> np.ndarray:
    """One new patient's anterior count image (uint16, rows x cols) for `label` at `site`."""
    prof = site_profile(site)
    return acquire(draw_anatomy(label, prof, rng, difficulty), prof, rng)


def cohort_tag(*entropy: object) -> str:
    """Six hex digits naming a simulated cohort, so patient IDs differ between cohorts."""
    text = ":".join(str(e) for e in entropy)
    return hashlib.sha256(text.encode()).hexdigest()[:6].upper()


def class_probabilities(
    prof: SiteProfile, class_weights: Mapping[str, float] | Sequence[float] | None
) -> np.ndarray:
    """Class probabilities at a site: its prior, or `class_weights` (normalised) instead."""
    if class_weights is None:
        w = np.asarray(prof.class_prior, dtype=np.float64)
    elif isinstance(class_weights, Mapping):
        unknown = set(class_weights) - set(CLASSES)
        if unknown:
            raise ValueError(f"unknown classes in class_weights: {sorted(unknown)}")
        w = np.asarray([float(class_weights.get(c, 0.0)) for c in CLASSES])
    else:
        w = np.asarray([float(v) for v in class_weights], dtype=np.float64)
        if w.shape != (len(CLASSES),):
            raise ValueError(f"class_weights needs {len(CLASSES)} values, in CLASSES order")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("class_weights must be non-negative with a positive sum")
    return w / w.sum()


def iter_cases(
    n: int,
    *,
    sites: Sequence[str],
    entropy: Sequence[int],
    id_prefix: str,
    difficulty: float = 0.5,
    class_weights: Mapping[str, float] | Sequence[float] | None = None,
) -> Iterator[PhantomCase]:
    """Yield `n` images from a stream of patients; patient k uses its own random stream.

    The stream depends only on `entropy`, so the first m cases of a longer run equal a
    shorter run's cases.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if not sites:
        raise ValueError("at least one site is needed")
    profiles = [site_profile(s) for s in sites]
    cohort = np.random.default_rng([*entropy, 1])
    produced = 0
    k = 0
    while produced < n:
        prof = profiles[int(cohort.integers(len(profiles)))]
        label = CLASSES[
            int(cohort.choice(len(CLASSES), p=class_probabilities(prof, class_weights)))
        ]
        n_visits = 1 + int(cohort.choice(3, p=VISITS_PER_PATIENT))
        rng = np.random.default_rng([*entropy, 2, k])
        female = rng.uniform() < (0.6 if label == "normal" else 0.8)
        age = int(np.clip(rng.normal(47.0, 14.0), 18, 90))
        weight = round(float(rng.normal(68.0 if female else 80.0, 11.0)), 1)
        gaps = rng.integers(30, 200, size=n_visits - 1)  # days between consecutive visits
        days_before = [int(gaps[v:].sum()) for v in range(n_visits)]
        first = draw_anatomy(label, prof, rng, difficulty)
        pid = f"{id_prefix}-{k + 1:04d}"
        for visit in range(n_visits):
            if produced >= n:
                break
            an = first if visit == 0 else follow_up(first, prof, rng, difficulty)
            yield PhantomCase(
                label=label,
                site=prof.name,
                patient_id=pid,
                image=acquire(an, prof, rng),
                anatomy=an,
                visit=visit,
                n_visits=n_visits,
                days_before=days_before[visit],
                age=age,
                sex="F" if female else "M",
                weight_kg=weight,
            )
            produced += 1
        k += 1


def simulate_cases(
    n: int,
    *,
    sites: Sequence[str] = ("A", "B"),
    seed: int = 0,
    difficulty: float = 0.5,
    class_weights: Mapping[str, float] | Sequence[float] | None = None,
) -> list[PhantomCase]:
    """`n` labelled images from a seeded patient cohort spread evenly over `sites`.

    Classes follow each site's prior unless `class_weights` (a mapping label -> weight or
    four weights in CLASSES order) replaces it. About a quarter of patients have 2-3 images
    (same label and site), so splits must group by patient.
    """
    tag = cohort_tag("cases", seed)
    return list(
        iter_cases(
            n,
            sites=sites,
            entropy=(seed, 0),
            id_prefix=f"SIM-{tag}",
            difficulty=difficulty,
            class_weights=class_weights,
        )
    )
