"""Stable reason codes for files that cannot become a count image, and the errors carrying them.

`DecodeError` is the only exception the decoder's entry points raise for bad input;
`RejectError` is raised inside the decoder's steps and turned into `DecodeError` (with the
header attached when one was read) by `decode_dicom` and `read_header`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from scintiflow.ingest.dicom.header import DicomHeader


class DecodeReason(StrEnum):
    """Why a file could not be turned into a count image. Values are stable identifiers."""

    EMPTY_FILE = "empty_file"
    TOO_SMALL = "too_small"
    NOT_DICOM = "not_dicom"
    TRUNCATED_HEADER = "truncated_header"
    TRUNCATED_ELEMENT = "truncated_element"
    TRUNCATED_PIXEL_DATA = "truncated_pixel_data"
    MALFORMED_STRUCTURE = "malformed_structure"
    MISSING_TRANSFER_SYNTAX = "missing_transfer_syntax"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    MISSING_PIXEL_DATA = "missing_pixel_data"
    MISSING_REQUIRED_TAG = "missing_required_tag"
    INVALID_TAG_VALUE = "invalid_tag_value"
    COLOUR_IMAGE = "colour_image"
    UNSUPPORTED_BITS_ALLOCATED = "unsupported_bits_allocated"
    BAD_GEOMETRY = "bad_geometry"
    PIXEL_LENGTH_MISMATCH = "pixel_length_mismatch"
    TOMOGRAPHIC_NOT_SUPPORTED = "tomographic_not_supported"
    DYNAMIC_NOT_SUPPORTED = "dynamic_not_supported"
    AMBIGUOUS_MULTIFRAME = "ambiguous_multiframe"
    VIEW_NOT_FOUND = "view_not_found"
    CORRUPT_PIXEL_DATA = "corrupt_pixel_data"
    DECODE_TIMEOUT = "decode_timeout"
    UNREADABLE_DICOM = "unreadable_dicom"

    def describe(self) -> str:
        """One-line human explanation of the reason (safe for reports: no tag values)."""
        return REASON_TEXT[self]


REASON_TEXT: Final[dict[DecodeReason, str]] = {
    DecodeReason.EMPTY_FILE: "The file is empty.",
    DecodeReason.TOO_SMALL: "The file is shorter than a DICOM preamble and header (132 bytes).",
    DecodeReason.NOT_DICOM: "The file is not DICOM: no 'DICM' marker and no plausible dataset.",
    DecodeReason.TRUNCATED_HEADER: (
        "The file ends inside the preamble or file meta header, before any dataset element."
    ),
    DecodeReason.TRUNCATED_ELEMENT: (
        "A data element declares more bytes than the file holds (file cut short or a corrupt "
        "length field)."
    ),
    DecodeReason.TRUNCATED_PIXEL_DATA: (
        "The Pixel Data element declares more bytes than the file holds (file cut short or a "
        "corrupt length field)."
    ),
    DecodeReason.MALFORMED_STRUCTURE: (
        "The element structure is inconsistent (bad item or delimiter tags, nesting too deep, "
        "a deflated dataset that cannot be inflated, or pixel encapsulation that contradicts "
        "the transfer syntax)."
    ),
    DecodeReason.MISSING_TRANSFER_SYNTAX: (
        "The transfer syntax is missing and cannot be inferred (compressed pixel data)."
    ),
    DecodeReason.UNSUPPORTED_TRANSFER_SYNTAX: (
        "The transfer syntax is unknown or no installed decoder handles it."
    ),
    DecodeReason.MISSING_PIXEL_DATA: "The object has no integer Pixel Data (7FE0,0010).",
    DecodeReason.MISSING_REQUIRED_TAG: "A tag required to interpret the pixel data is missing.",
    DecodeReason.INVALID_TAG_VALUE: (
        "A tag needed to interpret the pixels has an unusable value (wrong type, out of "
        "range, or non-finite rescale)."
    ),
    DecodeReason.COLOUR_IMAGE: (
        "The image is colour or palette colour; a grayscale count image is required."
    ),
    DecodeReason.UNSUPPORTED_BITS_ALLOCATED: "Bits Allocated is not 8 or 16.",
    DecodeReason.BAD_GEOMETRY: (
        "Rows, Columns or Number of Frames is zero, negative or absurdly large."
    ),
    DecodeReason.PIXEL_LENGTH_MISMATCH: (
        "The native Pixel Data length does not equal Rows x Columns x Frames x Bits/8 x "
        "Samples (plus at most one pad byte)."
    ),
    DecodeReason.TOMOGRAPHIC_NOT_SUPPORTED: (
        "The object is tomographic (SPECT projections or reconstruction), not a planar view."
    ),
    DecodeReason.DYNAMIC_NOT_SUPPORTED: (
        "The object is dynamic or gated (frames over time), not a static planar view."
    ),
    DecodeReason.AMBIGUOUS_MULTIFRAME: (
        "The object has several frames and the view of each cannot be identified uniquely."
    ),
    DecodeReason.VIEW_NOT_FOUND: (
        "The object has several identified views but none is the preferred view."
    ),
    DecodeReason.CORRUPT_PIXEL_DATA: (
        "The pixel data could not be decoded (corrupt stream or inconsistent with the header)."
    ),
    DecodeReason.DECODE_TIMEOUT: "Decoding the pixel data took longer than the time limit.",
    DecodeReason.UNREADABLE_DICOM: "The file could not be read as DICOM (unexpected error).",
}


class DecodeError(Exception):
    """A file that cannot become a trustworthy count image.

    `reason` is the stable code reports and quarantine files use; `message` is a human
    sentence that never contains tag values; `header` is the non-PHI summary when the file
    was parseable far enough to produce one.
    """

    def __init__(
        self,
        reason: DecodeReason,
        message: str | None = None,
        *,
        header: DicomHeader | None = None,
    ) -> None:
        self.reason = reason
        self.message = message or REASON_TEXT[reason]
        self.header = header
        super().__init__(f"{reason.value}: {self.message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # keep the exception picklable (process pools, Prefect result storage)
        return (_rebuild_error, (self.reason, self.message, self.header))


def _rebuild_error(reason: DecodeReason, message: str, header: DicomHeader | None) -> DecodeError:
    return DecodeError(reason, message, header=header)


class RejectError(Exception):
    """Internal: a rejection raised deep inside a decoding step; the public entry points turn
    it into `DecodeError` and attach the header when one was read."""

    def __init__(self, reason: DecodeReason, message: str | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.message = message
