"""The size a JPEG, JPEG-LS or JPEG 2000 codestream declares for itself, checked before decoding.

Codecs size their output from the codestream, not from the DICOM header, so a crafted stream
could make the codec allocate gigabytes (a decompression bomb) before anything else notices.
The stream's own height and width must equal Rows x Columns.
"""

from __future__ import annotations

import struct
from typing import Final

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from scintiflow.ingest.dicom.reasons import DecodeReason, RejectError

_JPEG_SOF: Final = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC)}) | {
    0xCD,
    0xCE,
    0xCF,
    0xF7,  # JPEG-LS SOF55
}


def check_codestream_size(
    ds: Dataset, ts: UID, index: int, frames: int, rows: int, cols: int
) -> None:
    """Refuse a JPEG / JPEG-LS / JPEG 2000 frame whose own header disagrees with Rows x Columns."""
    is_j2k = ts in pydicom.uid.JPEG2000TransferSyntaxes
    is_jpeg = ts in pydicom.uid.JPEGTransferSyntaxes or ts in pydicom.uid.JPEGLSTransferSyntaxes
    if not (is_j2k or is_jpeg):
        return
    try:
        extended = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        frame = pydicom.encaps.get_frame(
            ds.PixelData, index, extended_offsets=extended, number_of_frames=frames
        )
    except Exception as exc:
        raise RejectError(
            DecodeReason.CORRUPT_PIXEL_DATA, "The compressed frame cannot be located."
        ) from exc
    size = _j2k_size(frame) if is_j2k else _jpeg_size(frame)
    if size != (rows, cols):
        raise RejectError(
            DecodeReason.CORRUPT_PIXEL_DATA,
            "The compressed stream's own size is unreadable or differs from Rows x Columns.",
        )


def _jpeg_size(stream: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG or JPEG-LS start-of-frame marker; None if not found."""
    if stream[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(stream)
    while pos + 4 <= end:
        if stream[pos] != 0xFF:
            return None
        marker = stream[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_SOF:
            if pos + 9 > end:
                return None
            height, width = struct.unpack_from(">HH", stream, pos + 5)
            return (height, width)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", stream, pos + 2)
        pos += 2 + length
    return None


def _j2k_size(stream: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG 2000 SIZ segment (raw codestream or JP2); None if absent."""
    offset = 0
    if stream.startswith(b"\x00\x00\x00\x0cjP  "):
        offset = 12
        while offset + 8 <= len(stream):
            (length,) = struct.unpack_from(">I", stream, offset)
            if stream[offset + 4 : offset + 8] == b"jp2c":
                offset += 8
                break
            if length < 8:
                return None
            offset += length
        else:
            return None
    if stream[offset : offset + 4] != b"\xff\x4f\xff\x51" or len(stream) < offset + 24:
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", stream, offset + 8)
    return (ysiz - yosiz, xsiz - xosiz)
