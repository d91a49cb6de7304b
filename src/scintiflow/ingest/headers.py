"""A DICOM object's header without its pixel data, by ranged reads.

    ds = read_header(store, key)   # Dataset without (7FE0,0010), PixelData never transferred

The report needs patient and study identifiers, which sit in the header, in front of the
pixel data. `read_header` reads the first `first` bytes (`ObjectStore.get_range`: one S3
ranged GET), parses them with pydicom up to the Pixel Data element, and doubles `first`
while the prefix ends before that element is reached (a long header, a parse error in a cut
element). Past `max_first` it falls back to one full `get`. pydicom's warnings, which quote
tag values, are silenced; errors carry a reason code, never a tag value.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from scintiflow.errors import ScintiflowError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from scintiflow.storage import ObjectStore

DEFAULT_FIRST = 65536
"""Bytes of the first ranged read: covers the header of nearly every scintigraphy export."""
MAX_FIRST = 1 << 22
"""Past this many bytes the header is read with one full `get` instead."""


class HeaderError(ScintiflowError):
    """The object's header could not be parsed (`header_unreadable`); no tag value quoted."""

    reason = "header_unreadable"


def _parse(prefix: bytes, *, whole: bool) -> Dataset | None:
    """The header in `prefix`, or None when the prefix ends before the Pixel Data element.

    pydicom stops in front of Pixel Data and leaves the file position there, so a position
    short of the prefix's end proves the whole header was read. `whole`: the prefix is the
    entire object, so nothing more can be read (a parse error is final).
    """
    from pydicom import dcmread

    from scintiflow.ingest.dicom.quiet import quiet_pydicom

    fp = io.BytesIO(prefix)
    try:
        with quiet_pydicom():
            ds = dcmread(fp, stop_before_pixels=True, force=True)
    except Exception:  # a cut element, or not DICOM: its message may quote values
        if whole:
            raise HeaderError("the DICOM header could not be parsed") from None
        return None
    meta = getattr(ds, "file_meta", None)
    is_dicom = "SOPClassUID" in ds or (meta is not None and "MediaStorageSOPClassUID" in meta)
    if whole and not is_dicom:  # `force` parses any bytes: no SOP class, no DICOM object
        raise HeaderError("the object has no DICOM header")
    if whole or (is_dicom and fp.tell() < len(prefix)):
        return ds
    return None


def read_header(
    store: ObjectStore, key: str, *, first: int = DEFAULT_FIRST, max_first: int = MAX_FIRST
) -> Dataset:
    """The header of the object at `key` (no pixel data), read by prefix ranges.

    `KeyNotFoundError` / `StoreError` from the store pass through; `HeaderError` when the
    bytes are not a parseable DICOM header.
    """
    size = max(1, first)
    while size <= max_first:
        prefix = store.get_range(key, 0, size)
        whole = len(prefix) < size
        ds = _parse(prefix, whole=whole)
        if ds is not None:
            return ds
        size *= 2
    ds = _parse(store.get(key), whole=True)
    assert ds is not None  # whole=True returns a dataset or raises
    return ds


__all__ = ["DEFAULT_FIRST", "MAX_FIRST", "HeaderError", "read_header"]
