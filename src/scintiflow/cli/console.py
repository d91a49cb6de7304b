"""What every verb shares: the rich console, the progress bar and opening a store URL.

rich and the storage layer are imported inside the functions, so `--help` stays instant.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from rich.console import Console
    from rich.progress import Progress

    from scintiflow.storage import ObjectStore


def make_console() -> Console:
    """The console a verb prints to: the terminal's width, or 160 columns when piped."""
    import sys

    from rich.console import Console

    # Piped output (CI logs, `make demo | tee`) gets a wide table instead of rich's 80 columns.
    return Console(width=None if sys.stdout.isatty() else 160)


def progress_bar(console: Console) -> Progress:
    """A transient bar (description, bar, done/total, elapsed) that leaves no trace in logs."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


@contextmanager
def counting_progress(console: Console, description: str) -> Iterator[Callable[[int], None]]:
    """A `progress_bar` with no known total, for the duration of the block; yields the callback
    that takes how many items are done so far."""
    with progress_bar(console) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done: progress.update(task, completed=done)


def open_url(url: str) -> ObjectStore:
    """The store behind a URL; a URL that names no store is a usage error, not a traceback."""
    from scintiflow.storage import StoreError, open_store

    try:
        return open_store(url)
    except StoreError as exc:
        raise typer.BadParameter(str(exc)) from None
