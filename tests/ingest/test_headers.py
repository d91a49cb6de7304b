"""`read_header`: ranged reads that stop before Pixel Data, same identifiers as a full read."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from scintiflow.ingest.headers import HeaderError, read_header
from scintiflow.outputs.report import read_identifiers
from scintiflow.sim import write_night
from scintiflow.storage import LocalStore

KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate")


class CountingStore(LocalStore):
    """A real LocalStore that counts the bytes each read returns (and full `get`s)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.transferred = 0
        self.gets = 0

    def get(self, key: str, *, if_match: str = "") -> bytes:
        data = super().get(key, if_match=if_match)
        self.gets += 1
        self.transferred += len(data)
        return data

    def get_range(self, key: str, start: int, length: int, *, if_match: str = "") -> bytes:
        data = super().get_range(key, start, length, if_match=if_match)
        self.transferred += len(data)
        return data


def _full(data: bytes) -> dict[str, str]:
    ds = dcmread(io.BytesIO(data), force=True)
    return {k: str(ds.get(k, "")) for k in KEYWORDS}


def _same_header(store: CountingStore, key: str, first: int) -> int:
    store.transferred = 0
    ds = read_header(store, key, first=first)
    data = LocalStore.get(store, key)
    assert {k: str(ds.get(k, "")) for k in KEYWORDS} == _full(data)
    assert "PixelData" not in ds
    assert read_identifiers(ds) == read_identifiers(dcmread(io.BytesIO(data), force=True))
    return store.transferred


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "ExplVR_BigEnd.dcm"])
def test_pydicom_files_transfer_a_fraction_of_the_object(tmp_path: Path, name: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    store = CountingStore(tmp_path)
    data = Path(path).read_bytes()
    store.put("exports/x.dcm", data)
    # a first range shorter than the header: doubled until Pixel Data is reached
    moved = _same_header(store, "exports/x.dcm", first=512)
    print(f"{name}: header read moved {moved} of {len(data)} bytes")
    assert moved < len(data) / 2
    assert store.gets == 0


def test_simulator_exports_transfer_far_fewer_bytes(tmp_path: Path) -> None:
    from scintiflow.outputs.report import HEADER_FIRST_BYTES

    store = CountingStore(tmp_path)
    write_night(store, night=date(2026, 11, 27), n=6, seed=3, phi_sentinel=True)
    keys = [o.key for o in store.list("exports/")]
    assert len(keys) >= 6
    total = moved = 0
    for key in keys:
        total += len(LocalStore.get(store, key))
        moved += _same_header(store, key, first=HEADER_FIRST_BYTES)
    print(f"simulator: header reads moved {moved} of {total} bytes")
    assert moved * 3 < total
    assert store.gets == 0


def test_truncated_and_broken_objects(tmp_path: Path) -> None:
    store = CountingStore(tmp_path)
    truncated = get_testdata_file("rtplan_truncated.dcm")
    assert truncated is not None
    store.put("exports/short.dcm", Path(truncated).read_bytes()[:300])
    ds = read_header(store, "exports/short.dcm", first=128)  # whole object: what parses
    assert "PixelData" not in ds
    # no Pixel Data at all: the doubling reaches the end of the object and stops there
    plan = get_testdata_file("rtplan.dcm")
    assert plan is not None
    store.put("exports/plan.dcm", Path(plan).read_bytes())
    assert read_header(store, "exports/plan.dcm", first=256).PatientID == dcmread(plan).PatientID
    # a long header past max_first: one full get
    store.gets = 0
    ct = get_testdata_file("CT_small.dcm")
    assert ct is not None
    store.put("exports/ct.dcm", Path(ct).read_bytes())
    assert "PatientName" in read_header(store, "exports/ct.dcm", first=256, max_first=1024)
    assert store.gets == 1
    store.put("exports/png.dcm", b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(HeaderError) as exc:
        read_header(store, "exports/png.dcm")
    assert exc.value.reason == "header_unreadable"
