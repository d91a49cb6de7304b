"""DICOM bytes -> `ImageRecord`: one trustworthy planar count image, or a typed `DecodeError`.

The decoder is the first line of defence against whatever lands in the export bucket. It
FAILS (raises `DecodeError` with a stable `DecodeReason`) whenever it cannot vouch for a 2-D
count image: not DICOM, truncated, structurally broken, colour, odd bit depths, compressed
without a decoder, corrupt streams, decodes that run too long, tomographic / dynamic /
unidentifiable multi-frame objects. It SUCCEEDS for well-formed grayscale images that are
merely the wrong kind (CT, wrong SOP class, burned-in annotation): those facts are reported
in the record and rejected later by the data checks, which own that policy.

Decisions worth knowing:
- pydicom 3 loads several broken files silently, so `dcmread` raising is never relied on. A
  small structural walk over the raw bytes (`_check_structure`) first proves that every
  declared length fits in the file; only then are values read with pydicom.
- Raw datasets without the 128-byte preamble + "DICM" are accepted when their first element
  is a plausible DICOM element. A missing transfer syntax (raw dataset, or a file meta group
  without (0002,0010)) is inferred from the encoding of the first element, as pydicom does;
  that is only trusted for native pixel data: encapsulated (compressed) pixel data without a
  transfer syntax fails with `missing_transfer_syntax`.
- Multi-frame static NM objects are resolved to one frame through the Frame Increment Pointer
  -> Detector Vector -> Detector Information Sequence -> View Code Sequence. When every frame
  has a view but none matches `preferred_view`, the reason is `view_not_found`; when views are
  missing, not unique, or the object has no detector vector, it is `ambiguous_multiframe`.
- Compressed pixel data is decoded in a worker thread and waited on with a timeout. A codec
  stuck in C code without releasing the GIL cannot be bounded by a thread; callers that need
  a hard bound should run batches in a subprocess. Native pixel data is a bounded copy
  (geometry and byte count are checked first) and is decoded inline.
- Native pixel data must hold exactly Rows x Columns x Frames x Bits/8 x Samples bytes plus
  at most one pad byte (pydicom silently drops extra bytes; we do not). For JPEG, JPEG-LS
  and JPEG 2000 the codestream's own size must equal Rows x Columns before any decode, so a
  crafted stream cannot make the codec allocate gigabytes.
- MONOCHROME1 images are decoded as stored (not inverted) and reported as such; pixel values
  are counts either way and the data checks decide whether to accept them.
- Messages never carry tag values that could be PHI: a reason code, a generic sentence and at
  most tag keywords or structural numbers (bits, frame counts). pydicom's own warnings and
  log records (which quote invalid values verbatim) are silenced while a decode runs.
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from io import BytesIO
from typing import Any, Final, TypeVar

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

from scintiflow.domain import ImageRecord, hash_identifier

__all__ = [
    "DEFAULT_PATIENT_HASH_KEY",
    "MAX_MATRIX",
    "REASON_TEXT",
    "DecodeError",
    "DecodeReason",
    "DicomHeader",
    "decode_dicom",
    "normalise_view",
    "read_header",
]


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


# ---------------------------------------------------------------------------------------
# Limits and constants

DEFAULT_PATIENT_HASH_KEY: Final = b"scintiflow-default-phi-key"
MAX_MATRIX: Final = 2048  # rows/cols above this are not a planar NM image
MAX_FRAMES: Final = 10_000
MANY_FRAMES: Final = 32  # an NM object with this many unlabeled frames is SPECT-like
MIN_FILE_BYTES: Final = 132  # preamble (128) + "DICM" (4)
MAX_INFLATED_BYTES: Final = 512 * 1024 * 1024  # deflated datasets: guard against bombs
MAX_NESTING: Final = 32

_UNDEFINED: Final = 0xFFFFFFFF
_ITEM: Final = 0xFFFEE000
_ITEM_DELIM: Final = 0xFFFEE00D
_SEQ_DELIM: Final = 0xFFFEE0DD
_PIXEL_DATA: Final = 0x7FE00010
_FLOAT_PIXEL_DATA: Final = frozenset({0x7FE00008, 0x7FE00009})
_DETECTOR_VECTOR: Final = 0x00540020

_IMPLICIT_LE: Final = "1.2.840.10008.1.2"
_EXPLICIT_LE: Final = "1.2.840.10008.1.2.1"
_DEFLATED_LE: Final = "1.2.840.10008.1.2.1.99"
_EXPLICIT_BE: Final = "1.2.840.10008.1.2.2"

_VRS: Final = frozenset(str(vr).encode("ascii") for vr in STANDARD_VR)
_LONG_VRS: Final = frozenset(str(vr).encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
# groups a raw (preamble-less) dataset plausibly starts with
_RAW_START_GROUPS: Final = frozenset({0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})

# NM Image Type value 3 and Frame Increment Pointer targets (PS3.3 C.8.4.8, C.8.4.9)
_TOMO_TYPES: Final = frozenset({"TOMO", "GATED TOMO", "RECON TOMO", "RECON GATED TOMO"})
_DYNAMIC_TYPES: Final = frozenset({"DYNAMIC", "GATED"})
_TOMO_POINTERS: Final = frozenset(
    {0x00540050, 0x00540090, 0x00540080}  # RotationVector, AngularViewVector, SliceVector
)
_DYNAMIC_POINTERS: Final = frozenset(
    {
        0x00540030,  # PhaseVector
        0x00540060,  # RRIntervalVector
        0x00540070,  # TimeSlotVector
        0x00540100,  # TimeSliceVector
        0x00181063,  # FrameTime (cine)
        0x00181065,  # FrameTimeVector
    }
)

# View names: CID 26 (Nuclear Medicine Projection) meanings and codes, plus common
# abbreviations written by cameras. Everything is compared in this canonical form.
_VIEW_SYNONYMS: Final[dict[str, str]] = {
    "ant": "anterior",
    "anterior": "anterior",
    "anterior projection": "anterior",
    "post": "posterior",
    "posterior": "posterior",
    "posterior projection": "posterior",
    "lao": "left anterior oblique",
    "rao": "right anterior oblique",
    "lpo": "left posterior oblique",
    "rpo": "right posterior oblique",
    "llat": "left lateral",
    "rlat": "right lateral",
    "left lateral projection": "left lateral",
    "right lateral projection": "right lateral",
}
_VIEW_CODES: Final[dict[str, str]] = {
    "399321004": "anterior",
    "399001007": "posterior",
    "399074003": "left anterior oblique",
    "399108003": "right anterior oblique",
    "399136008": "left posterior oblique",
    "399075002": "right posterior oblique",
    "399118008": "left lateral",
    "399297009": "right lateral",
}


def normalise_view(text: str) -> str:
    """Canonical lower-case view name: "ANT", "Anterior projection" -> "anterior"."""
    cleaned = " ".join(text.replace("_", " ").replace("-", " ").lower().split())
    cleaned = cleaned.removesuffix(" (qualifier value)").removesuffix(" emissive projection")
    return _VIEW_SYNONYMS.get(cleaned, cleaned)


# ---------------------------------------------------------------------------------------
# Keeping pydicom quiet: its validation warnings and log records quote tag values verbatim
# ("Invalid value for VR DA: '...'"), which would put PHI into logs.

_QUIET_STATE = threading.local()
_WARNINGS_LOCK = threading.Lock()


class _DropWhileDecoding(logging.Filter):
    """Drops 'pydicom' log records emitted by a thread that is inside this module's decode."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(_QUIET_STATE, "depth", 0) == 0


_PYDICOM_LOG_FILTER: Final = _DropWhileDecoding()
# filters do not apply to records propagated from child loggers: name each one that logs
for _name in ("pydicom", "pydicom.pixels.decoders.base", "pydicom.pixels.utils"):
    logging.getLogger(_name).addFilter(_PYDICOM_LOG_FILTER)


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log records for the calling thread's decode.

    `warnings.catch_warnings` swaps process-global state and is not thread-safe before
    Python 3.14; the lock keeps concurrent decodes from interleaving their save/restore
    (which could leave every warning in the process ignored, or let one through).
    """
    _QUIET_STATE.depth = getattr(_QUIET_STATE, "depth", 0) + 1
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _QUIET_STATE.depth -= 1


# ---------------------------------------------------------------------------------------
# Structural walk over the raw bytes


class _RejectError(Exception):
    """Internal: a rejection raised deep inside; the public entry points turn it into
    `DecodeError` and attach the header when one was read."""

    def __init__(self, reason: DecodeReason, message: str | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the dataset starts and how it is encoded, from the preamble and file meta."""

    is_part10: bool
    declared_ts: str | None
    little_endian: bool
    implicit_vr: bool  # of the first top-level element (what pydicom will use)


@dataclass(frozen=True, slots=True)
class _Structure:
    layout: _Layout
    problem: DecodeReason | None  # first structural defect in the dataset, if any


def _check_structure(data: bytes) -> _Structure:
    """Locate the dataset and prove every declared length fits in the file.

    Raises `_RejectError` for input that is not DICOM at all or whose header is cut short;
    returns a dataset-level defect (truncation, bad delimiters) as `problem` so the caller can
    still read a header for the error.
    """
    if len(data) == 0:
        raise _RejectError(DecodeReason.EMPTY_FILE)
    if len(data) < MIN_FILE_BYTES:
        raise _RejectError(DecodeReason.TOO_SMALL)
    if data[128:132] == b"DICM":
        is_part10, pos = True, 132
    elif _plausible_raw_start(data):
        is_part10, pos = False, 0
    else:
        raise _RejectError(DecodeReason.NOT_DICOM)

    pos, declared_ts = _walk_meta(data, pos)
    if pos >= len(data):
        raise _RejectError(
            DecodeReason.TRUNCATED_HEADER, "The file ends after the file meta header."
        )

    body = data
    if declared_ts == _DEFLATED_LE:
        body = _inflate(data[pos:])
        pos = 0
        if not body:
            raise _RejectError(DecodeReason.TRUNCATED_HEADER, "The deflated dataset is empty.")
    if len(body) - pos < 8:
        raise _RejectError(
            DecodeReason.TRUNCATED_HEADER, "The dataset ends inside its first element."
        )

    little = True
    if declared_ts == _EXPLICIT_BE:
        little = False
    elif declared_ts is None:
        # pydicom's rule: a valid VR and a little-endian group >= 1024 means big endian
        (group,) = struct.unpack_from("<H", body, pos)
        if body[pos + 4 : pos + 6] in _VRS and group >= 1024:
            little = False
    implicit = _looks_implicit(body, pos)
    layout = _Layout(is_part10, declared_ts, little, implicit)
    walker = _Walker(body, little)
    try:
        walker.dataset(pos, len(body), parent_implicit=False, in_item=False, depth=0)
    except _RejectError as exc:
        return _Structure(layout, exc.reason)
    return _Structure(layout, None)


def _plausible_raw_start(data: bytes) -> bool:
    """True when the bytes start like a DICOM element (raw dataset without a preamble)."""
    group_le, _ = struct.unpack_from("<HH", data, 0)
    group_be, _ = struct.unpack_from(">HH", data, 0)
    vr = data[4:6]
    if group_le in _RAW_START_GROUPS:
        if vr in _VRS:
            return True
        (length,) = struct.unpack_from("<I", data, 4)
        return length == _UNDEFINED or length <= len(data) - 8
    return group_be in _RAW_START_GROUPS and vr in _VRS


def _looks_implicit(buf: bytes, pos: int) -> bool:
    """pydicom's test: a first element whose VR bytes are not two capitals is implicit VR."""
    b0, b1 = buf[pos + 4], buf[pos + 5]
    return not (0x40 < b0 < 0x5B and 0x40 < b1 < 0x5B)


def _walk_meta(data: bytes, pos: int) -> tuple[int, str | None]:
    """Skip the group 0002 file meta elements; return the dataset offset and the TS UID."""
    ts: str | None = None
    end = len(data)
    while end - pos >= 2 and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        if end - pos < 8:
            raise _RejectError(DecodeReason.TRUNCATED_HEADER)
        _, elem = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if end - pos < 12:
                raise _RejectError(DecodeReason.TRUNCATED_HEADER)
            (length,) = struct.unpack_from("<I", data, pos + 8)
            start = pos + 12
        elif vr in _VRS:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            start = pos + 8
        else:  # implicit VR meta (non-conformant, but pydicom reads it)
            (length,) = struct.unpack_from("<I", data, pos + 4)
            start = pos + 8
        if length == _UNDEFINED or start + length > end:
            raise _RejectError(DecodeReason.TRUNCATED_HEADER)
        if elem == 0x0010:
            text = data[start : start + length].decode("ascii", "replace").strip("\x00 ")
            ts = text or None
        pos = start + length
    return pos, ts


def _inflate(payload: bytes) -> bytes:
    """Inflate a deflated dataset with a size cap (pydicom itself has none)."""
    try:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        out = inflater.decompress(payload, MAX_INFLATED_BYTES)
    except zlib.error as exc:
        raise _RejectError(
            DecodeReason.MALFORMED_STRUCTURE, "The deflated dataset cannot be inflated."
        ) from exc
    if inflater.unconsumed_tail:
        raise _RejectError(
            DecodeReason.MALFORMED_STRUCTURE, "The deflated dataset inflates past the size limit."
        )
    return out


class _Walker:
    """Walks elements the way pydicom reads them, but checks every length against the end."""

    def __init__(self, buf: bytes, little: bool) -> None:
        self.buf = buf
        self.e = "<" if little else ">"

    def dataset(
        self, pos: int, end: int, *, parent_implicit: bool, in_item: bool, depth: int
    ) -> int:
        """Walk one dataset from `pos`; return the offset after it (after its item delimiter)."""
        if depth > MAX_NESTING:
            raise _RejectError(DecodeReason.MALFORMED_STRUCTURE, "Sequences are nested too deeply.")
        buf, e = self.buf, self.e
        implicit = parent_implicit or (end - pos >= 8 and _looks_implicit(buf, pos))
        while pos < end:
            if end - pos < 4:
                raise _RejectError(DecodeReason.TRUNCATED_ELEMENT)
            group, elem = struct.unpack_from(e + "HH", buf, pos)
            tag = group << 16 | elem
            is_pixel = tag == _PIXEL_DATA
            truncated = (
                DecodeReason.TRUNCATED_PIXEL_DATA if is_pixel else DecodeReason.TRUNCATED_ELEMENT
            )
            if end - pos < 8:
                raise _RejectError(truncated)
            if tag == _ITEM_DELIM:
                if not in_item:
                    raise _RejectError(
                        DecodeReason.MALFORMED_STRUCTURE, "An item delimiter outside any item."
                    )
                return pos + 8
            if tag in (_ITEM, _SEQ_DELIM):
                raise _RejectError(
                    DecodeReason.MALFORMED_STRUCTURE, "An item tag outside a sequence."
                )
            vr = buf[pos + 4 : pos + 6]
            element_implicit = implicit or (vr not in _VRS and not b"AA" <= vr <= b"ZZ")
            if element_implicit:
                (length,) = struct.unpack_from(e + "I", buf, pos + 4)
                start = pos + 8
            elif vr in _LONG_VRS:
                if end - pos < 12:
                    raise _RejectError(truncated)
                (length,) = struct.unpack_from(e + "I", buf, pos + 8)
                start = pos + 12
            else:
                (length,) = struct.unpack_from(e + "H", buf, pos + 6)
                start = pos + 8
            if length == _UNDEFINED:
                nested_implicit = element_implicit or vr == b"UN"
                pos = self.items(start, end, implicit=nested_implicit, pixel=is_pixel, depth=depth)
                continue
            if start + length > end:
                raise _RejectError(truncated)
            pos = start + length
        if in_item:  # an undefined-length item must end with its delimiter
            raise _RejectError(DecodeReason.TRUNCATED_ELEMENT)
        return pos

    def items(self, pos: int, end: int, *, implicit: bool, pixel: bool, depth: int) -> int:
        """Walk the items of an undefined-length sequence or encapsulated pixel data."""
        truncated = DecodeReason.TRUNCATED_PIXEL_DATA if pixel else DecodeReason.TRUNCATED_ELEMENT
        buf, e = self.buf, self.e
        while True:
            if end - pos < 8:
                raise _RejectError(truncated)
            group, elem, length = struct.unpack_from(e + "HHI", buf, pos)
            tag = group << 16 | elem
            pos += 8
            if tag == _SEQ_DELIM:
                return pos
            if tag != _ITEM:
                raise _RejectError(
                    DecodeReason.MALFORMED_STRUCTURE, "A sequence holds something other than items."
                )
            if length == _UNDEFINED:
                if pixel:
                    raise _RejectError(
                        DecodeReason.MALFORMED_STRUCTURE, "A pixel data fragment has no length."
                    )
                pos = self.dataset(
                    pos, end, parent_implicit=implicit, in_item=True, depth=depth + 1
                )
                continue
            if pos + length > end:
                raise _RejectError(truncated)
            pos += length


# ---------------------------------------------------------------------------------------
# Parsing with pydicom and reading values safely


def _parse(data: bytes) -> tuple[Dataset, _Structure]:
    """Structural check, then pydicom parse. Raises `_RejectError` when there is no dataset."""
    structure = _check_structure(data)
    try:
        ds = pydicom.dcmread(BytesIO(data), force=True)
    except Exception as exc:
        raise _RejectError(
            structure.problem or DecodeReason.UNREADABLE_DICOM,
            "pydicom could not parse the dataset.",
        ) from exc
    if len(ds) == 0:
        raise _RejectError(structure.problem or DecodeReason.TRUNCATED_HEADER)
    return ds, structure


def _value(ds: Dataset, keyword: str) -> Any:
    """The element's value, or None when absent, empty or not convertible."""
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    if value is None or isinstance(value, np.ndarray):
        return value
    if not isinstance(value, int | float) and hasattr(value, "__len__") and len(value) == 0:
        return None
    return value


def _opt_int(ds: Dataset, keyword: str) -> int | None:
    """An int-valued element, None when absent or unusable (header use: never raises)."""
    try:
        return _int_value(ds, keyword)
    except _RejectError:
        return None


def _int_value(ds: Dataset, keyword: str) -> int | None:
    """An integer element; None when absent; `_RejectError(invalid_tag_value)` when unusable."""
    value = _value(ds, keyword)
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, int | float):
        try:
            value = int(str(value).strip())
        except (TypeError, ValueError) as exc:
            raise _RejectError(
                DecodeReason.INVALID_TAG_VALUE, f"{keyword} is not a single integer."
            ) from exc
    if isinstance(value, float) and not value.is_integer():
        raise _RejectError(DecodeReason.INVALID_TAG_VALUE, f"{keyword} is not a single integer.")
    return int(value)


def _float_value(ds: Dataset, keyword: str) -> float | None:
    """A single decimal element; None when absent; `_RejectError` when unusable or non-finite."""
    value = _value(ds, keyword)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise _RejectError(DecodeReason.INVALID_TAG_VALUE, f"{keyword} is not a number.") from exc
    if not math.isfinite(number):
        raise _RejectError(DecodeReason.INVALID_TAG_VALUE, f"{keyword} is not finite.")
    return number


def _str_value(ds: Dataset, keyword: str) -> str | None:
    value = _value(ds, keyword)
    if value is None:
        return None
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _str_tuple(ds: Dataset, keyword: str) -> tuple[str, ...]:
    value = _value(ds, keyword)
    if value is None:
        return ()
    if isinstance(value, str):
        values: list[Any] = [value]
    elif isinstance(value, Iterable):
        values = list(value)
    else:
        values = [value]
    return tuple(str(v).strip().upper() for v in values)


def _tag_list(ds: Dataset, keyword: str) -> tuple[int, ...]:
    """An AT element (e.g. Frame Increment Pointer) as a tuple of tag ints."""
    value = _value(ds, keyword)
    if value is None:
        return ()
    values = [value] if isinstance(value, int) else value
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError):
        return ()


def _tag_name(tag: int) -> str:
    keyword = pydicom.datadict.keyword_for_tag(tag)
    return keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _effective_ts(layout: _Layout) -> tuple[str, bool]:
    """The transfer syntax to decode with and whether it was declared (vs inferred)."""
    if layout.declared_ts:
        return layout.declared_ts, True
    if not layout.little_endian:
        return _EXPLICIT_BE, False
    return (_IMPLICIT_LE if layout.implicit_vr else _EXPLICIT_LE), False


def _pixel_encapsulated(ds: Dataset) -> bool:
    try:
        element = ds.get_item(_PIXEL_DATA)
    except Exception:
        return False
    if element is None:
        return False
    if isinstance(element, DataElement):
        return bool(element.is_undefined_length)
    return bool(element.length == _UNDEFINED)


def _build_header(ds: Dataset, structure: _Structure) -> DicomHeader:
    ts, declared = _effective_ts(structure.layout)
    frames = _opt_int(ds, "NumberOfFrames")
    if frames is None and _value(ds, "NumberOfFrames") is None:
        frames = 1  # absent means single frame; present but unusable stays None
    return DicomHeader(
        is_part10=structure.layout.is_part10,
        transfer_syntax_uid=ts,
        transfer_syntax_declared=declared,
        modality=_str_value(ds, "Modality"),
        sop_class_uid=_str_value(ds, "SOPClassUID"),
        rows=_opt_int(ds, "Rows"),
        cols=_opt_int(ds, "Columns"),
        frames=frames,
        bits_allocated=_opt_int(ds, "BitsAllocated"),
        bits_stored=_opt_int(ds, "BitsStored"),
        pixel_representation=_opt_int(ds, "PixelRepresentation"),
        samples_per_pixel=_opt_int(ds, "SamplesPerPixel"),
        photometric_interpretation=_str_value(ds, "PhotometricInterpretation"),
        image_type=_str_tuple(ds, "ImageType"),
        burned_in_annotation=_str_value(ds, "BurnedInAnnotation"),
        has_pixel_data=_PIXEL_DATA in ds,
        pixel_data_encapsulated=_pixel_encapsulated(ds),
        frame_increment_pointer=tuple(_tag_name(t) for t in _tag_list(ds, "FrameIncrementPointer")),
    )


def read_header(data: bytes) -> DicomHeader:
    """Non-PHI summary of a DICOM object without decoding its pixels.

    Raises `DecodeError` when the bytes are not DICOM or no dataset can be parsed. Defects
    further in (truncated pixel data, unsupported syntax, ...) do not raise here: the header
    describes what is there and `decode_dicom` reports the defect.
    """
    try:
        with _quiet_pydicom():
            ds, structure = _parse(bytes(data))
            return _build_header(ds, structure)
    except _RejectError as exc:
        raise DecodeError(exc.reason, exc.message) from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        raise DecodeError(DecodeReason.UNREADABLE_DICOM) from None


# ---------------------------------------------------------------------------------------
# Decoding


def decode_dicom(
    data: bytes,
    *,
    preferred_view: str = "anterior",
    patient_hash_key: bytes = DEFAULT_PATIENT_HASH_KEY,
    decode_timeout_s: float = 10.0,
) -> ImageRecord:
    """Decode one DICOM object into a float32 planar count image plus its metadata.

    `preferred_view` picks the frame of a multi-view static NM object; `patient_hash_key`
    keys the one-way hash of the Patient ID; compressed pixel data must decode within
    `decode_timeout_s`. Raises `DecodeError` (and nothing else) when no trustworthy 2-D
    count image can be produced; a bad argument raises ValueError.
    """
    if not decode_timeout_s > 0:
        raise ValueError("decode_timeout_s must be positive")
    header: DicomHeader | None = None
    try:
        with _quiet_pydicom():
            ds, structure = _parse(bytes(data))
            header = _build_header(ds, structure)
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
    except _RejectError as exc:
        raise DecodeError(exc.reason, exc.message, header=header) from None
    except BaseException:
        # last resort (BaseException: codec panics do not derive from Exception); the
        # original text may quote tag values, so it is dropped on purpose
        raise DecodeError(DecodeReason.UNREADABLE_DICOM, header=header) from None


def _decode_parsed(
    ds: Dataset,
    structure: _Structure,
    header: DicomHeader,
    *,
    preferred_view: str,
    patient_hash_key: bytes,
    decode_timeout_s: float,
) -> ImageRecord:
    if structure.problem is not None:
        raise _RejectError(structure.problem)

    # --- transfer syntax and pixel data presence
    encapsulated = header.pixel_data_encapsulated
    if _PIXEL_DATA not in ds:
        if any(tag in ds for tag in _FLOAT_PIXEL_DATA):
            raise _RejectError(
                DecodeReason.MISSING_PIXEL_DATA, "The object holds float pixel data only."
            )
        raise _RejectError(DecodeReason.MISSING_PIXEL_DATA)
    if not header.transfer_syntax_declared and encapsulated:
        raise _RejectError(DecodeReason.MISSING_TRANSFER_SYNTAX)
    ts = UID(header.transfer_syntax_uid or "")
    if not ts.is_transfer_syntax:
        raise _RejectError(
            DecodeReason.UNSUPPORTED_TRANSFER_SYNTAX, "The transfer syntax UID is not recognised."
        )
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise _RejectError(
            DecodeReason.UNSUPPORTED_TRANSFER_SYNTAX,
            f"No pixel decoder exists for {ts.name}.",
        ) from None
    if not decoder.is_available:
        raise _RejectError(
            DecodeReason.UNSUPPORTED_TRANSFER_SYNTAX,
            f"No installed plugin decodes {ts.name}.",
        )
    if encapsulated != ts.is_encapsulated:
        raise _RejectError(
            DecodeReason.MALFORMED_STRUCTURE,
            "Pixel data encapsulation contradicts the transfer syntax.",
        )

    # --- pixel description
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
            if _value(ds, keyword) is None:
                raise _RejectError(DecodeReason.MISSING_REQUIRED_TAG, f"{keyword} is missing.")
            raise _RejectError(DecodeReason.INVALID_TAG_VALUE, f"{keyword} has an unusable value.")
    # the header read these with the same converters; all are present and usable here
    rows, cols = int(header.rows or 0), int(header.cols or 0)
    bits_allocated = int(header.bits_allocated or 0)
    bits_stored = int(header.bits_stored or 0)
    pixel_representation = header.pixel_representation
    samples = int(header.samples_per_pixel or 0)
    photometric = (header.photometric_interpretation or "").upper()
    frames = int(header.frames or 0)

    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise _RejectError(DecodeReason.COLOUR_IMAGE)
    if bits_allocated not in (8, 16):
        raise _RejectError(
            DecodeReason.UNSUPPORTED_BITS_ALLOCATED,
            f"Bits Allocated is {bits_allocated}; only 8 and 16 are decoded.",
        )
    if not 1 <= bits_stored <= bits_allocated:
        raise _RejectError(
            DecodeReason.INVALID_TAG_VALUE, "Bits Stored is outside 1..Bits Allocated."
        )
    if pixel_representation not in (0, 1):
        raise _RejectError(DecodeReason.INVALID_TAG_VALUE, "Pixel Representation is not 0 or 1.")
    if not (1 <= rows <= MAX_MATRIX and 1 <= cols <= MAX_MATRIX):
        raise _RejectError(
            DecodeReason.BAD_GEOMETRY,
            f"Rows and Columns must be within 1..{MAX_MATRIX}.",
        )
    if not 1 <= frames <= MAX_FRAMES:
        raise _RejectError(
            DecodeReason.BAD_GEOMETRY, f"Number of Frames must be within 1..{MAX_FRAMES}."
        )

    # --- which frame is the planar view
    frame_index, view, detector_item = _select_frame(ds, header, frames, preferred_view)

    # --- byte count (native only: encapsulated frames are checked by the decoder)
    if not encapsulated:
        expected = rows * cols * frames * samples * (bits_allocated // 8)
        actual = len(ds.PixelData)
        if actual not in (expected, expected + 1):
            raise _RejectError(
                DecodeReason.PIXEL_LENGTH_MISMATCH,
                f"Pixel Data holds {actual} bytes where the header implies {expected}.",
            )

    # --- rescale (validated before the expensive part)
    slope = _float_value(ds, "RescaleSlope")
    intercept = _float_value(ds, "RescaleIntercept")
    if slope == 0.0:
        raise _RejectError(DecodeReason.INVALID_TAG_VALUE, "Rescale Slope is zero.")

    # --- decode
    if ds.file_meta.get("TransferSyntaxUID") != ts:
        ds.file_meta.TransferSyntaxUID = ts  # inferred syntax: the decoder needs it
    index = frame_index if frames > 1 else None
    if encapsulated:
        _check_codestream_size(ds, ts, frame_index, frames, rows, cols)
        raw = _call_with_timeout(lambda: _decode_frame(ds, index), decode_timeout_s)
    else:
        raw = _decode_frame(ds, index)
    if raw.shape != (rows, cols) or raw.dtype.kind not in "ui":
        raise _RejectError(
            DecodeReason.CORRUPT_PIXEL_DATA, "The decoded frame does not match Rows x Columns."
        )

    pixels = _to_counts(ds, raw, slope, intercept)
    return ImageRecord(
        pixels=pixels,
        rows=rows,
        cols=cols,
        pixel_spacing_mm=_pixel_spacing(ds),
        modality=header.modality or "",
        sop_class_uid=header.sop_class_uid or "",
        sop_instance_uid=_str_value(ds, "SOPInstanceUID") or "",
        study_instance_uid=_str_value(ds, "StudyInstanceUID") or "",
        series_instance_uid=_str_value(ds, "SeriesInstanceUID") or "",
        patient_hash=_patient_hash(ds, patient_hash_key),
        transfer_syntax_uid=str(ts),
        bits_allocated=bits_allocated,
        photometric_interpretation=photometric,
        frames=frames,
        frame_index=frame_index,
        view=view,
        radiopharmaceutical=_radiopharmaceutical(ds),
        collimator=_collimator(ds, detector_item),
        burned_in_annotation=header.burned_in_annotation,
        image_type=header.image_type,
        total_counts=float(pixels.sum(dtype=np.float64)),
        max_count=float(pixels.max()),
        zero_fraction=float(np.count_nonzero(pixels == 0) / pixels.size),
    )


def _decode_frame(ds: Dataset, index: int | None) -> np.ndarray:
    """Decode one frame (or the only frame) with pydicom's decoders and installed plugins."""
    _QUIET_STATE.depth = getattr(_QUIET_STATE, "depth", 0) + 1  # may run in a worker thread
    try:
        arr = pydicom.pixels.pixel_array(ds, index=index)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        # BaseException on purpose: Rust codecs (pylibjpeg-rle) raise pyo3's PanicException,
        # which does not derive from Exception
        raise _RejectError(DecodeReason.CORRUPT_PIXEL_DATA) from exc
    finally:
        _QUIET_STATE.depth -= 1
    return np.asarray(arr)


_JPEG_SOF: Final = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC)}) | {
    0xCD,
    0xCE,
    0xCF,
    0xF7,  # JPEG-LS SOF55
}


def _check_codestream_size(
    ds: Dataset, ts: UID, index: int, frames: int, rows: int, cols: int
) -> None:
    """Refuse a JPEG / JPEG-LS / JPEG 2000 frame whose own header disagrees with Rows x Columns.

    Codecs size their output from the codestream, not from the DICOM header, so a crafted
    stream could ask for gigabytes (a decompression bomb) before anything else notices.
    """
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
        raise _RejectError(
            DecodeReason.CORRUPT_PIXEL_DATA, "The compressed frame cannot be located."
        ) from exc
    size = _j2k_size(frame) if is_j2k else _jpeg_size(frame)
    if size != (rows, cols):
        raise _RejectError(
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


_T = TypeVar("_T")


def _call_with_timeout(fn: Callable[[], _T], timeout_s: float) -> _T:
    """Run `fn` in a daemon worker thread; `_RejectError(decode_timeout)` if it overruns.

    The overrunning thread cannot be killed; it is a daemon, so it never blocks exit.
    """
    result: list[_T] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    worker = threading.Thread(target=work, name="scintiflow-pixel-decode", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise _RejectError(
            DecodeReason.DECODE_TIMEOUT,
            f"Decoding did not finish within {timeout_s:g} s.",
        )
    if error:
        raise error[0]
    return result[0]


def _to_counts(
    ds: Dataset, raw: np.ndarray, slope: float | None, intercept: float | None
) -> np.ndarray:
    """Stored values -> float32 counts (rescale or modality LUT applied)."""
    if slope is None and intercept is None and "ModalityLUTSequence" in ds:
        try:
            mapped = apply_modality_lut(raw, ds)
        except Exception as exc:
            raise _RejectError(
                DecodeReason.INVALID_TAG_VALUE, "The Modality LUT cannot be applied."
            ) from exc
        pixels = np.asarray(mapped, dtype=np.float32)
    elif (slope is None or slope == 1.0) and not intercept:
        pixels = raw.astype(np.float32)
    else:
        scaled = raw.astype(np.float64) * (1.0 if slope is None else slope) + (intercept or 0.0)
        pixels = scaled.astype(np.float32)
    if not np.isfinite(pixels).all():
        raise _RejectError(DecodeReason.INVALID_TAG_VALUE, "Rescaled pixel values are not finite.")
    return np.ascontiguousarray(pixels)


# ---------------------------------------------------------------------------------------
# Frames and views


def _select_frame(
    ds: Dataset, header: DicomHeader, frames: int, preferred_view: str
) -> tuple[int, str | None, Dataset | None]:
    """Pick the planar frame: (frame index, its view, its Detector Information item)."""
    pointers = set(_tag_list(ds, "FrameIncrementPointer"))
    kind = header.image_type[2] if len(header.image_type) > 2 else ""
    if kind in _TOMO_TYPES or pointers & _TOMO_POINTERS:
        raise _RejectError(DecodeReason.TOMOGRAPHIC_NOT_SUPPORTED)
    if kind in _DYNAMIC_TYPES or pointers & _DYNAMIC_POINTERS:
        raise _RejectError(DecodeReason.DYNAMIC_NOT_SUPPORTED)

    detectors = _sequence(ds, "DetectorInformationSequence")
    if frames == 1:
        vector = _int_vector(ds, "DetectorVector")
        item = _detector_for(detectors, vector[0] if len(vector) == 1 else 1)
        return 0, _single_frame_view(ds, item), item

    if _DETECTOR_VECTOR not in pointers:
        if (header.modality or "").upper() == "NM" and frames >= MANY_FRAMES:
            raise _RejectError(
                DecodeReason.TOMOGRAPHIC_NOT_SUPPORTED,
                f"{frames} unlabeled frames look like tomographic projections.",
            )
        raise _RejectError(
            DecodeReason.AMBIGUOUS_MULTIFRAME,
            f"{frames} frames and no Detector Vector to tell their views apart.",
        )
    vector = _int_vector(ds, "DetectorVector")
    if len(vector) != frames:
        raise _RejectError(
            DecodeReason.AMBIGUOUS_MULTIFRAME, "Detector Vector does not list one entry per frame."
        )
    items = [_detector_for(detectors, number) for number in vector]
    views = [_view_of(item) if item is not None else None for item in items]
    if any(view is None for view in views):
        raise _RejectError(
            DecodeReason.AMBIGUOUS_MULTIFRAME, "Some frames have no identifiable view."
        )
    matches = [i for i, view in enumerate(views) if view == preferred_view]
    if not matches:
        raise _RejectError(DecodeReason.VIEW_NOT_FOUND)
    if len(matches) > 1:
        raise _RejectError(
            DecodeReason.AMBIGUOUS_MULTIFRAME, "Several frames carry the preferred view."
        )
    index = matches[0]
    return index, views[index], items[index]


def _sequence(ds: Dataset, keyword: str) -> list[Dataset]:
    value = _value(ds, keyword)
    if value is None:
        return []
    try:
        return [item for item in value if isinstance(item, Dataset)]
    except TypeError:
        return []


def _int_vector(ds: Dataset, keyword: str) -> list[int]:
    value = _value(ds, keyword)
    if value is None:
        return []
    values = [value] if isinstance(value, int | float | str) else list(value)
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        return []


def _detector_for(detectors: list[Dataset], number: int) -> Dataset | None:
    """Detector Information item for a 1-based detector number."""
    if 1 <= number <= len(detectors):
        return detectors[number - 1]
    return None


def _view_of(item: Dataset) -> str | None:
    """Canonical view from an item's View Code Sequence (meaning, else known code)."""
    codes = _sequence(item, "ViewCodeSequence")
    if not codes:
        return None
    code = codes[0]
    meaning = _str_value(code, "CodeMeaning")
    value = _str_value(code, "CodeValue")
    if value in _VIEW_CODES:
        return _VIEW_CODES[value]
    if meaning:
        return normalise_view(meaning)
    return None


def _single_frame_view(ds: Dataset, item: Dataset | None) -> str | None:
    """View of a single-frame object: detector item, top-level view code, View Position."""
    if item is not None and (view := _view_of(item)):
        return view
    if view := _view_of(ds):
        return view
    position = _str_value(ds, "ViewPosition")
    return normalise_view(position) if position else None


# ---------------------------------------------------------------------------------------
# Other metadata


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm from Pixel Spacing, else Imager Pixel Spacing."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _value(ds, keyword)
        if value is None:
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0:
            return (row, col)
    return None


def _patient_hash(ds: Dataset, key: bytes) -> str | None:
    """Keyed one-way hash of the Patient ID; the ID itself is never kept."""
    patient_id = _str_value(ds, "PatientID")
    return hash_identifier(patient_id, key) if patient_id else None


def _radiopharmaceutical(ds: Dataset) -> str | None:
    """Radiopharmaceutical name, else its code meaning, else the radionuclide's meaning."""
    for item in _sequence(ds, "RadiopharmaceuticalInformationSequence"):
        if name := _str_value(item, "Radiopharmaceutical"):
            return name
        for keyword in ("RadiopharmaceuticalCodeSequence", "RadionuclideCodeSequence"):
            for code in _sequence(item, keyword):
                if meaning := _str_value(code, "CodeMeaning"):
                    return meaning
    return None


def _collimator(ds: Dataset, detector_item: Dataset | None) -> str | None:
    """Collimator Type (defined terms such as PINH, PARA), else the collimator's name.

    The type comes first because it is a defined term the data checks can test; the free
    text name is the fallback. The frame's own detector item wins over top-level tags.
    """
    sources = [detector_item] if detector_item is not None else []
    sources.append(ds)
    for source in sources:
        for keyword in ("CollimatorType", "CollimatorGridName"):
            if text := _str_value(source, keyword):
                return text
    return None
