"""The one JSON / JSONL reader and writer for objects in a store.

Writers return a `Written` (key, SHA-256, size) so a publisher can verify its own writes by
the hashes it was handed, without reading the objects back.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scintiflow.domain import sha256_hex
from scintiflow.storage.stores import KeyNotFoundError, ObjectStore


@dataclass(frozen=True, slots=True)
class Written:
    """One object a step wrote: where, the SHA-256 of its bytes, their length."""

    key: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Written:
        return cls(str(data["key"]), str(data["sha256"]), int(data["size"]))


def json_bytes(value: Any) -> bytes:
    """Stable JSON: sorted keys, two-space indent, a final newline."""
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def jsonl_bytes(items: Iterable[Mapping[str, Any]]) -> bytes:
    """One sorted-keys JSON object per line."""
    return b"".join((json.dumps(dict(i), sort_keys=True) + "\n").encode() for i in items)


def put_bytes(store: ObjectStore, key: str, data: bytes, *, if_absent: bool = False) -> Written:
    store.put(key, data, if_absent=if_absent)
    return Written(key, sha256_hex(data), len(data))


def put_from_file(store: ObjectStore, key: str, path: str | os.PathLike[str]) -> Written:
    """`store.put_file`, with the `Written` of the bytes it streamed (hashed from the file)."""
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
        size = fh.tell()
    store.put_file(key, path)
    return Written(key, digest, size)


def put_json(store: ObjectStore, key: str, value: Any, *, if_absent: bool = False) -> Written:
    return put_bytes(store, key, json_bytes(value), if_absent=if_absent)


def read_json(store: ObjectStore, key: str) -> Any:
    """The parsed object; `KeyNotFoundError` when absent, `ValueError` when not JSON."""
    return json.loads(store.get(key))


def read_json_or_none(store: ObjectStore, key: str) -> Any:
    """The parsed object, or None when the object does not exist."""
    try:
        return read_json(store, key)
    except KeyNotFoundError:
        return None


def read_jsonl(store: ObjectStore, key: str) -> list[dict[str, Any]]:
    """Every line of a JSONL object; [] when the object does not exist."""
    try:
        data = store.get(key)
    except KeyNotFoundError:
        return []
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


__all__ = [
    "Written",
    "json_bytes",
    "jsonl_bytes",
    "put_bytes",
    "put_from_file",
    "put_json",
    "read_json",
    "read_json_or_none",
    "read_jsonl",
]
