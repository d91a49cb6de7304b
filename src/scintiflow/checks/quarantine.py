"""Quarantine: copy rejected files aside with a reason file, never touching the source.

Layout (prefix configurable, see settings):

    quarantine/<night>/<sha256>                        the rejected bytes, as exported
    quarantine/<night>/<sha256>.reason.json            why (codes, failing values, version)
    quarantine/<night>/unreadable/<key_sha256>.reason.json   a listed object that could not be
                                                       read (no bytes to keep; reason only)

Everything is written with `if_absent=True`: re-checking a night creates no second copy, and
an existing copy is verified to hold the same bytes. Reason files hold the content hash, the
SHA-256 of each source key, the source keys themselves (keys carry no patient identifiers by
design), the reason codes, the failing values (image facts, never tag values that identify a
patient) and the check version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from scintiflow.domain import sha256_hex
from scintiflow.storage import KeyExistsError, ObjectStore, StoreError

REASON_SUFFIX = ".reason.json"


class QuarantineError(StoreError):
    """A quarantine copy exists under the content hash but holds different bytes."""

    reason = "quarantine_conflict"


@dataclass(frozen=True, slots=True)
class RejectedFile:
    """One rejected input: its key, content hash (None when unreadable) and why."""

    key: str
    sha256: str | None
    codes: tuple[str, ...]
    failing_values: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QuarantineResult:
    """Where each rejected key went (`locations`: key -> object key of its quarantine copy or,
    for unreadable objects, its reason file) and what this call newly wrote."""

    locations: dict[str, str]
    written: tuple[str, ...]  # object keys created by this call
    already_present: tuple[str, ...]  # object keys that existed (earlier run) and were kept


def quarantine_prefix(night: date | str, quarantine_prefix: str = "quarantine") -> str:
    """`quarantine/<night>/` for a night."""
    day = night if isinstance(night, str) else night.isoformat()
    date.fromisoformat(day)
    return f"{quarantine_prefix}/{day}/"


def quarantine(
    source: ObjectStore,
    night: date | str,
    rejected: Iterable[RejectedFile],
    *,
    dest: ObjectStore | None = None,
    check_version: str,
    prefix: str = "quarantine",
    extra: Mapping[str, Any] | None = None,
    held: Mapping[str, bytes] | None = None,
) -> QuarantineResult:
    """Copy each rejected file's bytes from `source` to `dest` (default: `source`) under
    `quarantine/<night>/<sha256>` with a `<sha256>.reason.json` next to it.

    Files with identical bytes share one copy and one reason file listing every source key.
    The bytes are re-read from the source and must still hash to the checked `sha256`; if
    the source changed in between (or cannot be read any more), only a reason file is kept,
    under `unreadable/`. `extra` (e.g. night, run id, thresholds fingerprint) is added to
    every reason file. `held` (content hash -> bytes) are bytes the caller already fetched
    (the shard that checked them): those are not read from the source again. Raises
    `QuarantineError` when an existing copy differs.
    """
    out = dest if dest is not None else source
    base = quarantine_prefix(night, prefix)
    by_hash: dict[str, list[RejectedFile]] = {}
    unreadable: list[RejectedFile] = []
    for item in rejected:
        if item.sha256 is None:
            unreadable.append(item)
        else:
            by_hash.setdefault(item.sha256, []).append(item)

    locations: dict[str, str] = {}
    written: list[str] = []
    present: list[str] = []

    def put_once(key: str, data: bytes, *, verify: bool) -> None:
        try:
            out.put(key, data, if_absent=True)
        except KeyExistsError:
            if verify and sha256_hex(out.get(key)) != sha256_hex(data):
                raise QuarantineError(
                    f"quarantine object {key!r} exists with different bytes"
                ) from None
            present.append(key)
        else:
            written.append(key)

    for digest, items in sorted(by_hash.items()):
        data: bytes | None = (held or {}).get(digest)
        if data is None:
            try:
                data = source.get(items[0].key)
            except StoreError:
                data = None
        if data is None or sha256_hex(data) != digest:
            note = "source_unreadable" if data is None else "source_changed"
            unreadable.extend(
                RejectedFile(i.key, None, (*i.codes, note), i.failing_values) for i in items
            )
            continue
        object_key = f"{base}{digest}"
        put_once(object_key, data, verify=True)
        reason = _reason_document(digest, items, check_version, extra)
        put_once(object_key + REASON_SUFFIX, reason, verify=False)
        for item in items:
            locations[item.key] = object_key

    for item in unreadable:
        key_digest = sha256_hex(item.key.encode("utf-8"))
        reason_key = f"{base}unreadable/{key_digest}{REASON_SUFFIX}"
        put_once(reason_key, _reason_document(None, [item], check_version, extra), verify=False)
        locations[item.key] = reason_key

    return QuarantineResult(locations, tuple(written), tuple(present))


def _reason_document(
    digest: str | None,
    items: list[RejectedFile],
    check_version: str,
    extra: Mapping[str, Any] | None,
) -> bytes:
    codes = sorted({code for item in items for code in item.codes})
    doc: dict[str, Any] = {
        "sha256": digest,
        "codes": codes,
        "sources": [
            {
                "key": item.key,
                "key_sha256": sha256_hex(item.key.encode("utf-8")),
                "codes": list(item.codes),
                "failing_values": {c: dict(v) for c, v in item.failing_values.items()},
            }
            for item in sorted(items, key=lambda i: i.key)
        ],
        "check_version": check_version,
    }
    if extra:
        doc.update(extra)
    return (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
