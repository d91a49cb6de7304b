"""The idempotency ledger: content-hash keyed, per model version, merge without rewrites."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


@pytest.mark.s3
def test_listing_fingerprints_find_done_inputs_without_reading_them(
    tmp_path: Path, s3_bucket: str, s3_settings: Any
) -> None:
    """(key, fingerprint) -> content hash -> ledger entry, on a folder and on S3 (moto)."""
    from scintiflow.outputs.ledger import lookup_listed, record_index
    from scintiflow.storage import open_store

    s3 = open_store(f"s3://{s3_bucket}", settings=s3_settings)
    for store in (LocalStore(tmp_path / "local"), s3):
        store.put("exports/n/a.dcm", b"a")
        store.put("exports/n/b.dcm", b"b")
        listing = {o.key: o.fingerprint for o in store.list("exports/n/")}
        assert all(listing.values())
        record(store, [("exports/n/a.dcm", A, _scored("r1"))], "v1")
        assert record_index(store, [("exports/n/a.dcm", listing["exports/n/a.dcm"], A)])
        assert not record_index(store, [("exports/n/a.dcm", listing["exports/n/a.dcm"], A)])
        done, hashes = lookup_listed(store, listing, "v1")
        assert set(done) == {"exports/n/a.dcm"}
        assert hashes == {"exports/n/a.dcm": A}
        assert lookup_listed(store, listing, "v2") == ({}, {})  # a new model rescores
        store.put("exports/n/a.dcm", b"a changed")  # new bytes: a new fingerprint
        changed = {o.key: o.fingerprint for o in store.list("exports/n/")}
        assert changed["exports/n/a.dcm"] != listing["exports/n/a.dcm"]
        assert lookup_listed(store, changed, "v1") == ({}, {})
