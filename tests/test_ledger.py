"""The idempotency ledger: content-hash keyed, per model version, merge without rewrites."""

from __future__ import annotations

from pathlib import Path

import pytest

from scintiflow.domain import sha256_hex
from scintiflow.outputs.ledger import (
    Outcome,
    ledger_key,
    lookup,
    outcomes_by_manifest,
    read_entry,
    record,
)
from scintiflow.storage import LocalStore

A, B = sha256_hex(b"a"), sha256_hex(b"b")


def _scored(run: str, label: str = "normal") -> Outcome:
    return Outcome(
        "scored", "2026-11-27", run, f"results/2026-11-27/{run}/manifest.json", (), label
    )


def test_key_is_the_content_hash_and_rejects_anything_else() -> None:
    assert ledger_key(A) == f"state/ledger/{A}.json"
    with pytest.raises(ValueError, match="SHA-256"):
        ledger_key("../etc/passwd")


def test_lookup_needs_same_model_version_and_the_same_key(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    written = record(store, [("k1", A, _scored("r1")), ("k2", B, _scored("r1", "graves"))], "v1")
    assert sorted(written) == sorted([ledger_key(A), ledger_key(B)])
    done = lookup(store, {"k1": A, "k2": B, "k3": A}, "v1")
    assert set(done) == {"k1", "k2"}  # k3: same bytes under a new key -> processed again
    assert done["k2"].label == "graves"
    assert lookup(store, {"k1": A}, "v2") == {}  # another model version rescoring
    assert outcomes_by_manifest(done) == {"results/2026-11-27/r1/manifest.json": ["k1", "k2"]}


def test_rerecording_writes_nothing_new_keys_merge_new_version_replaces(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    record(store, [("k1", A, _scored("r1"))], "v1")
    before = store.get(ledger_key(A))
    assert record(store, [("k1", A, _scored("r2"))], "v1") == []  # idempotent: no rewrite
    assert store.get(ledger_key(A)) == before
    record(
        store,
        [("k9", A, Outcome("quarantined", "2026-11-28", "r3", "m", ("duplicate_bytes",)))],
        "v1",
    )
    entry = read_entry(store, A)
    assert entry is not None
    assert set(entry.outcomes) == {"k1", "k9"}
    assert entry.outcomes["k1"].run_id == "r1"  # the first result stays authoritative
    record(store, [("k1", A, _scored("r4"))], "v2")
    entry = read_entry(store, A)
    assert entry is not None
    assert entry.model_version == "v2"
    assert set(entry.outcomes) == {"k1"}


def test_unknown_status_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="status"):
        record(LocalStore(tmp_path), [("k", A, Outcome("lost", "n", "r", "m"))], "v1")
