"""Keeping pydicom quiet while a decode runs.

pydicom's validation warnings and log records quote tag values verbatim ("Invalid value for
VR DA: '...'"), which would put PHI into logs. Inside `quiet_pydicom` the calling thread's
pydicom log records are dropped and warnings are ignored; pydicom logs normally elsewhere.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

_QUIET_STATE = threading.local()
_WARNINGS_LOCK = threading.Lock()


class _DropWhileDecoding(logging.Filter):
    """Drops 'pydicom' log records emitted by a thread that is inside a decode."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(_QUIET_STATE, "depth", 0) == 0


_PYDICOM_LOG_FILTER: Final = _DropWhileDecoding()
# filters do not apply to records propagated from child loggers: name each one that logs
for _name in ("pydicom", "pydicom.pixels.decoders.base", "pydicom.pixels.utils"):
    logging.getLogger(_name).addFilter(_PYDICOM_LOG_FILTER)


@contextmanager
def drop_pydicom_logs() -> Iterator[None]:
    """Drop pydicom's log records emitted by the calling thread (e.g. a decode worker)."""
    _QUIET_STATE.depth = getattr(_QUIET_STATE, "depth", 0) + 1
    try:
        yield
    finally:
        _QUIET_STATE.depth -= 1


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log records for the calling thread's decode.

    `warnings.catch_warnings` swaps process-global state and is not thread-safe before
    Python 3.14; the lock keeps concurrent decodes from interleaving their save/restore
    (which could leave every warning in the process ignored, or let one through).
    """
    with drop_pydicom_logs(), _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
