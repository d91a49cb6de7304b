"""A simulated night of exports: good NM files, varied encodings, faults, and label files."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import numpy as np
from pydicom.uid import JPEG2000Lossless, RLELossless

from scintiflow.domain import sha256_hex
from scintiflow.sim._cases import PhantomCase, cohort_tag, iter_cases
from scintiflow.sim._faults import CARRIES_PATIENT_ID, FAULT_KINDS, fault_file
from scintiflow.sim._nm import SENTINEL_PATIENT_ID, case_to_dicom, case_to_multiview_dicom
from scintiflow.sim._regions import RegionsEntry
from scintiflow.storage.jsonio import jsonl_bytes

ENCODINGS: tuple[str, ...] = ("explicit_le", "rle", "j2k", "multiview")
"""How a good file is stored: plain, RLE Lossless, JPEG 2000 Lossless, or 3-view NM object."""

_FAULT_INDEX_BASE = 1_000_000  # keeps UIDs of fault files apart from those of good files


class PutStore(Protocol):
    """The one store method the simulator needs."""

    def put(self, key: str, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class SimulatedFile:
    """One file of a simulated export night.

    `label`/`patient_id` are None for faults without a label; `patient_id` is the Patient ID
    written in the file (the sentinel in `phi_sentinel` mode). `relative_key` holds no
    identifier: `site-<X>/<first 24 hex of sha256(data)>.dcm` (`.png` for PNG drops).
    """

    relative_key: str
    data: bytes = field(repr=False)
    label: str | None
    patient_id: str | None
    site: str
    fault: str | None
    encoding: str | None = None  # one of ENCODINGS for good files
    case: PhantomCase | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class NightSummary:
    """What `write_night` put into the store."""

    night: date
    exports_prefix: str  # e.g. "exports/2024-05-01"
    images: int  # good, labelled files
    faults: int  # faulty or foreign files
    by_label: dict[str, int]
    by_fault: dict[str, int]
    by_encoding: dict[str, int]
    labels_key: str
    faults_key: str
    regions_key: str

    @property
    def files(self) -> int:
        """All files written under `exports_prefix`."""
        return self.images + self.faults


def bad_file_count(n: int, bad_fraction: float) -> int:
    """Faulty files added to `n` good ones so they make up `bad_fraction` of all files."""
    if not 0.0 <= bad_fraction < 1.0:
        raise ValueError("bad_fraction must lie in [0, 1)")
    return round(n * bad_fraction / (1.0 - bad_fraction))


def _key(site: str, data: bytes, ext: str = "dcm") -> str:
    return f"site-{site}/{sha256_hex(data)[:24]}.{ext}"


def generate_night(
    n: int,
    *,
    night: date,
    sites: Sequence[str] = ("A", "B"),
    seed: int = 0,
    bad_fraction: float = 0.0,
    difficulty: float = 0.5,
    phi_sentinel: bool = False,
    compressed_fraction: float = 0.1,
    multiview_fraction: float = 0.05,
    class_weights: Mapping[str, float] | Sequence[float] | None = None,
) -> Iterator[SimulatedFile]:
    """Yield `n` good labelled files plus `bad_file_count(n, bad_fraction)` faulty ones.

    Faults cycle through FAULT_KINDS in a seeded order, so every kind appears once there are
    at least len(FAULT_KINDS) faulty files. Good files are stored plain (explicit VR little
    endian), except `compressed_fraction` (RLE or JPEG 2000 lossless, half each) and
    `multiview_fraction` (ANT/LAO/RAO object). Files come in a seeded shuffled order. The
    same arguments give the same bytes, and the good files' bytes do not depend on
    `bad_fraction`. Patients (and their IDs) differ between nights and seeds.
    """
    if compressed_fraction < 0.0 or multiview_fraction < 0.0:
        raise ValueError("encoding shares must be >= 0")
    if compressed_fraction + multiview_fraction > 1.0:
        raise ValueError("compressed_fraction + multiview_fraction must be <= 1")
    n_bad = bad_file_count(n, bad_fraction)
    day = night.toordinal()
    tag = cohort_tag("night", seed, night.isoformat())
    good, donors = (
        iter_cases(
            count,
            sites=sites,
            entropy=(seed, day, stream),
            id_prefix=prefix,
            difficulty=difficulty,
            class_weights=class_weights,
        )
        for count, stream, prefix in ((n, 0, f"SIM-{tag}"), (n_bad, 1, f"SIM-{tag}X"))
    )
    kinds, is_bad = _fault_plan(n, n_bad, seed=seed, day=day)
    encodings = _encodings(
        n, seed=seed, day=day, compressed=compressed_fraction, multiview=multiview_fraction
    )
    seen: set[str] = set()
    i_good = i_bad = 0
    for bad in is_bad:
        if bad:
            f = _fault(
                kinds[i_bad],
                next(donors),
                night=night,
                index=i_bad,
                seed=seed,
                sites=sites,
                seen=seen,
                phi_sentinel=phi_sentinel,
            )
            i_bad += 1
        else:
            f = _good(
                next(good),
                encodings[i_good],
                night=night,
                index=i_good,
                seed=seed,
                phi_sentinel=phi_sentinel,
            )
            i_good += 1
        seen.add(f.relative_key)
        yield f


def _fault_plan(n: int, n_bad: int, *, seed: int, day: int) -> tuple[list[str], np.ndarray]:
    """(fault kind of each faulty file, which of the n + n_bad positions are faulty)."""
    plan = np.random.default_rng([seed, day, 3])  # where the faults go and which kinds
    order = plan.permutation(len(FAULT_KINDS))
    kinds = [FAULT_KINDS[int(order[j % len(order)])] for j in range(n_bad)]
    is_bad = np.zeros(n + n_bad, dtype=bool)
    is_bad[plan.choice(n + n_bad, size=n_bad, replace=False)] = True
    return kinds, is_bad


def _encodings(n: int, *, seed: int, day: int, compressed: float, multiview: float) -> list[str]:
    """The encoding of each good file, drawn with the given shares.

    They come from their own stream, so adding faults leaves the good files' bytes alone.
    """
    shares = np.cumsum([multiview, compressed / 2, compressed / 2])
    draws = np.random.default_rng([seed, day, 5]).uniform(size=n)
    return [
        ("multiview", "rle", "j2k", "explicit_le")[int(i)]
        for i in np.searchsorted(shares, draws, side="right")
    ]


def _good(
    case: PhantomCase, encoding: str, *, night: date, index: int, seed: int, phi_sentinel: bool
) -> SimulatedFile:
    """A labelled file in the given encoding."""
    if encoding == "multiview":
        data = case_to_multiview_dicom(
            case, night=night, index=index, seed=seed, phi_sentinel=phi_sentinel
        )
    else:
        data = case_to_dicom(
            case,
            night=night,
            index=index,
            seed=seed,
            phi_sentinel=phi_sentinel,
            transfer_syntax={"rle": RLELossless, "j2k": JPEG2000Lossless}.get(encoding),
        )
    pid = SENTINEL_PATIENT_ID if phi_sentinel else case.patient_id
    return SimulatedFile(
        _key(case.site, data), data, case.label, pid, case.site, None, encoding, case
    )


def _fault(
    kind: str,
    donor: PhantomCase,
    *,
    night: date,
    index: int,
    seed: int,
    sites: Sequence[str],
    seen: set[str],
    phi_sentinel: bool,
) -> SimulatedFile:
    """A faulty file; identical bytes (only `empty` can repeat) move to another site's folder,
    or become random bytes when every folder already has them."""
    rng = np.random.default_rng([seed, night.toordinal(), 4, index])
    data = fault_file(
        kind,
        donor,
        night=night,
        index=_FAULT_INDEX_BASE + index,
        seed=seed,
        rng=rng,
        phi_sentinel=phi_sentinel,
    )
    site = donor.site
    key = _key(site, data, "png" if kind == "png" else "dcm")
    if key in seen:
        free = [s for s in sites if _key(s, data) not in seen]
        if free:
            site, key = free[0], _key(free[0], data)
        else:
            kind, data = "random_bytes", rng.bytes(int(rng.integers(512, 65536)))
            key = _key(site, data)
    pid = None
    if kind in CARRIES_PATIENT_ID:
        pid = SENTINEL_PATIENT_ID if phi_sentinel else donor.patient_id
    return SimulatedFile(key, data, None, pid, site, kind, None, donor)


def _csv(header: Sequence[str], rows: list[tuple[str, ...]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def write_night(
    store: PutStore,
    *,
    night: date,
    n: int,
    sites: Sequence[str] = ("A", "B"),
    seed: int = 0,
    bad_fraction: float = 0.0,
    difficulty: float = 0.5,
    phi_sentinel: bool = False,
    progress: Callable[[int], None] | None = None,
    exports_prefix: str = "exports",
    labels_prefix: str = "labels",
    compressed_fraction: float = 0.1,
    multiview_fraction: float = 0.05,
) -> NightSummary:
    """Simulate a night and put it in `store`; returns what was written.

    Files go to `{exports_prefix}/{night:%Y-%m-%d}/{relative_key}`; ground truth to
    `{labels_prefix}/{night}.csv` (key,label,patient_id,site; key = full store key) and
    faults to `{labels_prefix}/{night}.faults.csv` (key,fault,site; header only if none), and
    the diagnostic regions of every good file's anterior frame to
    `{labels_prefix}/{night}.regions.jsonl` (one `RegionsEntry` per line, keyed by the export
    key and the file's SHA-256; no patient identifier).
    `progress`, when given, is called after each stored file with the number stored so far.
    """
    day = f"{night:%Y-%m-%d}"
    export_prefix = f"{exports_prefix}/{day}"
    labels: list[tuple[str, ...]] = []
    faults: list[tuple[str, ...]] = []
    regions: list[dict[str, object]] = []
    encodings: Counter[str] = Counter()
    for f in generate_night(
        n,
        night=night,
        sites=sites,
        seed=seed,
        bad_fraction=bad_fraction,
        difficulty=difficulty,
        phi_sentinel=phi_sentinel,
        compressed_fraction=compressed_fraction,
        multiview_fraction=multiview_fraction,
    ):
        key = f"{export_prefix}/{f.relative_key}"
        store.put(key, f.data)
        if f.fault is None:
            labels.append((key, str(f.label), str(f.patient_id), f.site))
            if f.case is not None:
                entry = RegionsEntry(
                    key, sha256_hex(f.data), f.site, str(f.label), f.case.regions()
                )
                regions.append(entry.to_json())
            encodings[str(f.encoding)] += 1
        else:
            faults.append((key, f.fault, f.site))
        if progress is not None:
            progress(len(labels) + len(faults))
    labels_key = f"{labels_prefix}/{day}.csv"
    faults_key = f"{labels_prefix}/{day}.faults.csv"
    store.put(labels_key, _csv(("key", "label", "patient_id", "site"), labels))
    regions_key = f"{labels_prefix}/{day}.regions.jsonl"
    store.put(faults_key, _csv(("key", "fault", "site"), faults))
    store.put(regions_key, jsonl_bytes(regions))
    return NightSummary(
        night=night,
        exports_prefix=export_prefix,
        images=len(labels),
        faults=len(faults),
        by_label=dict(Counter(row[1] for row in labels)),
        by_fault=dict(Counter(row[1] for row in faults)),
        by_encoding=dict(encodings),
        labels_key=labels_key,
        faults_key=faults_key,
        regions_key=regions_key,
    )
