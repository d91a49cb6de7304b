"""The idempotency ledger: input content hash -> where its result lives, per model version.

    state/ledger/<sha256>.json
    {"schema": "scintiflow.outputs.ledger/1", "sha256": ..., "model_version": ...,
     "outcomes": {<input key>: {"status": "scored"|"quarantined", "night", "run_id",
                                "manifest", "codes"}}}

A nightly run looks every input up before checking it: an input whose content hash has an
entry for the SAME model version, listing the same key, is not checked or scored again; its
result is carried forward by reference to the manifest named in the entry. Entries are written
only AFTER that manifest exists, so an entry never points at an incomplete run: a run that
dies before its manifest leaves no entries and its inputs are simply processed again.

Keys hold only content hashes; entries hold export keys (hash-named, no identifiers), run ids
and reason codes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from scintiflow.storage import KeyExistsError, KeyNotFoundError, ObjectStore

LEDGER_SCHEMA = "scintiflow.outputs.ledger/1"
STATUSES = ("scored", "quarantined")


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where one input key's result lives."""

    status: str  # "scored" | "quarantined"
    night: str
    run_id: str
    manifest: str  # key of the complete manifest holding the row / quarantine entry
    codes: tuple[str, ...] = ()  # reason codes when quarantined
    label: str | None = None  # predicted class when scored

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "night": self.night,
            "run_id": self.run_id,
            "manifest": self.manifest,
            "codes": list(self.codes),
            "label": self.label,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Outcome:
        return cls(
            status=str(d["status"]),
            night=str(d["night"]),
            run_id=str(d["run_id"]),
            manifest=str(d["manifest"]),
            codes=tuple(d.get("codes") or ()),
            label=d.get("label"),
        )


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """All known outcomes of one content hash under one model version."""

    sha256: str
    model_version: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # input key -> outcome

    def to_json(self) -> bytes:
        doc = {
            "schema": LEDGER_SCHEMA,
            "sha256": self.sha256,
            "model_version": self.model_version,
            "outcomes": {k: o.to_dict() for k, o in sorted(self.outcomes.items())},
        }
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> LedgerEntry:
        doc = json.loads(data)
        return cls(
            sha256=str(doc["sha256"]),
            model_version=str(doc["model_version"]),
            outcomes={k: Outcome.from_dict(v) for k, v in doc.get("outcomes", {}).items()},
        )


def ledger_key(sha256: str, state_prefix: str = "state") -> str:
    """`state/ledger/<sha256>.json`."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("ledger keys are lowercase hex SHA-256 digests")
    return f"{state_prefix.strip('/')}/ledger/{sha256}.json"


def read_entry(store: ObjectStore, sha256: str, state_prefix: str = "state") -> LedgerEntry | None:
    """The entry of one content hash, or None."""
    try:
        return LedgerEntry.from_json(store.get(ledger_key(sha256, state_prefix)))
    except KeyNotFoundError:
        return None


def lookup(
    store: ObjectStore,
    hashes: Mapping[str, str],
    model_version: str,
    *,
    state_prefix: str = "state",
    workers: int = 8,
) -> dict[str, Outcome]:
    """Input key -> its recorded outcome, for the keys already done with `model_version`.

    `hashes` maps input key -> SHA-256. A key counts as done only when the entry of its hash
    was written for the same model version AND lists that key (the same bytes under a new key
    are processed again, so the new key gets its own row).
    """
    digests = sorted(set(hashes.values()))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        entries = dict(
            zip(
                digests,
                pool.map(lambda d: read_entry(store, d, state_prefix), digests),
                strict=True,
            )
        )
    done: dict[str, Outcome] = {}
    for key, digest in hashes.items():
        entry = entries.get(digest)
        if entry is None or entry.model_version != model_version:
            continue
        if key in entry.outcomes:
            done[key] = entry.outcomes[key]
    return done


def record(
    store: ObjectStore,
    items: Iterable[tuple[str, str, Outcome]],
    model_version: str,
    *,
    state_prefix: str = "state",
) -> list[str]:
    """Write (key, sha256, outcome) triples into the ledger; returns the ledger keys written.

    A new hash is written with `if_absent`; an existing entry of the same model version gets
    the new keys merged in (unchanged entries are not rewritten, so a re-run writes nothing);
    an entry of another model version is replaced. Call only after the manifest the outcomes
    point at is complete.
    """
    by_hash: dict[str, dict[str, Outcome]] = {}
    for key, digest, outcome in items:
        if outcome.status not in STATUSES:
            raise ValueError(f"unknown ledger status {outcome.status!r}")
        by_hash.setdefault(digest, {})[key] = outcome
    written: list[str] = []
    for digest, outcomes in sorted(by_hash.items()):
        lkey = ledger_key(digest, state_prefix)
        entry = LedgerEntry(digest, model_version, dict(outcomes))
        try:
            store.put(lkey, entry.to_json(), if_absent=True)
        except KeyExistsError:
            old = read_entry(store, digest, state_prefix)
            if old is not None and old.model_version == model_version:
                if set(outcomes) <= set(old.outcomes):
                    continue
                entry = LedgerEntry(digest, model_version, {**outcomes, **old.outcomes})
            store.put(lkey, entry.to_json())
        written.append(lkey)
    return written


def index_key(key: str, fingerprint: str, state_prefix: str = "state") -> str:
    """`state/ledger-index/<sha256 of key and fingerprint>.json`."""
    from scintiflow.storage.layout import Layout

    return Layout(state=state_prefix.strip("/")).ledger_key_index(key, fingerprint)


def lookup_listed(
    store: ObjectStore,
    listing: Mapping[str, str | None],
    model_version: str,
    *,
    state_prefix: str = "state",
    workers: int = 8,
) -> tuple[dict[str, Outcome], dict[str, str]]:
    """(key -> outcome, key -> content hash) for listed objects already done with
    `model_version`, found without downloading them.

    `listing` maps input key -> listing fingerprint (S3 ETag with size, or mtime with size).
    The index entry of (key, fingerprint) names the content hash the object had when it was
    processed; the ledger entry of that hash, for this model version and listing this key,
    confirms it. A changed or missing fingerprint means the object is processed again.
    """
    from scintiflow.storage.jsonio import read_json_or_none

    listed = [(k, fp) for k, fp in listing.items() if fp]

    def one(item: tuple[str, str]) -> str | None:
        doc = read_json_or_none(store, index_key(item[0], item[1], state_prefix))
        sha = doc.get("sha256") if isinstance(doc, dict) else None
        return sha if isinstance(sha, str) else None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        found = dict(zip((k for k, _ in listed), pool.map(one, listed), strict=True))
    hashes = {k: sha for k, sha in found.items() if sha}
    done = lookup(store, hashes, model_version, state_prefix=state_prefix, workers=workers)
    return done, {k: hashes[k] for k in done}


def record_index(
    store: ObjectStore,
    items: Iterable[tuple[str, str | None, str]],
    *,
    state_prefix: str = "state",
) -> list[str]:
    """Write listing-index entries for (key, fingerprint, content hash); existing ones are
    left alone (an index entry never changes: a new fingerprint is a new entry)."""
    written = []
    for key, fingerprint, sha in items:
        if not fingerprint:
            continue
        ikey = index_key(key, fingerprint, state_prefix)
        doc = {"key": key, "fingerprint": fingerprint, "sha256": sha}
        try:
            store.put(ikey, (json.dumps(doc, sort_keys=True) + "\n").encode(), if_absent=True)
        except KeyExistsError:
            continue
        written.append(ikey)
    return written


def outcomes_by_manifest(done: Mapping[str, Outcome]) -> dict[str, list[str]]:
    """Manifest key -> the input keys carried forward from it (sorted)."""
    out: dict[str, list[str]] = {}
    for key, outcome in done.items():
        out.setdefault(outcome.manifest, []).append(key)
    return {m: sorted(keys) for m, keys in sorted(out.items())}


__all__: Sequence[str] = (
    "LEDGER_SCHEMA",
    "LedgerEntry",
    "Outcome",
    "index_key",
    "ledger_key",
    "lookup",
    "lookup_listed",
    "outcomes_by_manifest",
    "read_entry",
    "record",
    "record_index",
)
