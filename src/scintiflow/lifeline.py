"""A launcher whose command dies with its parent: `python -m scintiflow.lifeline PID CMD ARG...`.

On Linux it asks the kernel for SIGTERM when the parent goes (prctl PR_SET_PDEATHSIG, kept
across exec), checks the parent `PID` is still the one that started it (it may have died
before the request), then execs `CMD`. Elsewhere it just execs `CMD`. The CLI starts its
local Prefect server through it (`flows.local_api`), so a CLI killed with SIGKILL leaves no
server behind.

The kernel sends the signal when the parent *thread* that forked the child ends, not the
whole process: start the child from a thread that lives as long as the child should (the
CLI's main thread).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
"""prctl option (linux/prctl.h): the signal this process gets when its parent dies."""

PARENT_GONE_EXIT = 3
"""Exit status when the parent had already died before the death signal was set."""


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> bool:
    """Ask the kernel for `sig` when this process's parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
    return True


def launcher_argv(parent_pid: int | None = None) -> list[str]:
    """The argv prefix that runs a command under this launcher, tied to `parent_pid` (default:
    this process)."""
    pid = os.getpid() if parent_pid is None else parent_pid
    return [sys.executable, "-m", "scintiflow.lifeline", str(pid)]


def main(argv: list[str]) -> None:
    """`PID CMD ARG...`: tie this process to parent `PID`, then become `CMD ARG...`."""
    if len(argv) < 2 or not argv[0].isdigit():
        sys.stderr.write("usage: python -m scintiflow.lifeline PARENT_PID CMD [ARG...]\n")
        raise SystemExit(2)
    parent_pid, command = int(argv[0]), argv[1:]
    die_with_parent()
    if os.getppid() != parent_pid:
        raise SystemExit(PARENT_GONE_EXIT)  # reparented already: the parent is gone
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
