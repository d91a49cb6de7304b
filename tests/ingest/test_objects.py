"""scintiflow.ingest.objects: one outcome per key, in input order, hashed with the given key."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np

from scintiflow.domain import hash_identifier, sha256_hex
from scintiflow.ingest.objects import decode_object, decode_objects, night_prefix
from scintiflow.sim import case_to_dicom, simulate_cases
from scintiflow.storage import LocalStore

NIGHT = date(2024, 5, 1)
KEY = b"scintiflow-test-phi-key"


def test_decode_objects_keeps_order_and_hashes_with_the_key_passed_in(tmp_path: Path) -> None:
    (case,) = simulate_cases(1, sites=("A",), seed=3)
    data = case_to_dicom(case, night=NIGHT, index=0, seed=3)
    store = LocalStore(tmp_path)
    prefix = night_prefix(NIGHT)
    store.put(f"{prefix}good.dcm", data)
    store.put(f"{prefix}empty.dcm", b"")
    keys = [f"{prefix}empty.dcm", f"{prefix}good.dcm", f"{prefix}absent.dcm"]

    empty, good, absent = decode_objects(store, keys, workers=2, patient_hash_key=KEY)

    assert [o.key for o in (empty, good, absent)] == keys
    assert good.ok
    assert good.record is not None
    assert (good.size, good.sha256) == (len(data), sha256_hex(data))
    assert good.record.patient_hash == hash_identifier(case.patient_id, KEY)
    assert (empty.reason, empty.size, empty.record) == ("empty_file", 0, None)
    assert (absent.reason, absent.sha256, absent.record) == ("missing_object", None, None)

    other = decode_object(store, f"{prefix}good.dcm", patient_hash_key=b"another-site-key")
    assert other.record is not None
    assert other.record.patient_hash != good.record.patient_hash
    np.testing.assert_array_equal(other.record.pixels, good.record.pixels)
