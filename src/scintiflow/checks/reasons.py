"""Reason codes of the data checks: every code, its severity and its explanation.

A `reject` code quarantines the file; a `warn` code lets it through, flagged.
"""

from __future__ import annotations

from typing import Final, Literal

from scintiflow.ingest.dicom import REASON_TEXT, DecodeReason

CHECK_VERSION: Final = "1"
"""Version of the suite's logic; bump it when an expectation or a reason code changes."""

Severity = Literal["reject", "warn"]

NM_IMAGE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.20"
NM_IMAGE_STORAGE_RETIRED: Final = "1.2.840.10008.5.1.4.1.1.5"


# ---------------------------------------------------------------------------------------
# Reason codes

STORAGE_ERRORS: Final[dict[str, str]] = {
    "missing_object": "The object was listed but had disappeared when it was read.",
    "changed_since_listing": (
        "The object was replaced after it was listed (its ETag or mtime changed); the next "
        "run reads the new version."
    ),
    "s3_error": "The object could not be read from S3 (the store kept failing after retries).",
    "missing_bucket": "The bucket holding the object does not exist (any more).",
    "read_error": "The object could not be read from its folder (permissions or an I/O error).",
    "store_error": "The object could not be read from the store (unexpected storage error).",
    "shard_failed": "The shard holding the object failed (a worker or storage failure).",
}
"""Why an input was NOT processed for an infrastructure reason. Not quarantine reasons: such
an input is listed in the manifest as `storage_error` (the night ends `partial`), never
quarantined or ledgered, and the next run retries it (docs/reliability.md)."""

_STORE_INPUT_REASONS: Final[dict[str, str]] = {
    "invalid_key": "The object's key is not a safe relative key, so it was not read.",
    "symlink_not_followed": "The name is a symbolic link; links are never followed.",
    "not_a_regular_file": "The name is not a regular file (a device, socket or pipe).",
    "too_large": "The file is far larger than any scan (over 64 MiB), so it was not read.",
}

_SUITE_REASONS: Final[dict[str, tuple[Severity, str]]] = {
    "not_nm_modality": ("reject", "The modality is not NM (nuclear medicine), e.g. a CT or MR."),
    "wrong_sop_class": (
        "reject",
        "The SOP class is not NM Image Storage (e.g. a Secondary Capture screenshot).",
    ),
    "burned_in_annotation": (
        "reject",
        "The image says it has burned-in annotation (text in the pixels may identify the "
        "patient and distorts counts).",
    ),
    "wrong_geometry": (
        "reject",
        "The matrix or field of view is not that of a thyroid view: not square, outside "
        "the allowed matrix sizes, or a field of view far beyond a neck (e.g. a whole-body "
        "scan).",
    ),
    "empty_image": ("reject", "The image holds (almost) no counts."),
    "blank_image": (
        "reject",
        "The image is blank: nearly all pixels are zero, or the counts are flat with no structure.",
    ),
    "missing_identifier": (
        "reject",
        "A required identifier (Patient ID, Study, Series or SOP Instance UID) is missing, "
        "so a result could not be attached to the right patient and study.",
    ),
    "duplicate_sop_instance": (
        "reject",
        "Another file of this night (earlier in key order) has the same SOP Instance UID.",
    ),
    "duplicate_bytes": (
        "reject",
        "Another file of this night (earlier in key order) has exactly the same bytes.",
    ),
    "low_counts": ("warn", "The image has fewer total counts than a diagnostic thyroid view."),
    "saturated_pixels": (
        "warn",
        "Many pixels sit at the image maximum (a flat top suggests clipping or saturation).",
    ),
    "unusual_pixel_spacing": (
        "warn",
        "The pixel spacing is outside the usual range for thyroid pinhole images, or the "
        "pixels are not square.",
    ),
    "missing_pixel_spacing": ("warn", "The image has no pixel spacing."),
    "missing_radiopharmaceutical": ("warn", "The radiopharmaceutical is not recorded."),
    "monochrome1_image": (
        "warn",
        "The image is MONOCHROME1 (inverted display); values are still read as counts.",
    ),
    "unexpected_view": ("warn", "The image is labelled with a view other than the preferred one."),
}

REASONS: Final[dict[str, tuple[Severity, str]]] = {
    **{reason.value: ("reject", REASON_TEXT[reason]) for reason in DecodeReason},
    **{code: ("reject", text) for code, text in _STORE_INPUT_REASONS.items()},
    **_SUITE_REASONS,
}
"""Every reason code the checks can emit: code -> (severity, plain-language explanation).

Decode codes (`scintiflow.ingest.dicom.DecodeReason`) and the store's input faults (a key that
cannot be read as a file: `invalid_key`, `symlink_not_followed`, ...) are always `reject`.
Storage errors are not here: they are `STORAGE_ERRORS`, never a property of the scan.
"""


def severity(code: str) -> Severity:
    """The severity of a reason code; unknown codes (a new storage error) reject."""
    return REASONS.get(code, ("reject", ""))[0]
