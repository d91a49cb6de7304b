"""Identifiers and thumbnails, read from the original DICOM objects at render time only.

They go into the page for the clinical team, never into keys, logs, exceptions or JSON.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from scintiflow.outputs.report.reasons import THUMB_SIZE

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


# --------------------------------------------------------------------------------------------
# Identifiers and thumbnails (read at render time only)


@dataclass(frozen=True)
class Identifiers:
    """What the clinician needs to find the patient and study. PHI: report.html only."""

    patient_name: str = ""
    patient_id: str = ""
    birth_date: str = ""
    sex: str = ""
    accession: str = ""
    study_date: str = ""
    study_description: str = ""


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _person_name(ds: Dataset) -> str:
    raw = _text(ds, "PatientName")
    parts = [p.strip() for p in raw.split("^")]
    if len(parts) == 1:
        return raw
    family, given = parts[0], " ".join(p for p in parts[1:] if p)
    return f"{family}, {given}" if family and given else family or given


def _dicom_date(value: str) -> str:
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def read_identifiers(ds: Dataset) -> Identifiers:
    """Patient/study identifiers of a DICOM header, formatted for people (never logged)."""
    return Identifiers(
        patient_name=_person_name(ds),
        patient_id=_text(ds, "PatientID"),
        birth_date=_dicom_date(_text(ds, "PatientBirthDate")),
        sex=_text(ds, "PatientSex"),
        accession=_text(ds, "AccessionNumber"),
        study_date=_dicom_date(_text(ds, "StudyDate")),
        study_description=_text(ds, "StudyDescription"),
    )


def _png_data_uri(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)  # no text chunks
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fit(image: Any, size: int) -> Any:
    from PIL import Image

    if max(image.size) <= size:
        return image
    scale = size / max(image.size)
    target = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    return image.resize(target, Image.Resampling.LANCZOS)


def scan_thumbnail(pixels: np.ndarray, size: int = THUMB_SIZE) -> str:
    """The scan in grey (windowed like the overlay) as a PNG data URI, at most `size` px."""
    from PIL import Image

    from scintiflow.inference.explain import scan_grey

    grey = np.round(255.0 * scan_grey(pixels)).astype(np.uint8)
    return _png_data_uri(_fit(Image.fromarray(grey, mode="L"), size))


def overlay_thumbnail(png: bytes, size: int = THUMB_SIZE) -> str:
    """The overlay PNG as a data URI, at most `size` px."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return _png_data_uri(_fit(img.convert("RGB"), size))
