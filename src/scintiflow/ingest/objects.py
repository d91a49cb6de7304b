"""Read a night's exports from the store and decode them, never losing a file.

Each listed key becomes exactly one `DecodedObject`: a record, or a reason code for why there
is none (a decode failure or a storage error). Later steps (checks, scoring) build on this.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Final, TypeVar

from scintiflow.domain import ImageRecord, sha256_hex
from scintiflow.ingest.dicom import DecodeError, DicomHeader, decode_dicom
from scintiflow.storage import ObjectStore, StoreError

T = TypeVar("T")
R = TypeVar("R")

MAX_OBJECT_BYTES: Final = 64 * 2**20
"""The largest object read whole (64 MiB): a planar NM view is well under 1 MiB, so anything
larger is refused with `too_large` before it is fetched (a deflated dataset is inflated to at
most the same size: `scintiflow.ingest.dicom.MAX_INFLATED_BYTES`)."""

TOO_LARGE: Final = "too_large"


@dataclass(frozen=True, slots=True)
class DecodedObject:
    """The outcome for one stored object: `record` when it decoded, else `reason`.

    `header` is the non-PHI format summary of a file that failed to decode but was parsed far
    enough to have one (modality, matrix, bits, ...), so the data checks can still describe
    it; it is None for successful decodes (the record holds those facts) and for files that
    are not DICOM at all or could not be read.

    `storage_error` is True when the store failed to give the bytes for a reason that is not a
    property of the object (missing, S3 errors, I/O errors): such an input is retried, listed
    as `storage_error` and never quarantined. Input faults of the store (a symlink, an invalid
    key) are ordinary reasons and quarantine the input.
    """

    key: str
    size: int
    sha256: str | None
    record: ImageRecord | None
    reason: str | None = None
    message: str | None = None
    header: DicomHeader | None = None
    storage_error: bool = False

    @property
    def ok(self) -> bool:
        return self.record is not None


def night_prefix(night: date | str, exports_prefix: str = "exports") -> str:
    """The key prefix of one night's exports, e.g. `exports/2026-11-27/`."""
    day = night if isinstance(night, str) else night.isoformat()
    date.fromisoformat(day)  # reject anything that is not YYYY-MM-DD
    return f"{exports_prefix}/{day}/"


def read_object(
    store: ObjectStore,
    key: str,
    *,
    patient_hash_key: bytes,
    preferred_view: str = "anterior",
    max_bytes: int = MAX_OBJECT_BYTES,
    pin: str = "",
) -> tuple[DecodedObject, bytes | None]:
    """Fetch, hash and decode one object once: its outcome and its bytes (None when the
    store could not give them). Storage and decode failures become reason codes.

    `patient_hash_key` keys the Patient ID hash (production: the settings' PHI hash key).
    An object larger than `max_bytes` is not fetched: one ranged read of the byte just past
    the limit proves it too large (`too_large`, no bytes, no hash); one that grew past the
    limit between that probe and the fetch is refused the same way. `pin`: the listing's
    fingerprint; both reads are conditional on it (`changed_since_listing`, a storage error,
    when the object was replaced after the listing).
    """
    if max_bytes < 1:
        raise ValueError("max_bytes must be positive")
    try:
        if store.get_range(key, max_bytes, 1, if_match=pin):
            return _too_large(key, max_bytes), None
        data = store.get(key, if_match=pin)
    except StoreError as exc:
        failed = DecodedObject(
            key, 0, None, None, exc.reason, str(exc), storage_error=not exc.input_fault
        )
        return failed, None
    if len(data) > max_bytes:
        return _too_large(key, max_bytes), None
    digest = sha256_hex(data)
    try:
        record = decode_dicom(
            data, preferred_view=preferred_view, patient_hash_key=patient_hash_key
        )
    except DecodeError as exc:
        failed = DecodedObject(
            key, len(data), digest, None, str(exc.reason), exc.message, header=exc.header
        )
        return failed, data
    return DecodedObject(key, len(data), digest, record), data


def _too_large(key: str, max_bytes: int) -> DecodedObject:
    """The outcome of an object over the size limit: an input fault, never read whole."""
    message = f"The object is larger than the {max_bytes} byte limit; it was not read."
    return DecodedObject(key, 0, None, None, TOO_LARGE, message)


def decode_object(
    store: ObjectStore,
    key: str,
    *,
    patient_hash_key: bytes,
    preferred_view: str = "anterior",
) -> DecodedObject:
    """`read_object` without the bytes."""
    obj, _ = read_object(
        store, key, patient_hash_key=patient_hash_key, preferred_view=preferred_view
    )
    return obj


def decode_objects(
    store: ObjectStore,
    keys: Iterable[str],
    *,
    patient_hash_key: bytes,
    workers: int = 0,
    preferred_view: str = "anterior",
) -> Iterator[DecodedObject]:
    """Decode many objects in a thread pool, yielding results in input order as they finish."""

    def one(key: str) -> DecodedObject:
        return decode_object(
            store, key, preferred_view=preferred_view, patient_hash_key=patient_hash_key
        )

    return bounded_map(one, keys, workers=workers or os.cpu_count() or 1)


def bounded_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int) -> Iterator[R]:
    """`map` over a thread pool with at most `4 * workers` items in flight, order preserved.

    Unlike `Executor.map` it does not submit the whole input up front, so a night of many
    thousand files streams through in bounded memory.
    """
    window = max(1, 4 * workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
