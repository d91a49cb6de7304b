"""Headless Chromium on a local HTML file: PDF, screenshot, DOM; and the PDF time limit.

Debian's `/usr/bin/chromium`, a fresh profile per call, nothing that reaches the network.
The browser's own output is never quoted in errors or logs (it can echo page content).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from scintiflow.outputs.report.reasons import ReportError

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

PDF_TIMEOUT_BASE_S = 60.0
PDF_TIMEOUT_PER_STUDY_S = 0.04
PDF_TIMEOUT_MAX_S = 900.0
BROWSER_TIMEOUT_S = 120.0
"""Time limit of a screenshot or DOM dump (one page, no print layout)."""


def pdf_timeout(studies: int) -> float:
    """The PDF step's time limit: 60 s + 40 ms per study, at most 15 minutes.

    Printing grows with the page (a worklist row per study, about four per A4 page): a
    5000-study night needs minutes, where a fixed 120 s limit timed out.
    """
    return min(PDF_TIMEOUT_MAX_S, PDF_TIMEOUT_BASE_S + PDF_TIMEOUT_PER_STUDY_S * max(0, studies))


def _browser_path(browser: str | os.PathLike[str]) -> str:
    import shutil

    path = shutil.which(os.fspath(browser))
    if path is None:
        raise ReportError(
            f"no headless browser at {os.fspath(browser)!r} (install Debian's chromium)",
            reason="browser_unavailable",
        )
    return path


def run_browser(
    args: Sequence[str],
    target: Path,
    *,
    browser: str | os.PathLike[str] = DEFAULT_BROWSER,
    timeout_s: float = BROWSER_TIMEOUT_S,
) -> bytes:
    """Run headless Chromium on a local HTML file with a fresh profile; its stdout.

    Raises `ReportError` (`browser_unavailable`, `browser_failed`, `browser_timeout`).
    """
    exe = _browser_path(browser)
    with tempfile.TemporaryDirectory(prefix="scintiflow-chromium-") as profile:
        cmd = [exe, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args, target.resolve().as_uri()]
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a timeout kills every child
        )
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise ReportError(
                f"the browser did not finish within {timeout_s:.0f} s", reason="browser_timeout"
            ) from None
        finally:
            if proc.poll() is None:  # pragma: no cover - defensive
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if proc.returncode != 0:
        raise ReportError(
            f"the browser exited with status {proc.returncode}", reason="browser_failed"
        )
    return out


def print_pdf(
    html_path: Path,
    pdf_path: Path,
    *,
    browser: str | os.PathLike[str] = DEFAULT_BROWSER,
    timeout_s: float = PDF_TIMEOUT_BASE_S,
) -> None:
    """Print a local HTML file to PDF with headless Chromium (`--print-to-pdf`)."""
    pdf_path.unlink(missing_ok=True)
    run_browser(
        [f"--print-to-pdf={pdf_path.resolve()}", "--no-pdf-header-footer"],
        html_path,
        browser=browser,
        timeout_s=timeout_s,
    )
    if not pdf_path.is_file() or not pdf_path.read_bytes()[:5] == b"%PDF-":
        raise ReportError("the browser wrote no PDF", reason="pdf_empty")


def screenshot(
    html_path: Path,
    png_path: Path,
    *,
    width: int = 1280,
    height: int = 1600,
    browser: str | os.PathLike[str] = DEFAULT_BROWSER,
    timeout_s: float = BROWSER_TIMEOUT_S,
) -> None:
    """A PNG screenshot of a local HTML file (headless Chromium `--screenshot`)."""
    png_path.unlink(missing_ok=True)
    run_browser(
        [
            f"--screenshot={png_path.resolve()}",
            f"--window-size={width},{height}",
            "--hide-scrollbars",
        ],
        html_path,
        browser=browser,
        timeout_s=timeout_s,
    )
    if not png_path.is_file():
        raise ReportError("the browser wrote no screenshot", reason="browser_failed")


def dump_dom(
    html_path: Path,
    *,
    browser: str | os.PathLike[str] = DEFAULT_BROWSER,
    timeout_s: float = BROWSER_TIMEOUT_S,
) -> str:
    """The DOM after load, serialised by headless Chromium (`--dump-dom`)."""
    out = run_browser(["--dump-dom"], html_path, browser=browser, timeout_s=timeout_s)
    return out.decode("utf-8", "replace")


def pdf_page_count(data: bytes) -> int:
    """Pages of a PDF as Chromium writes it (counts `/Type /Page` objects)."""
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


__all__ = [
    "BROWSER_FLAGS",
    "DEFAULT_BROWSER",
    "ReportError",
    "dump_dom",
    "pdf_page_count",
    "pdf_timeout",
    "print_pdf",
    "run_browser",
    "screenshot",
]
