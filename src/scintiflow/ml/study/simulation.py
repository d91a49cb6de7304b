"""A simulated multicentre study of the published study's shape, and simulated readers.

data = simulate_study_data(scale=0.1)          # train+internal from sites A+B, external C
reads = simulated_reader_reads(data)           # `simulated-junior` / `simulated-senior`
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from scintiflow import CLASSES
from scintiflow.domain import hash_identifier, sha256_hex
from scintiflow.ml.study.data import (
    INTERNAL_FRACTION,
    STUDY_SHAPE,
    StudyData,
    StudyImage,
    patient_holdout,
)

if TYPE_CHECKING:
    from scintiflow.ml.readers import ReaderRead


def _study_images(cases: Sequence[Any], group_key: bytes) -> list[StudyImage]:
    """Simulated cases as study images: keys are content hashes, patients keyed hashes; each
    carries its regions (ground truth for the localisation metrics)."""
    out = []
    for c in cases:
        digest = sha256_hex(c.image.tobytes())
        out.append(
            StudyImage(
                key=f"sim/site-{c.site}/{digest[:24]}",
                label=CLASSES.index(c.label),
                group=hash_identifier(c.patient_id, group_key),
                site=c.site,
                pixels=c.image,
                sha256=digest,
                pixel_spacing_mm=c.profile.pixel_spacing_mm,
                regions=c.regions(),
            )
        )
    return out


def _set_hash(part: Sequence[StudyImage]) -> str:
    return sha256_hex("\n".join(f"{im.key},{CLASSES[im.label]}" for im in part).encode())


def simulate_study_data(
    scale: float = 0.1,
    *,
    seed: int = 0,
    difficulty: float = 0.5,
    internal_sites: Sequence[str] = ("A", "B"),
    external_sites: Sequence[str] = ("C",),
    group_key: bytes = b"scintiflow-study",
) -> StudyData:
    """A multicentre dataset of the study's shape, scaled: train+internal from A+B, external C.

    The internal set is a patient-disjoint holdout from the training centres; the external
    cohort is drawn from other patients at a centre never trained on. `group_key` hashes the
    simulator's patient IDs (they are not PHI, but are hashed like real ones).
    """
    from scintiflow.sim import simulate_cases

    if scale <= 0:
        raise ValueError("scale must be > 0")
    n_ab = max(8, round((STUDY_SHAPE["train"] + STUDY_SHAPE["internal"]) * scale))
    n_c = max(4, round(STUDY_SHAPE["external"] * scale))
    ab = _study_images(
        simulate_cases(n_ab, sites=tuple(internal_sites), seed=seed, difficulty=difficulty),
        group_key,
    )
    ext = _study_images(
        simulate_cases(n_c, sites=tuple(external_sites), seed=seed + 1, difficulty=difficulty),
        group_key,
    )
    rest, hold = patient_holdout(
        [im.group for im in ab], [im.label for im in ab], INTERNAL_FRACTION, seed
    )
    train = [ab[i] for i in rest]
    internal = [ab[i] for i in hold]
    return StudyData(
        train=train,
        internal=internal,
        external=ext,
        labels_sha256={
            "train": _set_hash(train),
            "internal": _set_hash(internal),
            "external": _set_hash(ext),
        },
        source={
            "kind": "simulated",
            "scale": scale,
            "seed": seed,
            "difficulty": difficulty,
            "internal_sites": list(internal_sites),
            "external_sites": list(external_sites),
        },
    )


def simulated_reader_reads(data: StudyData, seed: int = 0) -> list[ReaderRead]:
    """Demo reads (clearly labelled `simulated-...`) of the internal and external sets."""
    from scintiflow.ml.readers import SIMULATED_READERS, simulate_reads

    part = data.internal + data.external
    keys = [im.key for im in part]
    labels = [CLASSES[im.label] for im in part]
    reads: list[ReaderRead] = []
    for i, (reader_id, acc) in enumerate(sorted(SIMULATED_READERS.items())):
        reads += simulate_reads(
            keys, labels, reader_id=reader_id, per_class_accuracy=acc, seed=seed + i
        )
    return reads
