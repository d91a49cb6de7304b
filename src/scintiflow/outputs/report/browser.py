"""Headless Chromium: print the page to PDF, take screenshots, dump the DOM (no network)."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from scintiflow.outputs.report.reasons import BROWSER_FLAGS, DEFAULT_BROWSER, ReportError

# --------------------------------------------------------------------------------------------
# Headless Chromium


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
    timeout_s: float = 120.0,
) -> bytes:
    """Run headless Chromium on a local HTML file with a fresh profile; its stdout.

    Raises `ReportError` (`browser_unavailable`, `browser_failed`, `browser_timeout`); the
    browser's own output is not quoted (it can echo page content).
    """
    exe = _browser_path(browser)
    with tempfile.TemporaryDirectory(prefix="scintiflow-chromium-") as profile:
        cmd = [
            exe,
            *BROWSER_FLAGS,
            f"--user-data-dir={profile}",
            *args,
            target.resolve().as_uri(),
        ]
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
    timeout_s: float = 120.0,
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
    timeout_s: float = 120.0,
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
    timeout_s: float = 120.0,
) -> str:
    """The DOM after load, serialised by headless Chromium (`--dump-dom`)."""
    return run_browser(["--dump-dom"], html_path, browser=browser, timeout_s=timeout_s).decode(
        "utf-8", "replace"
    )
