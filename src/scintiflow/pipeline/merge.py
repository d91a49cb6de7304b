"""The merge: what needs the whole night, computed over the shards' results.

    night = merge_shards(source, dest, results, spec, reference=meta.training_reference)

- **Duplicates** by content hash or by (keyed hash of) SOP Instance UID: of each group the
  input with the smallest key is kept, whatever the shard split; the others are quarantined
  (`duplicate_bytes` / `duplicate_sop_instance`), and the outputs their shards wrote that no
  kept row uses are listed as `superseded` (they stay in the run folder, outside the
  manifest's outputs).
- **The suite over the whole night:** one GX validation of the night's table with the
  duplicate flags set, which builds the data docs; its per-row verdicts must agree with the
  shards' (the same suite on the same rows), else `ChecksInvariantError`.
- **`checks/checks.json`** (`checks.document.checks_document`), **drift** from the shards'
  features of a deterministic sample (`drift.sample_keys`), and the accounting.

A duplicate's bytes are not in hand here: its quarantine copy is read from the source, the
one second fetch of a night (duplicates are rare; the shards keep no bytes).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scintiflow.checks.suite import ChecksInvariantError
from scintiflow.checks.thresholds import CheckThresholds
from scintiflow.pipeline.shard import ShardResult
from scintiflow.storage import ObjectStore
from scintiflow.storage.jsonio import Written, put_bytes, put_json
from scintiflow.storage.layout import CHECKS_DOCS, CHECKS_DOCS_DIR, CHECKS_JSON

DUPLICATE_CODES = ("duplicate_bytes", "duplicate_sop_instance")


@dataclass(frozen=True)
class MergeSpec:
    """Small, serialisable settings of the merge."""

    night: str
    run_id: str
    run_prefix: str
    quarantine_prefix: str = "quarantine"
    thresholds: CheckThresholds = field(default_factory=CheckThresholds)
    classes: tuple[str, ...] = ()


@dataclass
class NightMerge:
    """The night after the merge. JSON-ready values; no pixels, no identifiers.

    `rows`: kept prediction rows in key order; `quarantined`: key -> {sha256, codes,
    location} for every input of the run that ends quarantined; `hashes`: key -> content
    hash (None: unreadable); `outputs`: key -> {sha256, size} of every object the run folder
    holds for the manifest (shards' outputs in use, data docs, checks.json); `superseded`:
    outputs of duplicates; `checks`: where checks.json and the data docs are;
    `storage_errors`: key -> storage error code of the inputs not read (retried next run).
    """

    keys: list[str]
    rows: list[dict[str, Any]]
    check_rows: list[dict[str, Any]]
    quarantined: dict[str, dict[str, Any]]
    hashes: dict[str, str | None]
    warned: dict[str, list[str]]
    outputs: dict[str, dict[str, Any]]
    superseded: list[str]
    checks: dict[str, str]
    checks_document: dict[str, Any]
    drift: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    storage_errors: dict[str, str] = field(default_factory=dict)


def mark_duplicates(
    rows: Sequence[dict[str, Any]], sop_tokens: Mapping[str, str | None]
) -> dict[str, str]:
    """Set the rows' duplicate flags (smallest key of each group is the original).

    Rows are visited in key order whatever order they come in; returns duplicate key -> the
    key it duplicates (by bytes first, else by SOP Instance).
    """
    by_sha: dict[str, str] = {}
    by_sop: dict[str, str] = {}
    dup_of: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: str(r["key"])):
        key, sha = str(row["key"]), row.get("sha256")
        row["duplicate_bytes"] = bool(sha) and sha in by_sha
        if sha and sha in by_sha:
            dup_of[key] = by_sha[sha]
        elif sha:
            by_sha[sha] = key
        token = sop_tokens.get(key)
        if row.get("decoded"):
            row["duplicate_sop_instance"] = bool(token) and token in by_sop
            if token and token in by_sop:
                dup_of.setdefault(key, by_sop[token])
            elif token:
                by_sop[token] = key
    return dup_of


def _validate_night(
    dest: ObjectStore, table_rows: list[dict[str, Any]], spec: MergeSpec
) -> tuple[Any, list[Written]]:
    """One GX validation of the night's table, with its data docs uploaded."""
    from scintiflow.checks.suite import ChecksValidator
    from scintiflow.checks.table import rows_to_table

    base = f"{spec.run_prefix}/{CHECKS_DOCS_DIR}/"
    with tempfile.TemporaryDirectory(prefix="scintiflow-docs-") as tmp:
        validator = ChecksValidator(spec.thresholds, docs_dir=tmp)
        outcome = validator.validate(rows_to_table(table_rows), run_name=spec.run_id)
        written = [
            put_bytes(dest, base + p.relative_to(tmp).as_posix(), p.read_bytes())
            for p in sorted(Path(tmp).rglob("*"))
            if p.is_file()
        ]
    return outcome, written


def _agree(results: Sequence[ShardResult], outcome: Any) -> None:
    """The night's verdicts equal the shards' except for duplicate codes (the shards' scoring
    failures passed the checks, so the night's suite accepts them)."""
    shard_rejects = {
        k for r in results for k, q in r.quarantined.items() if q.get("stage") != "score"
    }
    scored = {k for r in results for k in r.scored}
    for key, codes in outcome.rejected.items():
        others = [c for c in codes if c not in DUPLICATE_CODES]
        if others and key not in shard_rejects and key not in scored:
            raise ChecksInvariantError("a key rejected by the night was neither checked nor scored")
        if others and key in scored:
            raise ChecksInvariantError("the night rejected a scored key for a per-row reason")
    if not shard_rejects <= set(outcome.rejected):
        raise ChecksInvariantError("a shard quarantined a key the night's suite accepts")


def merge_shards(
    source: ObjectStore,
    dest: ObjectStore,
    results: Sequence[ShardResult],
    spec: MergeSpec,
    *,
    reference: Mapping[str, Any] | None = None,
) -> NightMerge:
    """Merge the shards of one run (see the module docstring). Writes data docs, checks.json
    and the duplicates' quarantine entries; `reference` (the model's training reference)
    enables drift."""
    import time

    started = time.perf_counter()
    ordered = sorted(results, key=lambda r: r.index)
    keys = [k for r in ordered for k in r.keys]
    if len(set(keys)) != len(keys):
        raise ChecksInvariantError("a key was processed by more than one shard")
    table_rows = sorted((dict(row) for r in ordered for row in r.check_rows), key=_key)
    tokens = {k: t for r in ordered for k, t in r.sop_tokens.items()}
    not_read = {k: e for r in ordered for k, e in r.storage_errors.items()}
    dup_of = mark_duplicates(table_rows, tokens)
    outcome, docs = _validate_night(dest, table_rows, spec)
    _agree(ordered, outcome)
    hashes = {str(row["key"]): row.get("sha256") for row in table_rows}
    quarantined = {k: dict(q) for r in ordered for k, q in r.quarantined.items()}
    rows = {str(row["key"]): row for r in ordered for row in r.rows}
    dropped = [k for k in sorted(outcome.rejected) if k not in quarantined]
    dup_codes = {k: outcome.rejected[k] for k in dropped}
    quarantined.update(_quarantine_duplicates(source, dest, dup_codes, dup_of, hashes, spec))
    for key, entry in quarantined.items():  # final codes: the night's suite (+ duplicates)
        if key in outcome.rejected:
            entry["codes"] = list(outcome.rejected[key])
    dropped_rows = [rows.pop(k) for k in dropped if k in rows]
    outputs = {k: v for r in ordered for k, v in r.outputs.items()}
    in_use = {v for row in rows.values() for k, v in row.items() if k.endswith("_key") and v}
    superseded = sorted(
        {v for row in dropped_rows for k, v in row.items() if k.endswith("_key") and v} - in_use
    )
    for key in superseded:
        outputs.pop(key, None)
    outputs.update({w.key: {"sha256": w.sha256, "size": w.size} for w in docs})
    kept = [rows[k] for k in sorted(rows)]
    doc, checks_written = _write_checks(dest, keys, outcome, quarantined, spec, not_read)
    outputs[checks_written.key] = {"sha256": checks_written.sha256, "size": checks_written.size}
    warned = {k: v for r in ordered for k, v in r.warned.items() if k in rows}
    merged = NightMerge(
        keys=sorted(keys),
        rows=kept,
        check_rows=table_rows,
        quarantined=dict(sorted(quarantined.items())),
        hashes=hashes,
        warned=warned,
        outputs=dict(sorted(outputs.items())),
        superseded=superseded,
        checks={"checks": checks_written.key, "docs": f"{spec.run_prefix}/{CHECKS_DOCS}"},
        checks_document=doc,
        storage_errors=dict(sorted(not_read.items())),
    )
    if reference is not None and kept:
        merged.drift = night_drift(ordered, kept, hashes, reference, spec.classes)
    merged.timings = {"merge": round(time.perf_counter() - started, 4)}
    return merged


def _key(row: Mapping[str, Any]) -> str:
    return str(row["key"])


def _quarantine_duplicates(
    source: ObjectStore,
    dest: ObjectStore,
    dropped: Mapping[str, Sequence[str]],
    dup_of: Mapping[str, str],
    hashes: Mapping[str, str | None],
    spec: MergeSpec,
) -> dict[str, dict[str, Any]]:
    """Quarantine the scored duplicates (their copy read from the source once more)."""
    from scintiflow.checks.quarantine import RejectedFile, quarantine
    from scintiflow.checks.reasons import CHECK_VERSION

    if not dropped:
        return {}
    items = [
        RejectedFile(k, hashes.get(k), tuple(codes), {"duplicate": {"kept_key": dup_of.get(k)}})
        for k, codes in dropped.items()
    ]
    placed = quarantine(
        source,
        spec.night,
        items,
        dest=dest,
        check_version=CHECK_VERSION,
        prefix=spec.quarantine_prefix,
        extra={"night": spec.night, "run_id": spec.run_id, "stage": "merge"},
    )
    return {
        k: {"sha256": hashes.get(k), "codes": list(codes), "location": placed.locations[k]}
        for k, codes in dropped.items()
    }


def _write_checks(
    dest: ObjectStore,
    keys: Sequence[str],
    outcome: Any,
    quarantined: Mapping[str, Mapping[str, Any]],
    spec: MergeSpec,
    not_read: Mapping[str, str],
) -> tuple[dict[str, Any], Written]:
    from scintiflow.checks.document import checks_document

    doc = checks_document(
        night=spec.night,
        run_id=spec.run_id,
        keys=keys,
        outcome=outcome,
        codes={k: list(q["codes"]) for k, q in quarantined.items()},
        locations={k: str(q["location"]) for k, q in quarantined.items()},
        thresholds=spec.thresholds,
        docs_key=f"{spec.run_prefix}/{CHECKS_DOCS}",
        not_read=not_read,
    )
    return doc, put_json(dest, f"{spec.run_prefix}/{CHECKS_JSON}", doc)


def night_drift(
    results: Sequence[ShardResult],
    rows: Sequence[Mapping[str, Any]],
    hashes: Mapping[str, str | None],
    reference: Mapping[str, Any],
    classes: Sequence[str],
) -> dict[str, Any]:
    """Drift of the night's scored images (a deterministic sample of the shards' features)
    and of all its predictions, against the training reference."""
    from scintiflow.pipeline.drift import ImageStats, rows_drift

    features = {k: f for r in results for k, f in r.drift.items()}

    def stats_of(sample: list[str]) -> list[ImageStats]:
        return [
            ImageStats(
                total_counts=float(f["total_counts"]),
                matrix=str(f["matrix"]),
                spacing=str(f["spacing"]),
                histogram=tuple(float(x) for x in f["histogram"]),
            )
            for f in (features[k] for k in sample)
        ]

    return rows_drift(reference, classes, rows, hashes, stats_of)
