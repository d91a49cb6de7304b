"""Parsing a checked file with pydicom and summarising its format without the pixels.

`read_header` and `decode_dicom` both start here: `parse_dataset` runs the structural check
and then pydicom, `build_header` reads the non-PHI `DicomHeader` that travels with
quarantine reasons and logs (no names, IDs, dates or instance UIDs).
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from scintiflow.ingest.dicom.quiet import quiet_pydicom
from scintiflow.ingest.dicom.reasons import DecodeError, DecodeReason, RejectError
from scintiflow.ingest.dicom.structure import (
    PIXEL_DATA_TAG,
    UNDEFINED_LENGTH,
    Structure,
    check_structure,
    effective_ts,
)
from scintiflow.ingest.dicom.values import (
    element_value,
    opt_int,
    str_tuple,
    str_value,
    tag_list,
    tag_name,
)


@dataclass(frozen=True, slots=True)
class DicomHeader:
    """Non-PHI summary of a DICOM object, readable even when the pixels cannot be decoded.

    Holds no names, IDs, dates or instance UIDs: only what describes the image format, so it
    can travel with quarantine reasons and logs.
    """

    is_part10: bool  # 128-byte preamble + "DICM" present
    transfer_syntax_uid: str | None  # as used for decoding (declared, else inferred)
    transfer_syntax_declared: bool  # False when inferred or missing
    modality: str | None
    sop_class_uid: str | None
    rows: int | None
    cols: int | None
    frames: int | None
    bits_allocated: int | None
    bits_stored: int | None
    pixel_representation: int | None
    samples_per_pixel: int | None
    photometric_interpretation: str | None
    image_type: tuple[str, ...]
    burned_in_annotation: str | None
    has_pixel_data: bool
    pixel_data_encapsulated: bool
    frame_increment_pointer: tuple[str, ...]  # tag keywords (or hex tags when unknown)


def parse_dataset(data: bytes) -> tuple[Dataset, Structure]:
    """Structural check, then pydicom parse. Raises `RejectError` when there is no dataset."""
    structure = check_structure(data)
    try:
        ds = pydicom.dcmread(BytesIO(data), force=True)
    except Exception as exc:
        raise RejectError(
            structure.problem or DecodeReason.UNREADABLE_DICOM,
            "pydicom could not parse the dataset.",
        ) from exc
    if len(ds) == 0:
        raise RejectError(structure.problem or DecodeReason.TRUNCATED_HEADER)
    return ds, structure


def _pixel_encapsulated(ds: Dataset) -> bool:
    """True when Pixel Data has an undefined length (encapsulated, i.e. compressed, frames)."""
    try:
        element = ds.get_item(PIXEL_DATA_TAG)
    except Exception:
        return False
    if element is None:
        return False
    if isinstance(element, DataElement):
        return bool(element.is_undefined_length)
    return bool(element.length == UNDEFINED_LENGTH)


def build_header(ds: Dataset, structure: Structure) -> DicomHeader:
    """The `DicomHeader` of a parsed dataset; unusable values read as None (never raises)."""
    ts, declared = effective_ts(structure.layout)
    frames = opt_int(ds, "NumberOfFrames")
    if frames is None and element_value(ds, "NumberOfFrames") is None:
        frames = 1  # absent means single frame; present but unusable stays None
    return DicomHeader(
        is_part10=structure.layout.is_part10,
        transfer_syntax_uid=ts,
        transfer_syntax_declared=declared,
        modality=str_value(ds, "Modality"),
        sop_class_uid=str_value(ds, "SOPClassUID"),
        rows=opt_int(ds, "Rows"),
        cols=opt_int(ds, "Columns"),
        frames=frames,
        bits_allocated=opt_int(ds, "BitsAllocated"),
        bits_stored=opt_int(ds, "BitsStored"),
        pixel_representation=opt_int(ds, "PixelRepresentation"),
        samples_per_pixel=opt_int(ds, "SamplesPerPixel"),
        photometric_interpretation=str_value(ds, "PhotometricInterpretation"),
        image_type=str_tuple(ds, "ImageType"),
        burned_in_annotation=str_value(ds, "BurnedInAnnotation"),
        has_pixel_data=PIXEL_DATA_TAG in ds,
        pixel_data_encapsulated=_pixel_encapsulated(ds),
        frame_increment_pointer=tuple(tag_name(t) for t in tag_list(ds, "FrameIncrementPointer")),
    )


def read_header(data: bytes) -> DicomHeader:
    """Non-PHI summary of a DICOM object without decoding its pixels.

    Raises `DecodeError` when the bytes are not DICOM or no dataset can be parsed. Defects
    further in (truncated pixel data, unsupported syntax, ...) do not raise here: the header
    describes what is there and `decode_dicom` reports the defect.
    """
    try:
        with quiet_pydicom():
            ds, structure = parse_dataset(bytes(data))
            return build_header(ds, structure)
    except RejectError as exc:
        raise DecodeError(exc.reason, exc.message) from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        raise DecodeError(DecodeReason.UNREADABLE_DICOM) from None
