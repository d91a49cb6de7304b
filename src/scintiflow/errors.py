"""One exception base for the package: every rejection and failure carries a reason code."""

from __future__ import annotations


class ScintiflowError(Exception):
    """An error with a stable, documented reason code (`reason`), safe to log and count.

    The message never quotes DICOM tag values (they may be identifiers); the code is what
    reports, manifests and quarantine files record.
    """

    reason: str = "error"

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message or (reason or self.reason))
        if reason is not None:
            self.reason = reason


__all__ = ["ScintiflowError"]
