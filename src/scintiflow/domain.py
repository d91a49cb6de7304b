"""Frozen value types shared by every step."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np


def hash_identifier(value: str, key: bytes) -> str:
    """A one-way, keyed hash of an identifier (patient ID, SOP Instance UID).

    HMAC-SHA256 rather than a bare SHA-256: patient IDs are short and guessable, so an
    unkeyed hash could be reversed by enumeration. Returns 32 hex characters.
    """
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def sha256_hex(data: bytes) -> str:
    """Content hash used for object keys, the ledger and duplicate detection."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One decoded planar thyroid view: the count image plus the metadata the pipeline needs.

    Holds no patient identifier: `patient_hash` is a keyed one-way hash of the Patient ID.
    """

    pixels: np.ndarray = field(repr=False)  # (rows, cols) float32 counts
    rows: int
    cols: int
    pixel_spacing_mm: tuple[float, float] | None
    modality: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_hash: str | None
    transfer_syntax_uid: str
    bits_allocated: int
    photometric_interpretation: str
    frames: int = 1  # frames in the source object
    frame_index: int = 0  # the frame this record holds
    view: str | None = None  # e.g. "anterior", when the object says so
    radiopharmaceutical: str | None = None
    collimator: str | None = None
    burned_in_annotation: str | None = None  # the (0028,0301) value as written, if any
    image_type: tuple[str, ...] = ()
    total_counts: float = 0.0
    max_count: float = 0.0
    zero_fraction: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)


def utc_now_text() -> str:
    """The current UTC time to the second, ISO 8601 with a Z (2026-11-27T02:00:00Z)."""
    return f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, PHI-free run id: UTC time plus a random suffix (20261127T020000Z-3fa9c2)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
