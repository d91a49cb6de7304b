"""Decoding the chosen frame into float32 counts.

Compressed pixel data is decoded in a worker thread and waited on with a timeout, after its
codestream's own size has been checked against Rows x Columns. A codec stuck in C code
without releasing the GIL cannot be bounded by a thread; callers that need a hard bound
should run batches in a subprocess. Native pixel data is a bounded copy (geometry and byte
count are checked first) and is decoded inline. MONOCHROME1 images are decoded as stored
(not inverted); pixel values are counts either way and the data checks decide about them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from scintiflow.ingest.dicom.codestream import check_codestream_size
from scintiflow.ingest.dicom.pixel_format import PixelFormat
from scintiflow.ingest.dicom.quiet import drop_pydicom_logs
from scintiflow.ingest.dicom.reasons import DecodeReason, RejectError
from scintiflow.ingest.dicom.values import float_value

_T = TypeVar("_T")


def read_rescale(ds: Dataset) -> tuple[float | None, float | None]:
    """(Rescale Slope, Rescale Intercept), validated before the expensive decode."""
    slope = float_value(ds, "RescaleSlope")
    intercept = float_value(ds, "RescaleIntercept")
    if slope == 0.0:
        raise RejectError(DecodeReason.INVALID_TAG_VALUE, "Rescale Slope is zero.")
    return slope, intercept


def decode_counts(
    ds: Dataset,
    fmt: PixelFormat,
    frame_index: int,
    slope: float | None,
    intercept: float | None,
    *,
    timeout_s: float,
) -> np.ndarray:
    """The frame `frame_index` as C-contiguous float32 counts (rescale or modality LUT)."""
    if ds.file_meta.get("TransferSyntaxUID") != fmt.ts:
        ds.file_meta.TransferSyntaxUID = fmt.ts  # inferred syntax: the decoder needs it
    index = frame_index if fmt.frames > 1 else None
    if fmt.encapsulated:
        check_codestream_size(ds, fmt.ts, frame_index, fmt.frames, fmt.rows, fmt.cols)
        raw = call_with_timeout(lambda: decode_frame(ds, index), timeout_s)
    else:
        raw = decode_frame(ds, index)
    if raw.shape != (fmt.rows, fmt.cols) or raw.dtype.kind not in "ui":
        raise RejectError(
            DecodeReason.CORRUPT_PIXEL_DATA, "The decoded frame does not match Rows x Columns."
        )
    return to_counts(ds, raw, slope, intercept)


def decode_frame(ds: Dataset, index: int | None) -> np.ndarray:
    """Decode one frame (or the only frame) with pydicom's decoders and installed plugins."""
    with drop_pydicom_logs():  # may run in a worker thread
        try:
            arr = pydicom.pixels.pixel_array(ds, index=index)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            # BaseException on purpose: Rust codecs (pylibjpeg-rle) raise pyo3's
            # PanicException, which does not derive from Exception
            raise RejectError(DecodeReason.CORRUPT_PIXEL_DATA) from exc
    return np.asarray(arr)


def call_with_timeout(fn: Callable[[], _T], timeout_s: float) -> _T:
    """Run `fn` in a daemon worker thread; `RejectError(decode_timeout)` if it overruns.

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
        raise RejectError(
            DecodeReason.DECODE_TIMEOUT,
            f"Decoding did not finish within {timeout_s:g} s.",
        )
    if error:
        raise error[0]
    return result[0]


def to_counts(
    ds: Dataset, raw: np.ndarray, slope: float | None, intercept: float | None
) -> np.ndarray:
    """Stored values -> float32 counts (rescale or modality LUT applied)."""
    if slope is None and intercept is None and "ModalityLUTSequence" in ds:
        try:
            mapped = apply_modality_lut(raw, ds)
        except Exception as exc:
            raise RejectError(
                DecodeReason.INVALID_TAG_VALUE, "The Modality LUT cannot be applied."
            ) from exc
        pixels = np.asarray(mapped, dtype=np.float32)
    elif (slope is None or slope == 1.0) and not intercept:
        pixels = raw.astype(np.float32)
    else:
        scaled = raw.astype(np.float64) * (1.0 if slope is None else slope) + (intercept or 0.0)
        pixels = scaled.astype(np.float32)
    if not np.isfinite(pixels).all():
        raise RejectError(DecodeReason.INVALID_TAG_VALUE, "Rescaled pixel values are not finite.")
    return np.ascontiguousarray(pixels)
