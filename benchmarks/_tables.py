"""Put a benchmark's markdown table into docs/benchmarks.md between its markers."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(name: str, markdown: str, page: Path = PAGE) -> None:
    """Replace the text between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = page.read_text()
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{page.name} has no {start} ... {end} markers")
    page.write_text(pattern.sub(lambda _: f"{start}\n{markdown.rstrip()}\n{end}", text))
