"""Heatmap overlays as DICOM Secondary Capture: the evidence a PACS viewer can show.

Each scored image's overlay (`heatmaps/<sha256>.overlay.png`: the scan in grey, the Grad-CAM
map colour-coded on top, at the scan's own matrix size) becomes an 8-bit RGB Secondary
Capture Image Storage object in a NEW series of the ORIGINAL study:

- the Patient and General Study modules are copied from the source object (same Study
  Instance UID, patient name/ID/birth date/sex, accession number), so the PACS files it next
  to the scan;
- new Series and SOP Instance UIDs, derived from the run id, the study and the image's
  SHA-256 (re-rendering a run gives the same UIDs, so a re-send replaces, not duplicates);
- flagged as derived and machine-made: Image Type `DERIVED\\SECONDARY`, Conversion Type `SYN`
  (synthetic image), a Derivation Description and a Source Image Sequence pointing at the
  scan, Series Description `AI-GENERATED CAM <model version> <predicted class>`, Burned In
  Annotation `NO` (the overlay holds no text), and an image comment saying it is decision
  support, not a diagnosis.

The objects are built with highdicom (`SCImage.from_ref_dataset`) and encoded in Explicit VR
Little Endian. They carry patient identifiers by design (a DICOM object for the clinical
record); their keys do not (`sc/<sha256>.dcm`), and nothing here logs or raises a tag value.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from scintiflow.storage.layout import SC_DIR, sc_key

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

SC_SERIES_NUMBER = 9001  # high, so AI series sort after the acquired ones in a viewer
SERIES_DESCRIPTION_PREFIX = "AI-GENERATED CAM"
MANUFACTURER = "scintiflow"
DISCLAIMER = "AI-generated decision support (Grad-CAM heatmap), not a diagnosis."
_LO_MAX = 64  # Series Description is LO: at most 64 characters
_UID_SALT = "scintiflow-secondary-capture/1"

# Patient module (PS3.3 C.7.1.1), Patient Study (C.7.2.2) and General Study (C.7.2.1)
# attributes copied verbatim when the source has them (highdicom copies the core few).
COPIED_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "QualityControlSubject",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "EthnicGroup",
    "PatientComments",
    "PatientSpeciesDescription",
    "PatientBreedDescription",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
)
_SERIES_KEYWORDS: tuple[str, ...] = ("BodyPartExamined", "Laterality")
PATIENT_MODULE_KEYWORDS: tuple[str, ...] = COPIED_KEYWORDS[
    : COPIED_KEYWORDS.index("StudyInstanceUID")
]


def sc_uids(run_id: str, study_uid: str, sha256: str) -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID), deterministic per run, study and source image.

    One series per study and run; one instance per source image. Hash-derived UIDs under
    pydicom's UID root (no identifier can be read back from them).
    """
    from pydicom.uid import generate_uid

    series = generate_uid(entropy_srcs=[_UID_SALT, "series", run_id, study_uid])
    instance = generate_uid(entropy_srcs=[_UID_SALT, "instance", run_id, study_uid, sha256])
    return str(series), str(instance)


def series_description(model_version: str, predicted_label: str) -> str:
    """`AI-GENERATED CAM <version> <class>`, shortening the version to fit LO's 64 characters."""
    room = _LO_MAX - len(SERIES_DESCRIPTION_PREFIX) - len(predicted_label) - 2
    version = model_version if len(model_version) <= room else model_version[: max(room, 0)]
    text = f"{SERIES_DESCRIPTION_PREFIX} {version} {predicted_label}"
    return text[:_LO_MAX]


def read_source(data: bytes) -> Dataset:
    """The source object's header (no pixel data), read with pydicom's warnings silenced."""
    from pydicom import dcmread

    from scintiflow.ingest.dicom import _quiet_pydicom

    with _quiet_pydicom():
        return dcmread(io.BytesIO(data), stop_before_pixels=True)


def png_rgb(data: bytes) -> np.ndarray:
    """An 8-bit RGB PNG as a (rows, cols, 3) uint8 array."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _patient_orientation(source: Dataset) -> tuple[str, str]:
    value = source.get("PatientOrientation")
    if value is not None and len(value) == 2 and all(str(v) for v in value):
        return (str(value[0]), str(value[1]))
    return ("L", "F")  # anterior view, head up: rows run to the patient's left, columns to feet


def _pixel_spacing(source: Dataset) -> tuple[float, float] | None:
    value = source.get("PixelSpacing")
    try:
        if value is not None and len(value) == 2:
            return (float(value[0]), float(value[1]))
    except (TypeError, ValueError):
        return None
    return None


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def build_secondary_capture(
    source: Dataset,
    overlay: np.ndarray,
    *,
    series_uid: str,
    sop_uid: str,
    instance_number: int,
    model_name: str | None,
    model_version: str,
    engine: str,
    predicted_label: str,
    confidence: float,
    source_frame: int | None = None,
    software_version: str | None = None,
) -> Dataset:
    """An RGB Secondary Capture of `overlay` (rows, cols, 3 uint8) in the source's study.

    `source` is the original object's header (`read_source`); `source_frame` is the 1-based
    frame the overlay was drawn on when the source is multi-frame.
    """
    from highdicom.sc import SCImage
    from pydicom.sequence import Sequence as DicomSequence

    from scintiflow import __version__
    from scintiflow.ingest.dicom import _quiet_pydicom

    rgb = np.ascontiguousarray(overlay, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"overlay must be (rows, cols, 3) uint8, got shape {rgb.shape}")
    model = f"{model_name} {model_version}" if model_name else model_version
    with _quiet_pydicom():
        sc = SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=rgb,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=series_uid,
            series_number=SC_SERIES_NUMBER,
            sop_instance_uid=sop_uid,
            instance_number=instance_number,
            manufacturer=MANUFACTURER,
            pixel_spacing=_pixel_spacing(source),  # type: ignore[arg-type]
            patient_orientation=_patient_orientation(source),
            transfer_syntax_uid="1.2.840.10008.1.2.1",  # Explicit VR Little Endian
            series_description=series_description(model_version, predicted_label),
            manufacturer_model_name=f"scintiflow {model}"[:_LO_MAX],
            software_versions=software_version or __version__,
        )
        for keyword in (*COPIED_KEYWORDS, *_SERIES_KEYWORDS):
            if keyword in source:
                setattr(sc, keyword, source[keyword].value)
        sc.ImageType = ["DERIVED", "SECONDARY"]
        sc.ConversionType = "SYN"  # synthetic image: computed, not captured from a screen
        sc.BurnedInAnnotation = "NO"  # colours only; no text in the pixels
        sc.RecognizableVisualFeatures = "NO"
        sc.LossyImageCompression = "00"
        sc.DerivationDescription = (
            f"Grad-CAM heatmap of the predicted class {predicted_label} "
            f"(probability {confidence:.3f}) from model {model} ({engine}), colour-coded and "
            f"blended onto the source scan by scintiflow. {DISCLAIMER}"
        )[:1024]
        reference = _source_reference(source, source_frame)
        sc.SourceImageSequence = DicomSequence([reference])
        sc.ImageComments = DISCLAIMER
        sc.SeriesDate, sc.SeriesTime = sc.DateOfSecondaryCapture, sc.TimeOfSecondaryCapture
        sc.ContentDate, sc.ContentTime = sc.DateOfSecondaryCapture, sc.TimeOfSecondaryCapture
    return sc


def _source_reference(source: Dataset, frame: int | None) -> Dataset:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    frames = int(source.get("NumberOfFrames", 1) or 1)
    if frame is not None and frames > 1:
        ref.ReferencedFrameNumber = frame
    ref.PurposeOfReferenceCodeSequence = DicomSequence(
        [_code("121322", "DCM", "Source image for image processing operation")]
    )
    return ref


def encode(ds: Dataset) -> bytes:
    """The object as a DICOM Part 10 file (preamble, file meta, dataset)."""
    from scintiflow.ingest.dicom import _quiet_pydicom

    buf = io.BytesIO()
    with _quiet_pydicom():
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def source_frame_number(frames: int, frame_index: int) -> int | None:
    """1-based frame number for a multi-frame source, None for a single frame."""
    return frame_index + 1 if frames > 1 else None


__all__: Sequence[str] = (
    "COPIED_KEYWORDS",
    "DISCLAIMER",
    "PATIENT_MODULE_KEYWORDS",
    "SC_DIR",
    "SC_SERIES_NUMBER",
    "build_secondary_capture",
    "encode",
    "png_rgb",
    "read_source",
    "sc_key",
    "sc_uids",
    "series_description",
    "source_frame_number",
)
