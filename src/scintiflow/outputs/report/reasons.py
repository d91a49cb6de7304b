"""Names, limits and reason codes shared by the report's modules."""

from __future__ import annotations

from typing import Final

DEFAULT_BROWSER = "/usr/bin/chromium"
BROWSER_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Headless Chromium with nothing that reaches the network."""
THUMB_SIZE = 128  # px: thumbnails larger than this are downscaled (keeps report.html small)
DISCLAIMER = "Decision support, not a diagnosis: every result must be reviewed by a physician."
PRIORITY_LABELS: Final[tuple[str, ...]] = ("abnormal", "low confidence", "routine")
NORMAL_CLASS = "normal"

REPORT_REASONS: Final[dict[str, str]] = {
    "missing_predictions": "The run folder has no predictions.jsonl: it was not scored.",
    "bad_run_prefix": "The run prefix is not <results>/<YYYY-MM-DD>/<run_id>.",
    "bad_run_file": "A file of the run folder is not valid JSON.",
    "browser_unavailable": "The headless browser (Chromium) is not installed at the given path.",
    "browser_failed": "The headless browser exited with an error.",
    "browser_timeout": "The headless browser did not finish in time.",
    "pdf_empty": "The browser finished but wrote no PDF.",
    "source_unavailable": "The original DICOM object could not be read (moved or deleted).",
    "source_unreadable": "The original DICOM object could not be decoded again.",
    "overlay_unavailable": "The run has no heatmap overlay for this image.",
    "sc_failed": "The heatmap could not be written as a DICOM Secondary Capture.",
}
"""Reason codes of the report step: code -> plain-language explanation."""


class ReportError(Exception):
    """The report step failed; `reason` is one of `REPORT_REASONS` (message holds no PHI)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
