"""The structural walk over the raw bytes that runs before pydicom parses anything.

pydicom 3 loads several broken files silently, so `dcmread` raising is never relied on.
`check_structure` first locates the dataset (Part 10 with the 128-byte preamble + "DICM", or a
raw dataset whose first element is a plausible DICOM element), then walks every element the
way pydicom reads them and proves that every declared length fits in the file. A missing
transfer syntax is inferred from the encoding of the first element, as pydicom does
(`effective_ts`). Deflated datasets are inflated with a size cap (pydicom itself has none).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final

from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

from scintiflow.ingest.dicom.reasons import DecodeReason, RejectError

MIN_FILE_BYTES: Final = 132  # preamble (128) + "DICM" (4)
MAX_INFLATED_BYTES: Final = 64 * 2**20  # deflated datasets: the object size limit, too
_INFLATE_CHUNK: Final = 1 << 20  # compressed bytes fed to zlib per step
MAX_NESTING: Final = 32
MAX_ELEMENTS: Final = 50_000  # elements and items in all; an NM image has a few hundred

UNDEFINED_LENGTH: Final = 0xFFFFFFFF
_ITEM: Final = 0xFFFEE000
_ITEM_DELIM: Final = 0xFFFEE00D
_SEQ_DELIM: Final = 0xFFFEE0DD
PIXEL_DATA_TAG: Final = 0x7FE00010

_IMPLICIT_LE: Final = "1.2.840.10008.1.2"
_EXPLICIT_LE: Final = "1.2.840.10008.1.2.1"
_DEFLATED_LE: Final = "1.2.840.10008.1.2.1.99"
_EXPLICIT_BE: Final = "1.2.840.10008.1.2.2"

_VRS: Final = frozenset(str(vr).encode("ascii") for vr in STANDARD_VR)
_LONG_VRS: Final = frozenset(str(vr).encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
# groups a raw (preamble-less) dataset plausibly starts with
_RAW_START_GROUPS: Final = frozenset({0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the dataset starts and how it is encoded, from the preamble and file meta."""

    is_part10: bool
    declared_ts: str | None
    little_endian: bool
    implicit_vr: bool  # of the first top-level element (what pydicom will use)


@dataclass(frozen=True, slots=True)
class Structure:
    """What the walk found: the dataset's layout and its first structural defect."""

    layout: Layout
    problem: DecodeReason | None  # first structural defect in the dataset, if any


def check_structure(data: bytes) -> Structure:
    """Locate the dataset and prove every declared length fits in the file.

    Raises `RejectError` for input that is not DICOM at all or whose header is cut short;
    returns a dataset-level defect (truncation, bad delimiters) as `problem` so the caller can
    still read a header for the error.
    """
    if len(data) == 0:
        raise RejectError(DecodeReason.EMPTY_FILE)
    if len(data) < MIN_FILE_BYTES:
        raise RejectError(DecodeReason.TOO_SMALL)
    if data[128:132] == b"DICM":
        is_part10, pos = True, 132
    elif _plausible_raw_start(data):
        is_part10, pos = False, 0
    else:
        raise RejectError(DecodeReason.NOT_DICOM)

    pos, declared_ts = _walk_meta(data, pos)
    if pos >= len(data):
        raise RejectError(
            DecodeReason.TRUNCATED_HEADER, "The file ends after the file meta header."
        )

    body = data
    if declared_ts == _DEFLATED_LE:
        body = _inflate(data[pos:])
        pos = 0
        if not body:
            raise RejectError(DecodeReason.TRUNCATED_HEADER, "The deflated dataset is empty.")
    if len(body) - pos < 8:
        raise RejectError(
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
    layout = Layout(is_part10, declared_ts, little, implicit)
    walker = _Walker(body, little)
    try:
        walker.dataset(pos, len(body), parent_implicit=False, in_item=False, depth=0)
    except _TooManyElementsError:
        raise  # not parsed at all: pydicom would build every one of them
    except RejectError as exc:
        return Structure(layout, exc.reason)
    return Structure(layout, None)


def _plausible_raw_start(data: bytes) -> bool:
    """True when the bytes start like a DICOM element (raw dataset without a preamble)."""
    group_le, _ = struct.unpack_from("<HH", data, 0)
    group_be, _ = struct.unpack_from(">HH", data, 0)
    vr = data[4:6]
    if group_le in _RAW_START_GROUPS:
        if vr in _VRS:
            return True
        (length,) = struct.unpack_from("<I", data, 4)
        return length == UNDEFINED_LENGTH or length <= len(data) - 8
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
            raise RejectError(DecodeReason.TRUNCATED_HEADER)
        _, elem = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if end - pos < 12:
                raise RejectError(DecodeReason.TRUNCATED_HEADER)
            (length,) = struct.unpack_from("<I", data, pos + 8)
            start = pos + 12
        elif vr in _VRS:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            start = pos + 8
        else:  # implicit VR meta (non-conformant, but pydicom reads it)
            (length,) = struct.unpack_from("<I", data, pos + 4)
            start = pos + 8
        if length == UNDEFINED_LENGTH or start + length > end:
            raise RejectError(DecodeReason.TRUNCATED_HEADER)
        if elem == 0x0010:
            text = data[start : start + length].decode("ascii", "replace").strip("\x00 ")
            ts = text or None
        pos = start + length
    return pos, ts


def _inflate(payload: bytes) -> bytes:
    """Inflate a deflated dataset in chunks, never past `MAX_INFLATED_BYTES` (pydicom itself
    has no limit; a few KB can declare gigabytes)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    parts: list[bytes] = []
    total = 0
    view = memoryview(payload)
    try:
        for start in range(0, len(payload), _INFLATE_CHUNK):
            # one byte over the remaining budget: enough to see the limit is passed
            part = inflater.decompress(view[start : start + _INFLATE_CHUNK], _budget(total))
            total += len(part)
            parts.append(part)
            if total > MAX_INFLATED_BYTES:
                break
            if inflater.eof:
                break
        if total <= MAX_INFLATED_BYTES and not inflater.eof:
            part = inflater.flush()
            total += len(part)
            parts.append(part)
    except zlib.error as exc:
        raise RejectError(
            DecodeReason.MALFORMED_STRUCTURE, "The deflated dataset cannot be inflated."
        ) from exc
    if total > MAX_INFLATED_BYTES:
        raise RejectError(
            DecodeReason.MALFORMED_STRUCTURE, "The deflated dataset inflates past the size limit."
        )
    return b"".join(parts)


def _budget(total: int) -> int:
    return MAX_INFLATED_BYTES - total + 1


class _TooManyElementsError(RejectError):
    """More elements than any image holds (e.g. megabytes of zero padding, 8 bytes each)."""

    def __init__(self) -> None:
        super().__init__(
            DecodeReason.MALFORMED_STRUCTURE,
            f"The dataset holds more than {MAX_ELEMENTS} elements.",
        )


class _Walker:
    """Walks elements the way pydicom reads them, but checks every length against the end."""

    def __init__(self, buf: bytes, little: bool) -> None:
        self.buf = buf
        self.e = "<" if little else ">"
        self.count = 0

    def _counted(self) -> None:
        self.count += 1
        if self.count > MAX_ELEMENTS:
            raise _TooManyElementsError

    def dataset(
        self, pos: int, end: int, *, parent_implicit: bool, in_item: bool, depth: int
    ) -> int:
        """Walk one dataset from `pos`; return the offset after it (after its item delimiter)."""
        if depth > MAX_NESTING:
            raise RejectError(DecodeReason.MALFORMED_STRUCTURE, "Sequences are nested too deeply.")
        buf, e = self.buf, self.e
        implicit = parent_implicit or (end - pos >= 8 and _looks_implicit(buf, pos))
        while pos < end:
            self._counted()
            if end - pos < 4:
                raise RejectError(DecodeReason.TRUNCATED_ELEMENT)
            group, elem = struct.unpack_from(e + "HH", buf, pos)
            tag = group << 16 | elem
            is_pixel = tag == PIXEL_DATA_TAG
            truncated = (
                DecodeReason.TRUNCATED_PIXEL_DATA if is_pixel else DecodeReason.TRUNCATED_ELEMENT
            )
            if end - pos < 8:
                raise RejectError(truncated)
            if tag == _ITEM_DELIM:
                if not in_item:
                    raise RejectError(
                        DecodeReason.MALFORMED_STRUCTURE, "An item delimiter outside any item."
                    )
                return pos + 8
            if tag in (_ITEM, _SEQ_DELIM):
                raise RejectError(
                    DecodeReason.MALFORMED_STRUCTURE, "An item tag outside a sequence."
                )
            vr = buf[pos + 4 : pos + 6]
            element_implicit = implicit or (vr not in _VRS and not b"AA" <= vr <= b"ZZ")
            if element_implicit:
                (length,) = struct.unpack_from(e + "I", buf, pos + 4)
                start = pos + 8
            elif vr not in _VRS:
                raise RejectError(
                    DecodeReason.MALFORMED_STRUCTURE, "An element has a VR DICOM does not define."
                )
            elif vr in _LONG_VRS:
                if end - pos < 12:
                    raise RejectError(truncated)
                (length,) = struct.unpack_from(e + "I", buf, pos + 8)
                start = pos + 12
            else:
                (length,) = struct.unpack_from(e + "H", buf, pos + 6)
                start = pos + 8
            if length == UNDEFINED_LENGTH:
                nested_implicit = element_implicit or vr == b"UN"
                pos = self.items(start, end, implicit=nested_implicit, pixel=is_pixel, depth=depth)
                continue
            if start + length > end:
                raise RejectError(truncated)
            pos = start + length
        if in_item:  # an undefined-length item must end with its delimiter
            raise RejectError(DecodeReason.TRUNCATED_ELEMENT)
        return pos

    def items(self, pos: int, end: int, *, implicit: bool, pixel: bool, depth: int) -> int:
        """Walk the items of an undefined-length sequence or encapsulated pixel data."""
        truncated = DecodeReason.TRUNCATED_PIXEL_DATA if pixel else DecodeReason.TRUNCATED_ELEMENT
        buf, e = self.buf, self.e
        while True:
            self._counted()
            if end - pos < 8:
                raise RejectError(truncated)
            group, elem, length = struct.unpack_from(e + "HHI", buf, pos)
            tag = group << 16 | elem
            pos += 8
            if tag == _SEQ_DELIM:
                return pos
            if tag != _ITEM:
                raise RejectError(
                    DecodeReason.MALFORMED_STRUCTURE, "A sequence holds something other than items."
                )
            if length == UNDEFINED_LENGTH:
                if pixel:
                    raise RejectError(
                        DecodeReason.MALFORMED_STRUCTURE, "A pixel data fragment has no length."
                    )
                pos = self.dataset(
                    pos, end, parent_implicit=implicit, in_item=True, depth=depth + 1
                )
                continue
            if pos + length > end:
                raise RejectError(truncated)
            pos += length


def effective_ts(layout: Layout) -> tuple[str, bool]:
    """The transfer syntax to decode with and whether it was declared (vs inferred)."""
    if layout.declared_ts:
        return layout.declared_ts, True
    if not layout.little_endian:
        return _EXPLICIT_BE, False
    return (_IMPLICIT_LE if layout.implicit_vr else _EXPLICIT_LE), False
