"""A night's checks, end to end (what `scintiflow check` runs).

    keys -> decode (thread pool) -> checks table -> GX validation (once per batch)
         -> accepted | quarantined (+ warnings) -> quarantine copies, data docs, checks.json

Every input ends either accepted or quarantined, and `run_checks` asserts it
(`ChecksInvariantError`). Accepted files are passed on by key, not as images.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scintiflow.checks.quarantine import RejectedFile, quarantine, quarantine_prefix
from scintiflow.checks.reasons import CHECK_VERSION, REASONS, severity
from scintiflow.checks.suite import CheckOutcome, ChecksInvariantError, ChecksValidator
from scintiflow.checks.table import DuplicateTracker, checks_row, rows_to_table
from scintiflow.checks.thresholds import CheckThresholds
from scintiflow.domain import new_run_id
from scintiflow.ingest.objects import decode_objects, night_prefix
from scintiflow.storage import ObjectStore

if TYPE_CHECKING:
    # pandas ships no type stubs here; "unused-ignore" keeps this quiet once they exist
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    from scintiflow.settings import Settings


log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# A night, end to end


def list_night(
    store: ObjectStore, night: date | str, *, exports_prefix: str = "exports"
) -> list[str]:
    """The keys of one night's exports, in key order."""
    return [info.key for info in store.list(night_prefix(night, exports_prefix))]


def check_keys(
    store: ObjectStore,
    keys: Sequence[str],
    *,
    validator: ChecksValidator | None = None,
    thresholds: CheckThresholds | None = None,
    tracker: DuplicateTracker | None = None,
    workers: int = 0,
    settings: Settings | None = None,
    run_name: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, CheckOutcome]:
    """Decode and check one batch of keys: (checks table, outcome). Writes nothing.

    The building block for batched flows: pass one `tracker` (duplicates across batches)
    and one `validator` (GX context built once; data docs for every batch) through a
    night's batches. `thresholds` is used only when no validator is given. `progress(done)`
    is called after each decoded file.
    """
    settings = settings or _settings()
    validator = validator if validator is not None else ChecksValidator(thresholds)
    tracker = tracker if tracker is not None else DuplicateTracker()
    key_bytes = settings.phi_hash_key.get_secret_value().encode()
    rows: list[dict[str, Any]] = []
    for obj in decode_objects(
        store,
        keys,
        workers=workers or settings.decode_workers,
        preferred_view=settings.preferred_view,
        patient_hash_key=key_bytes,
    ):
        rows.append(checks_row(obj, uid_hash_key=key_bytes, tracker=tracker))
        if progress is not None:
            progress(len(rows))
    table = rows_to_table(rows)
    return table, validator.validate(table, run_name=run_name)


@dataclass(frozen=True, slots=True)
class ChecksSummary:
    """What `run_checks` did. `accepted` keys go on to scoring (which decodes them again)."""

    night: str
    run_id: str
    inputs: int
    accepted: tuple[str, ...]
    warned: dict[str, tuple[str, ...]]
    quarantined: dict[str, tuple[str, ...]]
    reason_counts: dict[str, int]
    quarantine_locations: dict[str, str]
    checks_key: str
    docs_key: str
    checks_url: str
    docs_url: str
    quarantine_url: str
    table: pd.DataFrame = field(repr=False, compare=False)


def _settings() -> Settings:
    from scintiflow.settings import get_settings

    return get_settings()


def run_checks(
    store: ObjectStore,
    *,
    night: date | str,
    run_id: str | None = None,
    dest_store: ObjectStore | None = None,
    thresholds: CheckThresholds | None = None,
    workers: int = 0,
    batch_size: int = 0,
    settings: Settings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ChecksSummary:
    """Check one night: list -> decode -> table -> GX -> quarantine -> data docs -> checks.json.

    Reads `exports/<night>/` from `store`; writes quarantine copies, data docs and
    `checks.json` to `dest_store` (default: `store`) under `quarantine/<night>/` and
    `results/<night>/<run_id>/checks/`. Sources are never modified. Raises
    `ChecksInvariantError` if any input ends neither accepted nor quarantined.
    `batch_size` > 0 checks the night in batches of that many files (one GX validation and
    one data docs page per batch, duplicates tracked across batches); 0 = one batch.
    `progress(done, total)` reports decoding.
    """
    settings = settings or _settings()
    thresholds = thresholds or CheckThresholds()
    out = dest_store if dest_store is not None else store
    day = night if isinstance(night, str) else night.isoformat()
    date.fromisoformat(day)
    run_id = run_id or new_run_id()
    prefixes = settings.prefixes
    keys = list_night(store, day, exports_prefix=prefixes.exports)
    total = len(keys)
    log.info("checks: night %s run %s: %d inputs", day, run_id, total)

    base = f"{prefixes.results}/{day}/{run_id}/checks/"
    size = batch_size if batch_size > 0 else max(1, total)
    with tempfile.TemporaryDirectory(prefix="scintiflow-docs-") as tmp:
        validator = ChecksValidator(thresholds, docs_dir=tmp)
        tracker = DuplicateTracker()
        tables: list[pd.DataFrame] = []
        outcomes: list[CheckOutcome] = []
        for first in range(0, max(total, 1), size):
            batch = keys[first : first + size]
            table, outcome = check_keys(
                store,
                batch,
                validator=validator,
                tracker=tracker,
                workers=workers,
                settings=settings,
                run_name=run_id,
                progress=_offset(progress, first, total),
            )
            tables.append(table)
            outcomes.append(outcome)
        table = tables[0] if len(tables) == 1 else _concat(tables)
        outcome = outcomes[0] if len(outcomes) == 1 else CheckOutcome.combine(outcomes)
        shas = dict(zip(table["key"], table["sha256"], strict=True))
        extra = {
            "night": day,
            "run_id": run_id,
            "thresholds_fingerprint": thresholds.fingerprint(),
        }
        placed = quarantine(
            store,
            day,
            (
                RejectedFile(k, shas[k], codes, outcome.failing_values.get(k, {}))
                for k, codes in outcome.rejected.items()
            ),
            dest=out,
            check_version=CHECK_VERSION,
            prefix=prefixes.quarantine,
            extra=extra,
        )
        docs_key = _upload_docs(out, Path(tmp), base + "docs/")

    quarantined = dict(outcome.rejected)
    accepted = outcome.accepted
    if (
        len(accepted) + len(quarantined) != total
        or set(accepted) & set(quarantined)
        or set(accepted) | set(quarantined) != set(keys)
        or set(placed.locations) != set(quarantined)
    ):
        raise ChecksInvariantError(
            f"accepted ({len(accepted)}) + quarantined ({len(quarantined)}) "
            f"!= inputs ({total}) for night {day}, run {run_id}"
        )
    reason_counts = outcome.reason_counts()
    checks_key = base + "checks.json"
    document = {
        "schema": "scintiflow.checks.suite/1",
        "check_version": CHECK_VERSION,
        "night": day,
        "run_id": run_id,
        "inputs": total,
        "accepted": list(accepted),
        "warned": {k: list(v) for k, v in outcome.warned.items()},
        "quarantined": {k: list(v) for k, v in quarantined.items()},
        "quarantine": dict(sorted(placed.locations.items())),
        "counts": {
            "inputs": total,
            "accepted": len(accepted),
            "quarantined": len(quarantined),
            "warned": len(outcome.warned),
        },
        "reason_counts": reason_counts,
        "reasons": {
            code: {"severity": severity(code), "explanation": REASONS.get(code, ("", ""))[1]}
            for code in reason_counts
        },
        "thresholds": thresholds.as_dict(),
        "thresholds_fingerprint": thresholds.fingerprint(),
        "docs": docs_key,
        "gx": {"success": outcome.success, **outcome.statistics},
    }
    out.put(checks_key, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
    log.info(
        "checks: night %s run %s: %d accepted, %d quarantined, %d warned",
        day,
        run_id,
        len(accepted),
        len(quarantined),
        len(outcome.warned),
    )
    return ChecksSummary(
        night=day,
        run_id=run_id,
        inputs=total,
        accepted=accepted,
        warned=dict(outcome.warned),
        quarantined=quarantined,
        reason_counts=reason_counts,
        quarantine_locations=dict(placed.locations),
        checks_key=checks_key,
        docs_key=docs_key,
        checks_url=out.url_for(checks_key),
        docs_url=out.url_for(docs_key),
        quarantine_url=out.url_for(quarantine_prefix(day, prefixes.quarantine).rstrip("/")),
        table=table,
    )


def _offset(
    progress: Callable[[int, int], None] | None, first: int, total: int
) -> Callable[[int], None] | None:
    """A batch's progress(done) as the night's progress(first + done, total)."""
    if progress is None:
        return None
    report = progress
    return lambda done: report(first + done, total)


def _concat(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    return pd.concat(list(tables), ignore_index=True)


def _upload_docs(store: ObjectStore, folder: Path, prefix: str) -> str:
    """Upload a locally built data docs folder; returns the key of its index page."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.put(prefix + path.relative_to(folder).as_posix(), path.read_bytes())
    return prefix + "index.html"
