"""Options several verbs share, and the parsers that turn their text into values."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

OutUrl = Annotated[str, typer.Option("--out", help="Store URL to write to.")]
NightOpt = Annotated[
    str | None, typer.Option("--night", help="Night as YYYY-MM-DD (default: today).")
]
LrOpt = Annotated[
    float | None,
    typer.Option(min=0.0, help="Peak AdamW learning rate (default: each arch's own)."),
]


def parse_night(night: str | None) -> date:
    """`--night` as a date (default: today); anything but YYYY-MM-DD is a usage error."""
    if night is None:
        return date.today()
    try:
        return date.fromisoformat(night)
    except ValueError:
        raise typer.BadParameter(
            f"{night!r} is not a YYYY-MM-DD date", param_hint="--night"
        ) from None


def parse_archs(archs: str) -> list[str]:
    """`--archs` (`all` or a comma-separated list) as architecture names, each one known."""
    from scintiflow.ml.models import ARCHS, MODEL_SPECS

    names = list(ARCHS) if archs.strip() == "all" else [a.strip() for a in archs.split(",")]
    unknown = [a for a in names if a not in MODEL_SPECS]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown architecture(s) {unknown}; known: all, {', '.join(sorted(MODEL_SPECS))}",
            param_hint="--archs",
        )
    return names
