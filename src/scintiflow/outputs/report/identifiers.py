"""Patient and study identifiers from a DICOM header, formatted for people.

PHI: they go into `report.html` / `report.pdf` only, never into keys, logs or JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


@dataclass(frozen=True)
class Identifiers:
    """What the clinician needs to find the patient and study."""

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
    """Patient/study identifiers of a DICOM header (never logged)."""
    return Identifiers(
        patient_name=_person_name(ds),
        patient_id=_text(ds, "PatientID"),
        birth_date=_dicom_date(_text(ds, "PatientBirthDate")),
        sex=_text(ds, "PatientSex"),
        accession=_text(ds, "AccessionNumber"),
        study_date=_dicom_date(_text(ds, "StudyDate")),
        study_description=_text(ds, "StudyDescription"),
    )


__all__ = ["Identifiers", "read_identifiers"]
