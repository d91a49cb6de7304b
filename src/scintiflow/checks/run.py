"""A night's checks, end to end (what `scintiflow check` runs).

    keys -> decode (thread pool) -> checks table -> GX validation (once per batch)
         -> accepted | quarantined (+ warnings) -> quarantine copies, data docs, checks.json

Every input ends accepted, quarantined or not read (a storage error, which is not a property
of the file and never quarantines it), and `run_checks` asserts it (`ChecksInvariantError`).
Accepted files are passed on by key, not as images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from scintiflow.checks.quarantine import quarantine_prefix
from scintiflow.checks.suite import CheckOutcome, ChecksInvariantError
from scintiflow.checks.table import rows_to_table
from scintiflow.checks.thresholds import CheckThresholds
from scintiflow.domain import new_run_id
from scintiflow.ingest.objects import night_prefix
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
    settings: Settings,
    thresholds: CheckThresholds | None = None,
    workers: int = 0,
    run_name: str | None = None,
) -> tuple[pd.DataFrame, CheckOutcome, dict[str, str]]:
    """Fetch, decode and check keys on the shard's own code path (one GX validation of the
    row expectations); writes nothing. Duplicates are the merge's: not flagged here.
    Returns (table, outcome, key -> storage error of the keys not read)."""
    from scintiflow.pipeline.shard import read_shard, split_unread, validate_rows

    fetched = read_shard(
        store,
        keys,
        hash_key=settings.phi_hash_key.get_secret_value().encode(),
        preferred_view=settings.preferred_view,
        workers=workers or settings.decode_workers or 2,
    )
    read, not_read = split_unread(fetched)
    table, outcome = validate_rows(read, thresholds or CheckThresholds(), run_name or "check")
    return table, outcome, not_read


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
    not_read: dict[str, str] = field(default_factory=dict)  # key -> storage error


def run_checks(
    store: ObjectStore,
    *,
    night: date | str,
    run_id: str | None = None,
    dest_store: ObjectStore | None = None,
    thresholds: CheckThresholds | None = None,
    workers: int = 0,
    batch_size: int = 0,
    settings: Settings,
    progress: Callable[[int, int], None] | None = None,
) -> ChecksSummary:
    """Check one night on the nightly flow's own path, without scoring: list -> shards
    (fetch, decode, row checks, quarantine) -> merge (duplicates, the night's suite, data
    docs, checks.json).

    Reads `exports/<night>/` from `store`; writes quarantine copies, data docs and
    `checks.json` to `dest_store` (default: `store`) under `quarantine/<night>/` and
    `results/<night>/<run_id>/checks/`. Sources are never modified. Raises
    `ChecksInvariantError` if any input ends neither accepted nor quarantined.
    `batch_size` > 0 checks the night in shards of that many files; 0 = one shard.
    `progress(done, total)` after each shard.
    """
    from scintiflow.pipeline.merge import MergeSpec, merge_shards
    from scintiflow.pipeline.shard import ShardSpec, process_shard
    from scintiflow.storage.layout import Layout

    thresholds = thresholds or CheckThresholds()
    out = dest_store if dest_store is not None else store
    day = night if isinstance(night, str) else night.isoformat()
    date.fromisoformat(day)
    run_id = run_id or new_run_id()
    layout = Layout.from_prefixes(settings.prefixes)
    keys = list_night(store, day, exports_prefix=layout.exports)
    total = len(keys)
    log.info("checks: night %s run %s: %d inputs", day, run_id, total)
    prefix = layout.run_prefix(day, run_id)
    size = batch_size if batch_size > 0 else max(1, total)
    hash_key = settings.phi_hash_key.get_secret_value().encode()
    results = []
    for index, first in enumerate(range(0, max(total, 1), size)):
        spec = ShardSpec(
            night=day,
            run_id=run_id,
            run_prefix=prefix,
            index=index,
            quarantine_prefix=layout.quarantine,
            preferred_view=settings.preferred_view,
            workers=workers or settings.decode_workers or 2,
            thresholds=thresholds,
        )
        results.append(
            process_shard(store, out, keys[first : first + size], spec, hash_key=hash_key)
        )
        if progress is not None:
            progress(min(total, first + size), total)
    merge = MergeSpec(day, run_id, prefix, layout.quarantine, thresholds)
    merged = merge_shards(store, out, results, merge)
    return _summary(out, merged, day, run_id, total, keys, layout.quarantine)


def _summary(
    out: ObjectStore,
    merged: Any,
    day: str,
    run_id: str,
    total: int,
    keys: Sequence[str],
    quarantine_root: str,
) -> ChecksSummary:

    doc = merged.checks_document
    quarantined = {k: tuple(v) for k, v in doc["quarantined"].items()}
    accepted = tuple(doc["accepted"])
    not_read = dict(doc.get("not_read") or {})
    if (
        len(accepted) + len(quarantined) + len(not_read) != total
        or set(accepted) & set(quarantined)
        or set(not_read) & (set(accepted) | set(quarantined))
        or set(accepted) | set(quarantined) | set(not_read) != set(keys)
    ):
        raise ChecksInvariantError(
            f"accepted ({len(accepted)}) + quarantined ({len(quarantined)}) + not read "
            f"({len(not_read)}) != inputs ({total}) for night {day}, run {run_id}"
        )
    if not_read:
        log.warning("checks: night %s run %s: %d inputs not read", day, run_id, len(not_read))
    log.info(
        "checks: night %s run %s: %d accepted, %d quarantined, %d warned",
        day,
        run_id,
        len(accepted),
        len(quarantined),
        len(doc["warned"]),
    )
    checks_key, docs_key = merged.checks["checks"], merged.checks["docs"]
    return ChecksSummary(
        night=day,
        run_id=run_id,
        inputs=total,
        accepted=accepted,
        warned={k: tuple(v) for k, v in doc["warned"].items()},
        quarantined=quarantined,
        reason_counts=dict(doc["reason_counts"]),
        quarantine_locations=dict(doc["quarantine"]),
        checks_key=checks_key,
        docs_key=docs_key,
        checks_url=out.url_for(checks_key),
        docs_url=out.url_for(docs_key),
        quarantine_url=out.url_for(quarantine_prefix(day, quarantine_root).rstrip("/")),
        table=rows_to_table(merged.check_rows),
        not_read=not_read,
    )
