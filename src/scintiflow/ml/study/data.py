"""The study's data in memory: labelled images in three patient-disjoint sets.

`StudyData` is what every protocol step reads (see `scintiflow.ml.study.protocol`); it is built
by `simulate_study_data` (the simulator) or `load_study_data` / `load_exports` (labelled
exports). No patient identifier is kept: patients are carried as keyed hashes (`group`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from scintiflow import CLASSES

if TYPE_CHECKING:
    from scintiflow.sim import ImageRegions

STUDY_SHAPE: dict[str, int] = {"train": 2067, "internal": 514, "external": 613}
"""Image counts of the published study: training and internal sets from the training
centres, the external set from another centre."""

INTERNAL_FRACTION = STUDY_SHAPE["internal"] / (STUDY_SHAPE["train"] + STUDY_SHAPE["internal"])


class StudyDataError(ValueError):
    """Study inputs are unusable; `reason` is a stable lower_snake code."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StudyImage:
    """One labelled image in memory. `group` is a keyed hash of the patient, never the ID.

    `regions` is the simulator's ground truth (nodule, lobes, salivary glands on the image's
    pixel grid) for simulated images; None for real exports.
    """

    key: str
    label: int
    group: str
    site: str
    pixels: np.ndarray = field(repr=False)  # (rows, cols) counts
    sha256: str
    pixel_spacing_mm: float | None = None
    regions: ImageRegions | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class StudyData:
    """The three sets of a study plus provenance (hashes, skipped inputs)."""

    train: list[StudyImage]
    internal: list[StudyImage]
    external: list[StudyImage]
    labels_sha256: dict[str, str]
    source: dict[str, Any]
    skipped: dict[str, int] = field(default_factory=dict)  # reason code -> count

    def counts(self) -> dict[str, Any]:
        """Images per split, site and class (what the report's dataset table shows)."""
        out: dict[str, Any] = {}
        for name, part in (
            ("train", self.train),
            ("internal", self.internal),
            ("external", self.external),
        ):
            out[name] = {
                "n": len(part),
                "patients": len({im.group for im in part}),
                "sites": dict(sorted(Counter(im.site for im in part).items())),
                "classes": {c: sum(im.label == i for im in part) for i, c in enumerate(CLASSES)},
            }
        out["skipped"] = dict(self.skipped)
        return out


def study_arrays(part: Sequence[StudyImage]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(count images, labels as int64, patient groups) of one set."""
    return (
        [im.pixels for im in part],
        np.array([im.label for im in part], dtype=np.int64),
        np.array([im.group for im in part]),
    )


def patient_holdout(
    groups: Sequence[str], y: Sequence[int], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rest, holdout) indices: whole patients, about `fraction` of images, per class."""
    g = np.asarray(groups)
    yy = np.asarray(y)
    rng = np.random.default_rng(seed)
    hold = np.zeros(len(g), dtype=bool)
    # Stratify by the patient's class (all images of a patient share it).
    first_label = dict(zip(g[::-1].tolist(), yy[::-1].tolist(), strict=True))
    by_class: dict[int, list[str]] = {}
    for grp in sorted(first_label):
        by_class.setdefault(int(first_label[grp]), []).append(grp)
    sizes = Counter(g.tolist())
    for cls in sorted(by_class):
        pats = by_class[cls]
        rng.shuffle(pats)
        target = fraction * sum(sizes[p] for p in pats)
        taken = 0
        chosen: set[str] = set()
        for p in pats:
            if taken >= target - 0.5 * sizes[p]:
                break
            chosen.add(p)
            taken += sizes[p]
        hold |= np.isin(g, list(chosen))
    return np.flatnonzero(~hold), np.flatnonzero(hold)
