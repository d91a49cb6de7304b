"""Labelled exports -> `StudyData`: the labels CSV, decoding, the internal holdout.

    spec = RetrainData(data_url, labels_url, external_url, external_labels_url, readers_url)
    data = load_exports(spec, open_store, preferred_view="anterior", workers=0, group_key=key)

`RetrainData` names the data by URL only (a safe Prefect parameter). The group key (the PHI
hash key) is always passed in by the caller, which reads it from the settings: no function
here has a default for it. Files that fail to decode are skipped and counted by reason code.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scintiflow import CLASSES
from scintiflow.domain import hash_identifier, sha256_hex
from scintiflow.ml.study.data import (
    INTERNAL_FRACTION,
    StudyData,
    StudyDataError,
    StudyImage,
    patient_holdout,
)

if TYPE_CHECKING:
    from scintiflow.ml.readers import ReaderRead
    from scintiflow.sim import ImageRegions
    from scintiflow.storage import ObjectStore

LogFn = Callable[[str], None]
StoreOpener = Callable[[str], "ObjectStore"]
"""URL -> store (`scintiflow.storage.open_store`, or a caller's per-process cache of it)."""


@dataclass(frozen=True)
class RetrainData:
    """Where the labelled data live (URLs only: a safe task parameter)."""

    data: str
    labels: str
    external_data: str | None = None
    external_labels: str | None = None
    readers: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class LabelRow:
    """One row of a labels CSV (the patient ID is hashed on read)."""

    key: str
    label: int
    group: str
    site: str


def read_labels_csv(data: bytes, *, group_key: bytes) -> list[LabelRow]:
    """Parse `key,label,patient_id[,site]`; patient IDs are hashed at once and never kept."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise StudyDataError("labels CSV is not UTF-8 text", reason="not_utf8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in ("key", "label", "patient_id") if c not in header]
    if missing:
        raise StudyDataError(
            f"labels CSV lacks column(s) {', '.join(missing)} (needs key,label,patient_id)",
            reason="missing_column",
        )
    reader.fieldnames = header
    lookup = {c: i for i, c in enumerate(CLASSES)}
    rows: list[LabelRow] = []
    seen: set[str] = set()
    for line, row in enumerate(reader, start=2):
        key = (row.get("key") or "").strip()
        label = (row.get("label") or "").strip().lower()
        pid = (row.get("patient_id") or "").strip()
        if not key or not pid:
            raise StudyDataError(f"line {line}: empty key or patient_id", reason="empty_field")
        if label not in lookup:
            raise StudyDataError(f"line {line}: unknown label", reason="unknown_label")
        if key in seen:
            raise StudyDataError(f"line {line}: key {key!r} listed twice", reason="duplicate_key")
        seen.add(key)
        rows.append(
            LabelRow(
                key=key,
                label=lookup[label],
                group=hash_identifier(pid, group_key),
                site=(row.get("site") or "").strip() or "unknown",
            )
        )
    return rows


def _decode_rows(
    store: ObjectStore,
    rows: Sequence[LabelRow],
    *,
    workers: int,
    preferred_view: str,
    group_key: bytes,
    skipped: Counter[str],
    log: LogFn | None,
    regions: dict[str, tuple[str, ImageRegions]] | None = None,
) -> list[StudyImage]:
    """Decode the labelled keys; failures are skipped and counted by reason code.

    `regions` (key -> (file SHA-256, regions)) attaches ground truth to images whose bytes
    match the hash the sidecar was written for.
    """
    from scintiflow.ingest.objects import decode_objects

    out: list[StudyImage] = []
    decoded = decode_objects(
        store,
        [r.key for r in rows],
        workers=workers,
        preferred_view=preferred_view,
        patient_hash_key=group_key,
    )
    for row, item in zip(rows, decoded, strict=True):
        if item.record is None or item.sha256 is None:
            skipped[item.reason or "unreadable"] += 1
            continue
        rec = item.record
        if rec.modality != "NM":
            skipped["not_nm_modality"] += 1
            continue
        truth = (regions or {}).get(row.key)
        out.append(
            StudyImage(
                key=row.key,
                label=row.label,
                group=row.group,
                site=row.site,
                pixels=rec.pixels,
                sha256=item.sha256,
                pixel_spacing_mm=None if rec.pixel_spacing_mm is None else rec.pixel_spacing_mm[0],
                regions=truth[1] if truth is not None and truth[0] == item.sha256 else None,
            )
        )
    if log is not None and skipped:
        log("skipped inputs: " + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())))
    return out


def read_url(url: str, opener: StoreOpener | None = None) -> bytes:
    """The bytes of one object named by a URL (`file://`, a path, or `s3://bucket/key`).

    `opener` opens the store holding it (default: `scintiflow.storage.open_store`).
    """
    from scintiflow.storage import open_store

    base, _, key = url.rstrip("/").rpartition("/")
    if not key:
        raise StudyDataError(f"{url!r} does not name an object", reason="bad_url")
    return (opener or open_store)(base or ".").get(key)


def load_study_data(
    store: ObjectStore,
    labels: bytes,
    *,
    group_key: bytes,
    external_store: ObjectStore | None = None,
    external_labels: bytes | None = None,
    internal_fraction: float = INTERNAL_FRACTION,
    seed: int = 0,
    workers: int = 0,
    preferred_view: str = "anterior",
    log: LogFn | None = None,
    regions: Sequence[bytes] = (),
) -> StudyData:
    """Decode labelled exports into a study: a patient-disjoint internal holdout of the
    training labels, and an external set when external labels are given.

    Files that fail to decode are skipped and counted by reason code (`StudyData.skipped`).
    `regions` holds simulated nights' region sidecars (`labels/<night>.regions.jsonl`): an
    image whose key and SHA-256 match a line carries its regions (`StudyImage.regions`).
    """
    skipped: Counter[str] = Counter()
    truth: dict[str, tuple[str, ImageRegions]] = {}
    if regions:
        from scintiflow.sim import read_regions_jsonl

        for sidecar in regions:
            truth.update((e.key, (e.sha256, e.regions)) for e in read_regions_jsonl(sidecar))

    def decode(source: ObjectStore, csv_bytes: bytes) -> list[StudyImage]:
        return _decode_rows(
            source,
            read_labels_csv(csv_bytes, group_key=group_key),
            workers=workers,
            preferred_view=preferred_view,
            group_key=group_key,
            skipped=skipped,
            log=log,
            regions=truth,
        )

    images = decode(store, labels)
    if not images:
        raise StudyDataError("no labelled image could be decoded", reason="no_usable_images")
    rest, hold = patient_holdout(
        [im.group for im in images], [im.label for im in images], internal_fraction, seed
    )
    external: list[StudyImage] = []
    hashes = {"train": sha256_hex(labels)}
    if external_labels is not None:
        external = decode(external_store or store, external_labels)
        hashes["external"] = sha256_hex(external_labels)
        overlap = {im.group for im in external} & {im.group for im in images}
        if overlap:
            raise StudyDataError(
                f"{len(overlap)} patient(s) are in both the training and external labels",
                reason="patient_overlap",
            )
    return StudyData(
        train=[images[i] for i in rest],
        internal=[images[i] for i in hold],
        external=external,
        labels_sha256=hashes,
        source={"kind": "store", "internal_fraction": internal_fraction, "seed": seed},
        skipped=dict(skipped),
    )


def labels_fingerprint(spec: RetrainData, opener: StoreOpener) -> str:
    """SHA-256 over the labels files `spec` names: a cache key that changes with the labels."""
    parts = [read_url(spec.labels, opener)]
    if spec.external_labels:
        parts.append(read_url(spec.external_labels, opener))
    return sha256_hex(b"\0".join(sha256_hex(p).encode() for p in parts))


def load_exports(
    spec: RetrainData,
    opener: StoreOpener,
    *,
    preferred_view: str,
    workers: int,
    group_key: bytes,
) -> StudyData:
    """The study data behind `spec`: its labels read and its exports decoded (no caching)."""
    return load_study_data(
        opener(spec.data),
        read_url(spec.labels, opener),
        external_store=opener(spec.external_data) if spec.external_data else None,
        external_labels=read_url(spec.external_labels, opener) if spec.external_labels else None,
        seed=spec.seed,
        workers=workers,
        preferred_view=preferred_view,
        group_key=group_key,
    )


def read_reader_reads(spec: RetrainData, opener: StoreOpener) -> list[ReaderRead] | None:
    """The readers CSV `spec` names, parsed; None when it names none."""
    from scintiflow.ml.readers import read_readers_csv

    return read_readers_csv(read_url(spec.readers, opener)) if spec.readers else None
