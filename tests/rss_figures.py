"""Resident-set figures of THIS process, for the memory tests and benchmarks.

`resource.getrusage(...).ru_maxrss` is not used: Linux carries the parent's high-water mark
into a child across fork and exec (exec folds the old address space's peak into the
process's `maxrss`), so a child started from a 3 GiB pytest worker reports a peak of at
least 3 GiB whatever it does itself. `VmHWM` in /proc/self/status belongs to the current
address space only, which exec replaces: the child's own peak.
"""

from __future__ import annotations

import os
from pathlib import Path


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_now_bytes() -> int:
    """The resident set now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The highest resident set of this process since its last exec (`VmHWM`)."""
    return _status_kib("VmHWM") * 1024
