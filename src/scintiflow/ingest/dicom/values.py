"""Reading element values without trusting them.

Every reader returns None for an absent or empty element. The header readers never raise;
the strict ones (`int_value`, `float_value`) raise `RejectError(invalid_tag_value)` for a
value that is present but unusable. Messages name the keyword, never the value (PHI).

A sequence (SQ) found where a text or number belongs is never turned into text: its items
may hold anything (a patient's name), and `str()` of them would carry it into the checks
table, reason files or logs. The text readers read it as absent, the number readers as
unusable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from scintiflow.ingest.dicom.reasons import DecodeReason, RejectError


def element_value(ds: Dataset, keyword: str) -> Any:
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


def is_sequence(value: Any) -> bool:
    """True for a sequence value (or a lone item): datasets where a plain value belongs."""
    if isinstance(value, Dataset):
        return True
    if isinstance(value, str | bytes | np.ndarray) or not isinstance(value, Iterable):
        return False
    try:
        return any(isinstance(v, Dataset) for v in value)
    except TypeError:
        return False


def opt_int(ds: Dataset, keyword: str) -> int | None:
    """An int-valued element, None when absent or unusable (header use: never raises)."""
    try:
        return int_value(ds, keyword)
    except RejectError:
        return None


def int_value(ds: Dataset, keyword: str) -> int | None:
    """An integer element; None when absent; `RejectError(invalid_tag_value)` when unusable."""
    value = element_value(ds, keyword)
    if value is None:
        return None
    if is_sequence(value):
        raise RejectError(DecodeReason.INVALID_TAG_VALUE, f"{keyword} is a sequence.")
    if isinstance(value, str | bytes) or not isinstance(value, int | float):
        try:
            value = int(str(value).strip())
        except (TypeError, ValueError) as exc:
            raise RejectError(
                DecodeReason.INVALID_TAG_VALUE, f"{keyword} is not a single integer."
            ) from exc
    if isinstance(value, float) and not value.is_integer():
        raise RejectError(DecodeReason.INVALID_TAG_VALUE, f"{keyword} is not a single integer.")
    return int(value)


def float_value(ds: Dataset, keyword: str) -> float | None:
    """A single decimal element; None when absent; `RejectError` when unusable or non-finite."""
    value = element_value(ds, keyword)
    if value is None:
        return None
    if is_sequence(value):
        raise RejectError(DecodeReason.INVALID_TAG_VALUE, f"{keyword} is a sequence.")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise RejectError(DecodeReason.INVALID_TAG_VALUE, f"{keyword} is not a number.") from exc
    if not math.isfinite(number):
        raise RejectError(DecodeReason.INVALID_TAG_VALUE, f"{keyword} is not finite.")
    return number


def str_value(ds: Dataset, keyword: str) -> str | None:
    """Stripped text (multi-valued elements joined with a backslash); None when empty or a
    sequence."""
    value = element_value(ds, keyword)
    if value is None or is_sequence(value):
        return None
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def str_tuple(ds: Dataset, keyword: str) -> tuple[str, ...]:
    """A multi-valued text element (e.g. Image Type) as stripped upper-case values; () when
    absent or a sequence."""
    value = element_value(ds, keyword)
    if value is None or is_sequence(value):
        return ()
    if isinstance(value, str):
        values: list[Any] = [value]
    elif isinstance(value, Iterable):
        values = list(value)
    else:
        values = [value]
    return tuple(str(v).strip().upper() for v in values)


def tag_list(ds: Dataset, keyword: str) -> tuple[int, ...]:
    """An AT element (e.g. Frame Increment Pointer) as a tuple of tag ints."""
    value = element_value(ds, keyword)
    if value is None:
        return ()
    values = [value] if isinstance(value, int) else value
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError):
        return ()


def tag_name(tag: int) -> str:
    """The tag's keyword, or "(gggg,eeee)" for a tag the dictionary does not know."""
    keyword = pydicom.datadict.keyword_for_tag(tag)
    return keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def sequence_items(ds: Dataset, keyword: str) -> list[Dataset]:
    """The items of a sequence element; [] when absent or not a sequence."""
    value = element_value(ds, keyword)
    if value is None:
        return []
    try:
        return [item for item in value if isinstance(item, Dataset)]
    except TypeError:
        return []


def int_vector(ds: Dataset, keyword: str) -> list[int]:
    """A multi-valued integer element (e.g. Detector Vector); [] when absent or unusable."""
    value = element_value(ds, keyword)
    if value is None:
        return []
    values = [value] if isinstance(value, int | float | str) else list(value)
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        return []
