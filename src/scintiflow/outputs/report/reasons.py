"""Reason codes of the report step, and its one exception."""

from __future__ import annotations

from typing import Final

from scintiflow.errors import ScintiflowError

REPORT_REASONS: Final[dict[str, str]] = {
    "missing_predictions": "The run folder has no predictions.jsonl: it was not scored.",
    "bad_run_prefix": "The run prefix is not <results>/<YYYY-MM-DD>/<run_id>.",
    "bad_run_file": "A file of the run folder is not valid JSON.",
    "browser_unavailable": "The headless browser (Chromium) is not installed at the given path.",
    "browser_failed": "The headless browser exited with an error.",
    "browser_timeout": "The headless browser did not finish in time.",
    "pdf_empty": "The browser finished but wrote no PDF.",
    "source_unavailable": "The original DICOM object could not be read (moved or deleted).",
    "source_unreadable": "The original DICOM object's header could not be parsed.",
    "thumbnail_unavailable": "The scoring step wrote no thumbnail for this image.",
    "sc_failed": "The scoring step could not write the heatmap as a DICOM Secondary Capture.",
}
"""Reason codes of the report step: code -> plain-language explanation."""


class ReportError(ScintiflowError):
    """The report step failed; `reason` is one of `REPORT_REASONS` (message holds no PHI)."""

    reason = "report_failed"


__all__ = ["REPORT_REASONS", "ReportError"]
