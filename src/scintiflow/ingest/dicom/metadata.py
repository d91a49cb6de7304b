"""The non-pixel facts an `ImageRecord` reports: spacing, patient hash, tracer, collimator.

None of them rejects a file: a missing or unusable value reads as None, and the data checks
decide what a missing fact means.
"""

from __future__ import annotations

import math

from pydicom.dataset import Dataset

from scintiflow.domain import hash_identifier
from scintiflow.ingest.dicom.values import element_value, sequence_items, str_value


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm from Pixel Spacing, else Imager Pixel Spacing."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = element_value(ds, keyword)
        if value is None:
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0:
            return (row, col)
    return None


def patient_hash(ds: Dataset, key: bytes | None) -> str | None:
    """Keyed one-way hash of the Patient ID; the ID itself is never kept.

    None without a Patient ID, and None when the caller passes no key (it does not need
    the hash): there is no built-in key to fall back to.
    """
    if key is None:
        return None
    patient_id = str_value(ds, "PatientID")
    return hash_identifier(patient_id, key) if patient_id else None


def radiopharmaceutical(ds: Dataset) -> str | None:
    """Radiopharmaceutical name, else its code meaning, else the radionuclide's meaning."""
    for item in sequence_items(ds, "RadiopharmaceuticalInformationSequence"):
        if name := str_value(item, "Radiopharmaceutical"):
            return name
        for keyword in ("RadiopharmaceuticalCodeSequence", "RadionuclideCodeSequence"):
            for code in sequence_items(item, keyword):
                if meaning := str_value(code, "CodeMeaning"):
                    return meaning
    return None


def collimator(ds: Dataset, detector_item: Dataset | None) -> str | None:
    """Collimator Type (defined terms such as PINH, PARA), else the collimator's name.

    The type comes first because it is a defined term the data checks can test; the free
    text name is the fallback. The frame's own detector item wins over top-level tags.
    """
    sources = [detector_item] if detector_item is not None else []
    sources.append(ds)
    for source in sources:
        for keyword in ("CollimatorType", "CollimatorGridName"):
            if text := str_value(source, keyword):
                return text
    return None
