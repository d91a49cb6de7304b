"""Human reads (`readers/<name>.csv`: reader_id, key, label) and simulated readers for demos.

A read is one physician's label for one image key. Keys are content hashes (no PHI), so they
may appear in error messages. Simulated reads are for demos only and are always labelled:
their reader id must start with `simulated-`, and every report marks them as simulated.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scintiflow import CLASSES

SIMULATED_PREFIX = "simulated-"
REQUIRED_COLUMNS: tuple[str, ...] = ("reader_id", "key", "label")


class ReadersCsvError(ValueError):
    """`readers.csv` could not be used; `reason` is a stable code, the message names the row."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ReaderRead:
    """One reader's label for one image key."""

    reader_id: str
    key: str
    label: str


def read_readers_csv(data: bytes, classes: Sequence[str] = CLASSES) -> list[ReaderRead]:
    """Parse `readers.csv` (header with reader_id, key, label; other columns ignored).

    Labels are matched case-insensitively against the class names. Errors raise
    `ReadersCsvError` with a reason code (`not_utf8`, `missing_column`, `empty_field`,
    `unknown_label`, `duplicate_read`) and the 1-based line number: a reader reading the
    same key twice is ambiguous for a paired test, so it is refused rather than guessed.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ReadersCsvError("readers CSV is not UTF-8 text", reason="not_utf8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ReadersCsvError(
            f"readers CSV lacks column(s) {', '.join(missing)} (needs reader_id,key,label)",
            reason="missing_column",
        )
    reader.fieldnames = header
    known = {c.lower(): c for c in classes}
    reads: list[ReaderRead] = []
    seen: set[tuple[str, str]] = set()
    for row in reader:
        line = reader.line_num
        values = {c: (row.get(c) or "").strip() for c in REQUIRED_COLUMNS}
        if not any(values.values()):
            continue  # blank line
        empty = [c for c, v in values.items() if not v]
        if empty:
            raise ReadersCsvError(
                f"readers CSV line {line}: empty {', '.join(empty)}", reason="empty_field"
            )
        label = known.get(values["label"].lower())
        if label is None:
            raise ReadersCsvError(
                f"readers CSV line {line}: unknown label {values['label']!r} "
                f"(expected one of {', '.join(classes)})",
                reason="unknown_label",
            )
        pair = (values["reader_id"], values["key"])
        if pair in seen:
            raise ReadersCsvError(
                f"readers CSV line {line}: reader {pair[0]!r} already read key {pair[1]!r}",
                reason="duplicate_read",
            )
        seen.add(pair)
        reads.append(ReaderRead(reader_id=pair[0], key=pair[1], label=label))
    return reads


def readers_csv(reads: Sequence[ReaderRead]) -> bytes:
    """The reads as `readers.csv` bytes (header reader_id,key,label), in the given order."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REQUIRED_COLUMNS)
    for r in reads:
        writer.writerow([r.reader_id, r.key, r.label])
    return out.getvalue().encode("utf-8")


# Where a simulated reader's errors go: the confusions a reader of planar pertechnetate scans
# plausibly makes (mild Graves' vs high-normal uptake, small/faint nodules missed as normal,
# faint thyroiditis glands read as normal or as a defect).
DEFAULT_CONFUSIONS: dict[str, dict[str, float]] = {
    "normal": {"graves": 0.5, "thyroid_tumor": 0.3, "subacute_thyroiditis": 0.2},
    "graves": {"normal": 0.8, "thyroid_tumor": 0.15, "subacute_thyroiditis": 0.05},
    "subacute_thyroiditis": {"normal": 0.6, "thyroid_tumor": 0.3, "graves": 0.1},
    "thyroid_tumor": {"normal": 0.8, "graves": 0.1, "subacute_thyroiditis": 0.1},
}

SIMULATED_READERS: dict[str, dict[str, float]] = {
    "simulated-junior": {
        "normal": 0.80,
        "graves": 0.80,
        "subacute_thyroiditis": 0.78,
        "thyroid_tumor": 0.70,
    },
    "simulated-senior": {
        "normal": 0.90,
        "graves": 0.89,
        "subacute_thyroiditis": 0.86,
        "thyroid_tumor": 0.82,
    },
}
"""Per-class accuracies of two demo readers; the senior is about 0.87 overall, like the
study's senior physicians on its external set (0.868). Illustrative, not measured."""


def simulate_reads(
    keys: Sequence[str],
    labels: Sequence[str],
    *,
    reader_id: str,
    per_class_accuracy: Mapping[str, float],
    seed: int,
    confusions: Mapping[str, Mapping[str, float]] | None = None,
) -> list[ReaderRead]:
    """Simulated reads of `keys` (true `labels`) with a given accuracy per true class.

    Within each class exactly `round(accuracy x n_class)` randomly chosen cases are read
    right, so the requested accuracy holds up to rounding; the wrong reads are drawn from
    `confusions[true]` (default `DEFAULT_CONFUSIONS`). The reader id must start with
    `simulated-` so the reads can never pass for real ones.
    """
    if not reader_id.startswith(SIMULATED_PREFIX):
        raise ValueError(f"simulated reader ids must start with {SIMULATED_PREFIX!r}")
    if len(keys) != len(labels):
        raise ValueError("keys and labels differ in length")
    conf = DEFAULT_CONFUSIONS if confusions is None else confusions
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels, dtype=object)
    unknown = set(labels_arr.tolist()) - set(CLASSES)
    if unknown:
        raise ValueError(f"unknown label(s) {sorted(unknown)!r}")
    read = labels_arr.copy()
    for cls in CLASSES:
        idx = np.flatnonzero(labels_arr == cls)
        if idx.size == 0:
            continue
        acc = float(per_class_accuracy.get(cls, 1.0))
        if not 0.0 <= acc <= 1.0:
            raise ValueError(f"accuracy for {cls!r} must be within [0, 1]")
        n_wrong = idx.size - round(acc * idx.size)
        if n_wrong == 0:
            continue
        targets = {k: float(v) for k, v in conf.get(cls, {}).items() if k != cls and v > 0}
        if not targets:
            targets = {c: 1.0 for c in CLASSES if c != cls}
        names = list(targets)
        weights = np.array([targets[n] for n in names])
        wrong = rng.choice(idx, size=n_wrong, replace=False)
        read[wrong] = rng.choice(names, size=n_wrong, p=weights / weights.sum())
    return [
        ReaderRead(reader_id=reader_id, key=str(k), label=str(lbl))
        for k, lbl in zip(keys, read, strict=True)
    ]
