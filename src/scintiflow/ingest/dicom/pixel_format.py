"""What the header says about the pixels, checked before anything is decoded.

The pixel data must be present and integer, the transfer syntax known and decodable here,
and encapsulated exactly when the syntax says so (a missing syntax is only trusted for
native pixel data). The description must be grayscale, 8 or 16 bits allocated, with a
plausible matrix and frame count. Native pixel data must hold exactly Rows x Columns x
Frames x Bits/8 x Samples bytes plus at most one pad byte (pydicom silently drops extra
bytes; we do not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from scintiflow.ingest.dicom.header import DicomHeader
from scintiflow.ingest.dicom.reasons import DecodeReason, RejectError
from scintiflow.ingest.dicom.structure import PIXEL_DATA_TAG
from scintiflow.ingest.dicom.values import element_value

MAX_MATRIX: Final = 2048  # rows/cols above this are not a planar NM image
MAX_FRAMES: Final = 10_000
_FLOAT_PIXEL_DATA: Final = frozenset({0x7FE00008, 0x7FE00009})


@dataclass(frozen=True, slots=True)
class PixelFormat:
    """The validated pixel description: every value present, usable and in range."""

    ts: UID  # the transfer syntax to decode with (declared, else inferred)
    encapsulated: bool
    rows: int
    cols: int
    frames: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    samples: int
    photometric: str  # upper case: MONOCHROME1 or MONOCHROME2


def pixel_format(ds: Dataset, header: DicomHeader) -> PixelFormat:
    """Check that the pixels can be decoded here and describe them, or raise `RejectError`."""
    ts = _decodable_syntax(ds, header)
    _require_pixel_description(ds, header)
    # the header read these with the same converters; all are present and usable here
    fmt = PixelFormat(
        ts=ts,
        encapsulated=header.pixel_data_encapsulated,
        rows=int(header.rows or 0),
        cols=int(header.cols or 0),
        frames=int(header.frames or 0),
        bits_allocated=int(header.bits_allocated or 0),
        bits_stored=int(header.bits_stored or 0),
        pixel_representation=int(header.pixel_representation or 0),
        samples=int(header.samples_per_pixel or 0),
        photometric=(header.photometric_interpretation or "").upper(),
    )
    _check_grayscale_and_bits(fmt)
    _check_geometry(fmt)
    return fmt


def _decodable_syntax(ds: Dataset, header: DicomHeader) -> UID:
    """Integer pixel data is present and an installed decoder handles its transfer syntax."""
    encapsulated = header.pixel_data_encapsulated
    if PIXEL_DATA_TAG not in ds:
        if any(tag in ds for tag in _FLOAT_PIXEL_DATA):
            raise RejectError(
                DecodeReason.MISSING_PIXEL_DATA, "The object holds float pixel data only."
            )
        raise RejectError(DecodeReason.MISSING_PIXEL_DATA)
    if not header.transfer_syntax_declared and encapsulated:
        raise RejectError(DecodeReason.MISSING_TRANSFER_SYNTAX)
    ts = UID(header.transfer_syntax_uid or "")
    if not ts.is_transfer_syntax:
        raise RejectError(
            DecodeReason.UNSUPPORTED_TRANSFER_SYNTAX, "The transfer syntax UID is not recognised."
        )
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise RejectError(
            DecodeReason.UNSUPPORTED_TRANSFER_SYNTAX,
            f"No pixel decoder exists for {ts.name}.",
        ) from None
    if not decoder.is_available:
        raise RejectError(
            DecodeReason.UNSUPPORTED_TRANSFER_SYNTAX,
            f"No installed plugin decodes {ts.name}.",
        )
    if encapsulated != ts.is_encapsulated:
        raise RejectError(
            DecodeReason.MALFORMED_STRUCTURE,
            "Pixel data encapsulation contradicts the transfer syntax.",
        )
    return ts


def _require_pixel_description(ds: Dataset, header: DicomHeader) -> None:
    """Every tag needed to interpret the pixels is present (`missing_required_tag`) and was
    readable (`invalid_tag_value`)."""
    required = {
        "Rows": header.rows,
        "Columns": header.cols,
        "BitsAllocated": header.bits_allocated,
        "BitsStored": header.bits_stored,
        "PixelRepresentation": header.pixel_representation,
        "SamplesPerPixel": header.samples_per_pixel,
        "PhotometricInterpretation": header.photometric_interpretation,
        "NumberOfFrames": header.frames,  # absent reads as 1: None means unusable
    }
    for keyword, found in required.items():
        if found is None:
            if element_value(ds, keyword) is None:
                raise RejectError(DecodeReason.MISSING_REQUIRED_TAG, f"{keyword} is missing.")
            raise RejectError(DecodeReason.INVALID_TAG_VALUE, f"{keyword} has an unusable value.")


def _check_grayscale_and_bits(fmt: PixelFormat) -> None:
    """One grayscale sample per pixel, 8 or 16 bits allocated, sane stored bits and sign."""
    if fmt.samples != 1 or fmt.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise RejectError(DecodeReason.COLOUR_IMAGE)
    if fmt.bits_allocated not in (8, 16):
        raise RejectError(
            DecodeReason.UNSUPPORTED_BITS_ALLOCATED,
            f"Bits Allocated is {fmt.bits_allocated}; only 8 and 16 are decoded.",
        )
    if not 1 <= fmt.bits_stored <= fmt.bits_allocated:
        raise RejectError(
            DecodeReason.INVALID_TAG_VALUE, "Bits Stored is outside 1..Bits Allocated."
        )
    if fmt.pixel_representation not in (0, 1):
        raise RejectError(DecodeReason.INVALID_TAG_VALUE, "Pixel Representation is not 0 or 1.")


def _check_geometry(fmt: PixelFormat) -> None:
    """Rows, Columns and Number of Frames within what a planar NM image can be."""
    if not (1 <= fmt.rows <= MAX_MATRIX and 1 <= fmt.cols <= MAX_MATRIX):
        raise RejectError(
            DecodeReason.BAD_GEOMETRY,
            f"Rows and Columns must be within 1..{MAX_MATRIX}.",
        )
    if not 1 <= fmt.frames <= MAX_FRAMES:
        raise RejectError(
            DecodeReason.BAD_GEOMETRY, f"Number of Frames must be within 1..{MAX_FRAMES}."
        )


def check_native_length(ds: Dataset, fmt: PixelFormat) -> None:
    """Native Pixel Data holds exactly the bytes the header implies, plus at most one pad byte.

    Encapsulated frames are not counted here: their codestreams are checked before decoding.
    """
    if fmt.encapsulated:
        return
    expected = fmt.rows * fmt.cols * fmt.frames * fmt.samples * (fmt.bits_allocated // 8)
    actual = len(ds.PixelData)
    if actual not in (expected, expected + 1):
        raise RejectError(
            DecodeReason.PIXEL_LENGTH_MISMATCH,
            f"Pixel Data holds {actual} bytes where the header implies {expected}.",
        )
