"""The checks table: one row per input file, no identifiers, no pixels.

Identifiers appear only as presence booleans; duplicate SOP Instance UIDs are found through a
keyed hash computed in memory and never stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from scintiflow.domain import hash_identifier
from scintiflow.ingest.objects import DecodedObject

if TYPE_CHECKING:
    # pandas ships no type stubs here; "unused-ignore" keeps this quiet once they exist
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]


# ---------------------------------------------------------------------------------------
# The checks table

TABLE_COLUMNS: Final[tuple[str, ...]] = (
    "key",
    "sha256",
    "size",
    "decoded",
    "decode_reason",
    "modality",
    "sop_class_uid",
    "rows",
    "cols",
    "frames",
    "bits_allocated",
    "photometric_interpretation",
    "pixel_spacing_row_mm",
    "pixel_spacing_col_mm",
    "pixel_aspect_deviation",
    "field_of_view_mm",
    "total_counts",
    "max_count",
    "zero_fraction",
    "saturated_fraction",
    "count_cv",
    "burned_in_annotation",
    "view",
    "has_patient_id",
    "has_study_uid",
    "has_series_uid",
    "has_sop_instance_uid",
    "has_radiopharmaceutical",
    "duplicate_sop_instance",
    "duplicate_bytes",
)

_INT_COLUMNS: Final = ("size", "rows", "cols", "frames", "bits_allocated")
_BOOL_COLUMNS: Final = (
    "decoded",
    "burned_in_annotation",
    "has_patient_id",
    "has_study_uid",
    "has_series_uid",
    "has_sop_instance_uid",
    "has_radiopharmaceutical",
    "duplicate_sop_instance",
    "duplicate_bytes",
)
_FLOAT_COLUMNS: Final = (
    "pixel_spacing_row_mm",
    "pixel_spacing_col_mm",
    "pixel_aspect_deviation",
    "field_of_view_mm",
    "total_counts",
    "max_count",
    "zero_fraction",
    "saturated_fraction",
    "count_cv",
)


@dataclass
class DuplicateTracker:
    """What a night has seen so far, for duplicate flags across batches.

    Holds content hashes and keyed hashes of SOP Instance UIDs (never the UIDs). The first
    file in processing order (key order) is the original; later ones are duplicates.
    """

    contents: set[str] = field(default_factory=set)
    sop_instances: set[str] = field(default_factory=set)

    def is_duplicate_bytes(self, sha256: str | None) -> bool:
        if sha256 is None:
            return False
        seen = sha256 in self.contents
        self.contents.add(sha256)
        return seen

    def is_duplicate_sop(self, uid_hash: str | None) -> bool:
        if uid_hash is None:
            return False
        seen = uid_hash in self.sop_instances
        self.sop_instances.add(uid_hash)
        return seen


def checks_row(
    obj: DecodedObject,
    *,
    uid_hash_key: bytes,
    tracker: DuplicateTracker,
) -> dict[str, Any]:
    """One table row for one decoded (or failed) object. No identifiers, no pixels."""
    import numpy as np

    row: dict[str, Any] = dict.fromkeys(TABLE_COLUMNS)
    row.update(key=obj.key, sha256=obj.sha256, size=obj.size, decoded=obj.ok)
    row["duplicate_bytes"] = tracker.is_duplicate_bytes(obj.sha256)
    rec = obj.record
    if rec is None:
        row["decode_reason"] = obj.reason or "unreadable_dicom"
        head = obj.header
        if head is not None:
            row.update(
                modality=head.modality,
                sop_class_uid=head.sop_class_uid,
                rows=head.rows,
                cols=head.cols,
                frames=head.frames,
                bits_allocated=head.bits_allocated,
                photometric_interpretation=head.photometric_interpretation,
                burned_in_annotation=_burned_in(head.burned_in_annotation),
            )
        return row

    pixels = rec.pixels  # (rows, cols) float32 counts
    mean = float(pixels.mean(dtype=np.float64))
    std = float(pixels.std(dtype=np.float64))
    spacing = rec.pixel_spacing_mm
    uid_hash = hash_identifier(rec.sop_instance_uid, uid_hash_key) if rec.sop_instance_uid else None
    row.update(
        modality=rec.modality or None,
        sop_class_uid=rec.sop_class_uid or None,
        rows=rec.rows,
        cols=rec.cols,
        frames=rec.frames,
        bits_allocated=rec.bits_allocated,
        photometric_interpretation=rec.photometric_interpretation,
        pixel_spacing_row_mm=None if spacing is None else spacing[0],
        pixel_spacing_col_mm=None if spacing is None else spacing[1],
        pixel_aspect_deviation=None if spacing is None else abs(spacing[0] / spacing[1] - 1.0),
        field_of_view_mm=(
            None if spacing is None else max(rec.rows * spacing[0], rec.cols * spacing[1])
        ),
        total_counts=rec.total_counts,
        max_count=rec.max_count,
        zero_fraction=rec.zero_fraction,
        saturated_fraction=(
            float(np.count_nonzero(pixels == rec.max_count) / pixels.size)
            if rec.max_count > 0
            else 0.0
        ),
        count_cv=std / mean if mean > 0 else 0.0,
        burned_in_annotation=_burned_in(rec.burned_in_annotation),
        view=rec.view,
        has_patient_id=rec.patient_hash is not None,
        has_study_uid=bool(rec.study_instance_uid),
        has_series_uid=bool(rec.series_instance_uid),
        has_sop_instance_uid=bool(rec.sop_instance_uid),
        has_radiopharmaceutical=bool(rec.radiopharmaceutical),
        duplicate_sop_instance=tracker.is_duplicate_sop(uid_hash),
    )
    return row


def _burned_in(value: str | None) -> bool:
    return (value or "").strip().upper() == "YES"


def build_checks_table(
    decoded: Iterable[DecodedObject],
    *,
    uid_hash_key: bytes = b"scintiflow-default-phi-key",
    tracker: DuplicateTracker | None = None,
) -> pd.DataFrame:
    """The checks table: one row per object, in the order given (`TABLE_COLUMNS`).

    Pass the same `tracker` to consecutive batches of one night so duplicates are found
    across batches; a fresh one is used otherwise. Consumes the iterable as a stream, so
    decoded pixels are released row by row.
    """
    tracker = tracker if tracker is not None else DuplicateTracker()
    rows = [checks_row(obj, uid_hash_key=uid_hash_key, tracker=tracker) for obj in decoded]
    return rows_to_table(rows)


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with stable nullable dtypes (so empty batches validate too)."""
    import pandas as pd

    df = pd.DataFrame(list(rows), columns=list(TABLE_COLUMNS))
    for col in _INT_COLUMNS:
        df[col] = df[col].astype("Int64")
    for col in _FLOAT_COLUMNS:
        df[col] = df[col].astype("float64")
    for col in _BOOL_COLUMNS:
        df[col] = df[col].astype("boolean")
    for col in sorted(set(TABLE_COLUMNS) - {*_INT_COLUMNS, *_FLOAT_COLUMNS, *_BOOL_COLUMNS}):
        df[col] = df[col].astype("object")
        df[col] = df[col].where(df[col].notna(), None)
    return df
