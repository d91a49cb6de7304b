"""Which frame of an object is the planar view, and what view a frame shows.

Multi-frame static NM objects are resolved to one frame through the Frame Increment Pointer
-> Detector Vector -> Detector Information Sequence -> View Code Sequence. When every frame
has a view but none matches the preferred view, the reason is `view_not_found`; when views
are missing, not unique, or the object has no detector vector, it is `ambiguous_multiframe`.
Tomographic and dynamic objects (by Image Type value 3 or by what the frames step through)
are rejected outright.
"""

from __future__ import annotations

from typing import Final

from pydicom.dataset import Dataset

from scintiflow.ingest.dicom.header import DicomHeader
from scintiflow.ingest.dicom.reasons import DecodeReason, RejectError
from scintiflow.ingest.dicom.values import int_vector, sequence_items, str_value, tag_list

MANY_FRAMES: Final = 32  # an NM object with this many unlabeled frames is SPECT-like
_DETECTOR_VECTOR: Final = 0x00540020

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


def select_frame(
    ds: Dataset, header: DicomHeader, frames: int, preferred_view: str
) -> tuple[int, str | None, Dataset | None]:
    """Pick the planar frame: (frame index, its view, its Detector Information item)."""
    pointers = set(tag_list(ds, "FrameIncrementPointer"))
    kind = header.image_type[2] if len(header.image_type) > 2 else ""
    if kind in _TOMO_TYPES or pointers & _TOMO_POINTERS:
        raise RejectError(DecodeReason.TOMOGRAPHIC_NOT_SUPPORTED)
    if kind in _DYNAMIC_TYPES or pointers & _DYNAMIC_POINTERS:
        raise RejectError(DecodeReason.DYNAMIC_NOT_SUPPORTED)

    detectors = sequence_items(ds, "DetectorInformationSequence")
    if frames == 1:
        vector = int_vector(ds, "DetectorVector")
        item = _detector_for(detectors, vector[0] if len(vector) == 1 else 1)
        return 0, _single_frame_view(ds, item), item

    if _DETECTOR_VECTOR not in pointers:
        if (header.modality or "").upper() == "NM" and frames >= MANY_FRAMES:
            raise RejectError(
                DecodeReason.TOMOGRAPHIC_NOT_SUPPORTED,
                f"{frames} unlabeled frames look like tomographic projections.",
            )
        raise RejectError(
            DecodeReason.AMBIGUOUS_MULTIFRAME,
            f"{frames} frames and no Detector Vector to tell their views apart.",
        )
    vector = int_vector(ds, "DetectorVector")
    if len(vector) != frames:
        raise RejectError(
            DecodeReason.AMBIGUOUS_MULTIFRAME, "Detector Vector does not list one entry per frame."
        )
    items = [_detector_for(detectors, number) for number in vector]
    views = [_view_of(item) if item is not None else None for item in items]
    if any(view is None for view in views):
        raise RejectError(
            DecodeReason.AMBIGUOUS_MULTIFRAME, "Some frames have no identifiable view."
        )
    matches = [i for i, view in enumerate(views) if view == preferred_view]
    if not matches:
        raise RejectError(DecodeReason.VIEW_NOT_FOUND)
    if len(matches) > 1:
        raise RejectError(
            DecodeReason.AMBIGUOUS_MULTIFRAME, "Several frames carry the preferred view."
        )
    index = matches[0]
    return index, views[index], items[index]


def _detector_for(detectors: list[Dataset], number: int) -> Dataset | None:
    """Detector Information item for a 1-based detector number."""
    if 1 <= number <= len(detectors):
        return detectors[number - 1]
    return None


def _view_of(item: Dataset) -> str | None:
    """Canonical view from an item's View Code Sequence (meaning, else known code)."""
    codes = sequence_items(item, "ViewCodeSequence")
    if not codes:
        return None
    code = codes[0]
    meaning = str_value(code, "CodeMeaning")
    value = str_value(code, "CodeValue")
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
    position = str_value(ds, "ViewPosition")
    return normalise_view(position) if position else None
