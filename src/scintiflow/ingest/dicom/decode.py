"""`decode_dicom`: DICOM bytes -> one trustworthy planar count image, or a `DecodeError`.

The steps run in this order, each raising `RejectError` with its reason: the structural walk
and pydicom parse (`header`), the pixel description and transfer syntax (`pixel_format`),
the planar frame (`frames`), the native byte count and the rescale values, the decode itself
(`pixels`), then the record with its non-pixel facts (`metadata`).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from pydicom.dataset import Dataset

from scintiflow.domain import ImageRecord
from scintiflow.ingest.dicom.frames import normalise_view, select_frame
from scintiflow.ingest.dicom.header import DicomHeader, build_header, parse_dataset
from scintiflow.ingest.dicom.metadata import (
    collimator,
    patient_hash,
    pixel_spacing,
    radiopharmaceutical,
)
from scintiflow.ingest.dicom.pixel_format import check_native_length, pixel_format
from scintiflow.ingest.dicom.pixels import decode_counts, read_rescale
from scintiflow.ingest.dicom.quiet import quiet_pydicom
from scintiflow.ingest.dicom.reasons import DecodeError, DecodeReason, RejectError
from scintiflow.ingest.dicom.structure import Structure
from scintiflow.ingest.dicom.values import str_value

DEFAULT_PATIENT_HASH_KEY: Final = b"scintiflow-default-phi-key"
"""The settings' default PHI hash key, for reference only: nothing here falls back to it.

`decode_dicom` takes the key as a required argument; production callers pass
`settings.phi_hash_key.get_secret_value().encode()`.
"""


def decode_dicom(
    data: bytes,
    *,
    patient_hash_key: bytes | None,
    preferred_view: str = "anterior",
    decode_timeout_s: float = 10.0,
) -> ImageRecord:
    """Decode one DICOM object into a float32 planar count image plus its metadata.

    `patient_hash_key` keys the one-way hash of the Patient ID (required: there is no
    built-in key; pass None only when the caller does not use `patient_hash`, which is then
    None); `preferred_view` picks the frame of a multi-view static NM object; compressed
    pixel data must decode within `decode_timeout_s`. Raises `DecodeError` (and nothing
    else) when no trustworthy 2-D count image can be produced; a bad argument raises
    ValueError.
    """
    if not decode_timeout_s > 0:
        raise ValueError("decode_timeout_s must be positive")
    header: DicomHeader | None = None
    try:
        with quiet_pydicom():
            ds, structure = parse_dataset(bytes(data))
            header = build_header(ds, structure)
            return _decode_parsed(
                ds,
                structure,
                header,
                preferred_view=normalise_view(preferred_view),
                patient_hash_key=patient_hash_key,
                decode_timeout_s=decode_timeout_s,
            )
    except (DecodeError, KeyboardInterrupt, SystemExit):
        raise
    except RejectError as exc:
        raise DecodeError(exc.reason, exc.message, header=header) from None
    except BaseException:
        # last resort (BaseException: codec panics do not derive from Exception); the
        # original text may quote tag values, so it is dropped on purpose
        raise DecodeError(DecodeReason.UNREADABLE_DICOM, header=header) from None


def _decode_parsed(
    ds: Dataset,
    structure: Structure,
    header: DicomHeader,
    *,
    preferred_view: str,
    patient_hash_key: bytes | None,
    decode_timeout_s: float,
) -> ImageRecord:
    """The decode steps after parsing; every rejection is a `RejectError`."""
    if structure.problem is not None:
        raise RejectError(structure.problem)
    fmt = pixel_format(ds, header)
    frame_index, view, detector_item = select_frame(ds, header, fmt.frames, preferred_view)
    check_native_length(ds, fmt)
    slope, intercept = read_rescale(ds)
    pixels = decode_counts(ds, fmt, frame_index, slope, intercept, timeout_s=decode_timeout_s)
    return ImageRecord(
        pixels=pixels,
        rows=fmt.rows,
        cols=fmt.cols,
        pixel_spacing_mm=pixel_spacing(ds),
        modality=header.modality or "",
        sop_class_uid=header.sop_class_uid or "",
        sop_instance_uid=str_value(ds, "SOPInstanceUID") or "",
        study_instance_uid=str_value(ds, "StudyInstanceUID") or "",
        series_instance_uid=str_value(ds, "SeriesInstanceUID") or "",
        patient_hash=patient_hash(ds, patient_hash_key),
        transfer_syntax_uid=str(fmt.ts),
        bits_allocated=fmt.bits_allocated,
        photometric_interpretation=fmt.photometric,
        frames=fmt.frames,
        frame_index=frame_index,
        view=view,
        radiopharmaceutical=radiopharmaceutical(ds),
        collimator=collimator(ds, detector_item),
        burned_in_annotation=header.burned_in_annotation,
        image_type=header.image_type,
        total_counts=float(pixels.sum(dtype=np.float64)),
        max_count=float(pixels.max()),
        zero_fraction=float(np.count_nonzero(pixels == 0) / pixels.size),
    )
