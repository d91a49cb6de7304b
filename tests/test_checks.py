"""Data checks: real files (simulator, generated corpus, pydicom's bundled files), real GX,
real stores (folder and moto's S3 server), quarantine idempotency, the invariant, PHI."""

from __future__ import annotations

import csv
import io
import json
import logging
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.data
import pytest
from dicom_expectations import BUNDLED_EXPECTED
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, generate_uid
from typer.testing import CliRunner

from scintiflow.checks import run as checks_run
from scintiflow.checks import suite as checks
from scintiflow.checks import table as checks_table
from scintiflow.checks.reasons import CHECK_VERSION, REASONS
from scintiflow.checks.run import ChecksSummary, run_checks
from scintiflow.checks.suite import ChecksInvariantError, suite_specs, validate_table
from scintiflow.checks.table import DuplicateTracker, build_checks_table
from scintiflow.checks.thresholds import CheckThresholds
from scintiflow.cli import app
from scintiflow.domain import sha256_hex
from scintiflow.ingest.dicom import DecodeReason
from scintiflow.ingest.objects import decode_objects
from scintiflow.settings import Settings, get_settings
from scintiflow.sim import (
    FAULT_KINDS,
    PHI_SENTINELS,
    PhantomCase,
    case_to_dicom,
    fault_file,
    simulate_cases,
    write_night,
)
from scintiflow.storage import KeyNotFoundError, LocalStore, ObjectInfo, S3Store

NIGHT = date(2026, 11, 27)
DAY = NIGHT.isoformat()
EXPORTS = f"exports/{DAY}/"


# ---------------------------------------------------------------------------------------
# Logs: everything any logger emits while a check runs (for the PHI test)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _run_logged(fn: Callable[[], ChecksSummary]) -> tuple[ChecksSummary, list[str]]:
    handler = _Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        return fn(), handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _read_json(store: Any, key: str) -> dict[str, Any]:
    return json.loads(store.get(key))


def _meaningful(doc: dict[str, Any]) -> dict[str, Any]:
    """checks.json without the run-specific fields (run id and the paths that contain it)."""
    return {k: v for k, v in doc.items() if k not in ("run_id", "docs")}


# ---------------------------------------------------------------------------------------
# A simulated night with every fault kind, written with sentinel identifiers


@dataclass(frozen=True)
class NightRun:
    root: Path
    store: LocalStore
    summary: ChecksSummary
    logs: list[str]
    faults: dict[str, str]  # key -> fault kind
    labelled: set[str]


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> NightRun:
    root = tmp_path_factory.mktemp("night")
    store = LocalStore(root)
    # 21 good files + 9 faults: every fault kind exactly once
    written = write_night(
        store,
        night=NIGHT,
        n=21,
        sites=("A", "B", "C"),
        seed=11,
        bad_fraction=0.3,
        phi_sentinel=True,
    )
    assert written.faults == len(FAULT_KINDS)
    faults = {
        r["key"]: r["fault"]
        for r in csv.DictReader(io.StringIO(store.get(written.faults_key).decode()))
    }
    labelled = {
        r["key"] for r in csv.DictReader(io.StringIO(store.get(written.labels_key).decode()))
    }
    summary, logs = _run_logged(
        lambda: run_checks(store, night=NIGHT, run_id="run-one", workers=2, settings=Settings())
    )
    return NightRun(root, store, summary, logs, faults, labelled)


FAULT_CODES: dict[str, set[str]] = {
    "truncated": {"truncated_pixel_data"},
    "truncated_header": {"truncated_header", "truncated_element"},  # cut inside meta or dataset
    "not_nm": {"not_nm_modality"},
    "colour_screenshot": {"colour_image"},
    "multiframe_tomo": {"tomographic_not_supported"},
    "corrupt_compressed": {"corrupt_pixel_data"},
    "random_bytes": {"not_dicom"},
    "png": {"not_dicom"},
    "empty": {"empty_file"},
}


def test_fault_table_covers_every_simulator_fault() -> None:
    assert set(FAULT_CODES) == set(FAULT_KINDS)


def test_simulated_faults_are_quarantined_with_their_reason(night: NightRun) -> None:
    summary = night.summary
    assert set(night.faults.values()) == set(FAULT_KINDS)
    for key, kind in night.faults.items():
        assert key in summary.quarantined, kind
        assert set(summary.quarantined[key]) & FAULT_CODES[kind], (kind, summary.quarantined[key])
    # a CT is a CT: its (Hounsfield) count statistics are not judged on top
    ct = next(k for k, kind in night.faults.items() if kind == "not_nm")
    assert set(summary.quarantined[ct]) == {"not_nm_modality", "wrong_sop_class"}


def test_good_simulated_files_are_accepted_without_warnings(night: NightRun) -> None:
    summary = night.summary
    assert set(summary.accepted) == night.labelled
    assert summary.warned == {}
    assert summary.inputs == len(night.labelled) + len(night.faults)


def test_checks_json_and_the_invariant(night: NightRun) -> None:
    summary, store = night.summary, night.store
    doc = _read_json(store, summary.checks_key)
    assert summary.checks_key == f"results/{DAY}/run-one/checks/checks.json"
    assert doc["inputs"] == summary.inputs == len(list(store.list(EXPORTS)))
    assert len(doc["accepted"]) + len(doc["quarantined"]) == doc["inputs"]
    assert not set(doc["accepted"]) & set(doc["quarantined"])
    assert doc["quarantined"] == {k: list(v) for k, v in summary.quarantined.items()}
    assert doc["check_version"] == CHECK_VERSION
    # counts per reason code are the number of files carrying the code
    expected: dict[str, int] = {}
    for codes in doc["quarantined"].values():
        for code in codes:
            expected[code] = expected.get(code, 0) + 1
    assert doc["reason_counts"] == expected
    assert set(doc["reasons"]) == set(expected)
    assert doc["thresholds"] == CheckThresholds().as_dict()
    assert doc["gx"]["evaluated_expectations"] == len(suite_specs(CheckThresholds()))


def test_quarantine_layout_and_reason_files(night: NightRun) -> None:
    summary, store = night.summary, night.store
    for key, codes in summary.quarantined.items():
        location = summary.quarantine_locations[key]
        data = store.get(key)
        assert location == f"quarantine/{DAY}/{sha256_hex(data)}"
        assert store.get(location) == data  # the bytes as exported
        reason = _read_json(store, location + ".reason.json")
        assert reason["sha256"] == sha256_hex(data)
        assert reason["check_version"] == CHECK_VERSION
        (source,) = reason["sources"]
        assert source["key"] == key
        assert source["key_sha256"] == sha256_hex(key.encode())
        assert source["codes"] == list(codes)
        assert set(source["failing_values"]) == set(codes)
    # accepted files are not copied anywhere
    copies = {o.key for o in store.list(f"quarantine/{DAY}/") if not o.key.endswith(".json")}
    assert len(copies) == len(summary.quarantined)


def test_data_docs_are_uploaded_and_name_the_failing_files(night: NightRun) -> None:
    summary, store = night.summary, night.store
    assert summary.docs_key == f"results/{DAY}/run-one/checks/docs/index.html"
    index = store.get(summary.docs_key).decode()
    assert "scintiflow_checks" in index
    pages = [
        o.key
        for o in store.list(f"results/{DAY}/run-one/checks/docs/validations/")
        if o.key.endswith(".html")
    ]
    assert len(pages) == 1  # one validation for the whole night
    page = store.get(pages[0]).decode()
    ct = next(k for k, kind in night.faults.items() if kind == "not_nm")
    assert ct in page


def test_sources_are_untouched_and_a_rerun_adds_no_quarantine_copy(night: NightRun) -> None:
    store = night.store
    before_sources = {o.key: sha256_hex(store.get(o.key)) for o in store.list(EXPORTS)}
    before_quarantine = {o.key: store.get(o.key) for o in store.list(f"quarantine/{DAY}/")}
    again = run_checks(store, night=NIGHT, run_id="run-two", settings=Settings())
    after_quarantine = {o.key: store.get(o.key) for o in store.list(f"quarantine/{DAY}/")}
    assert after_quarantine == before_quarantine
    assert {o.key: sha256_hex(store.get(o.key)) for o in store.list(EXPORTS)} == before_sources
    first = _meaningful(_read_json(store, night.summary.checks_key))
    assert _meaningful(_read_json(store, again.checks_key)) == first


def test_no_phi_in_checks_json_reason_files_docs_or_logs(night: NightRun) -> None:
    produced: dict[str, bytes] = {}
    for info in night.store.list("results/"):
        produced[info.key] = night.store.get(info.key)
    for info in night.store.list("quarantine/"):
        if info.key.endswith(".reason.json"):
            produced[info.key] = night.store.get(info.key)
    assert any(k.endswith("checks.json") for k in produced)
    assert any(k.endswith(".reason.json") for k in produced)
    assert any(k.endswith(".html") for k in produced)
    # the sentinels really are in the inputs, so their absence below means something
    exports = b"".join(night.store.get(o.key) for o in night.store.list(EXPORTS))
    assert all(s.encode() in exports for s in PHI_SENTINELS)
    logs = "\n".join(night.logs)
    assert "run-one" in logs  # the run did log
    table_text = night.summary.table.to_csv()
    for sentinel in PHI_SENTINELS:
        for key, data in produced.items():
            assert sentinel.encode() not in data, key
        assert sentinel not in logs
        assert sentinel not in table_text
        assert sentinel not in repr(night.summary)


# ---------------------------------------------------------------------------------------
# A generated corpus: one case per class of bad input (the reason codes in docs/checks.md),
# plus suite and warn cases


@lru_cache(maxsize=1)
def _base_case() -> PhantomCase:
    (case,) = simulate_cases(1, sites=("A",), seed=5, difficulty=0.0)
    return case


def _good_bytes(index: int = 0, **kwargs: Any) -> bytes:
    return case_to_dicom(
        _base_case(), night=NIGHT, index=index, seed=5, phi_sentinel=True, **kwargs
    )


def _edit(change: Callable[[Dataset], None]) -> bytes:
    """A good file, changed by `change`, with a fresh SOP Instance UID (no duplicates)."""
    ds = pydicom.dcmread(io.BytesIO(_good_bytes()))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    change(ds)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _set_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.astype("<u2").tobytes()


def _meta_end(data: bytes) -> int:
    (group_length,) = struct.unpack_from("<I", data, 140)
    return 144 + group_length


def _rewrap(data: bytes, ts: str | None) -> bytes:
    """The same dataset under a new file meta whose transfer syntax is `ts` (None: absent)."""

    def element(elem: int, vr: bytes, value: bytes) -> bytes:
        if len(value) % 2:
            value += b"\x00"
        if vr == b"OB":
            return struct.pack("<HH2sHI", 2, elem, vr, 0, len(value)) + value
        return struct.pack("<HH2sH", 2, elem, vr, len(value)) + value

    meta = element(0x0001, b"OB", b"\x00\x01")
    meta += element(0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.20")
    meta += element(0x0003, b"UI", generate_uid().encode())
    if ts is not None:
        meta += element(0x0010, b"UI", ts.encode())
    header = struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(meta))
    return b"\x00" * 128 + b"DICM" + header + meta + data[_meta_end(data) :]


def _pixel_length(data: bytes, length: int) -> bytes:
    offset = data.rfind(b"\xe0\x7f\x10\x00OW\x00\x00")
    return data[: offset + 8] + struct.pack("<I", length) + data[offset + 12 :]


def _png() -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="PNG")
    return buffer.getvalue()


def _fault(kind: str) -> bytes:
    return fault_file(
        kind,
        _base_case(),
        night=NIGHT,
        index=77,
        seed=5,
        rng=np.random.default_rng(1),
        phi_sentinel=True,
    )


def _two_frames(ds: Dataset) -> None:
    image = np.frombuffer(ds.PixelData, "<u2").reshape(ds.Rows, ds.Columns)
    ds.PixelData = np.stack([image, image]).astype("<u2").tobytes()
    ds.NumberOfFrames = 2
    del ds.FrameIncrementPointer  # frames without labels: which one is anterior?


def _colour(photometric: str) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        if photometric == "RGB":
            ds.SamplesPerPixel = 3
            ds.PlanarConfiguration = 0
            ds.BitsAllocated = ds.BitsStored = 8
            ds.HighBit = 7
            ds.PixelData = np.zeros((ds.Rows, ds.Columns, 3), np.uint8).tobytes()
        ds.PhotometricInterpretation = photometric

    return change


def _bits32(ds: Dataset) -> None:
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelData = np.zeros((ds.Rows, ds.Columns), "<u4").tobytes()


def _scaled(factor: float) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        image = np.frombuffer(ds.PixelData, "<u2").reshape(ds.Rows, ds.Columns)
        _set_pixels(ds, np.round(image * factor))

    return change


def _saturated(ds: Dataset) -> None:
    image = np.frombuffer(ds.PixelData, "<u2").reshape(ds.Rows, ds.Columns).copy()
    ceiling = np.quantile(image, 0.95)
    _set_pixels(ds, np.minimum(image, ceiling))


def _view(code: str, meaning: str) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        item = ds.DetectorInformationSequence[0].ViewCodeSequence[0]
        item.CodeValue, item.CodeMeaning = code, meaning

    return change


def _set(**values: Any) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        for keyword, value in values.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)

    return change


def _good_plain() -> bytes:
    return _edit(lambda ds: None)


def _cut_before_pixels() -> bytes:
    data = _good_plain()
    return data[: data.rfind(b"\xe0\x7f\x10\x00") - 40]


def _cut_in_pixels() -> bytes:
    data = _good_plain()
    return data[: len(data) - 5000]


def _unknown_compression() -> bytes:
    return _rewrap(_good_bytes(1, transfer_syntax=JPEG2000Lossless), "1.2.840.10008.1.2.4.100")


def _j2k_without_syntax() -> bytes:
    return _rewrap(_good_bytes(2, transfer_syntax=JPEG2000Lossless), None)


# name -> (bytes builder, codes the file must carry, "accept" | "reject")
CORPUS: dict[str, tuple[Callable[[], bytes], set[str], str]] = {
    "good": (_good_plain, set(), "accept"),
    "good-j2k": (lambda: _good_bytes(3, transfer_syntax=JPEG2000Lossless), set(), "accept"),
    # not DICOM at all
    "empty": (lambda: b"", {"empty_file"}, "reject"),
    "tiny": (lambda: b"DICM" * 10, {"too_small"}, "reject"),
    "random": (lambda: np.random.default_rng(3).bytes(5000), {"not_dicom"}, "reject"),
    "png": (_png, {"not_dicom"}, "reject"),
    # truncation and bad lengths
    "cut-in-meta": (lambda: _good_plain()[:150], {"truncated_header"}, "reject"),
    "cut-in-element": (_cut_before_pixels, {"truncated_element"}, "reject"),
    "cut-in-pixels": (_cut_in_pixels, {"truncated_pixel_data"}, "reject"),
    "length-past-eof": (
        lambda: _pixel_length(_good_plain(), 0xFFFFFFF0),
        {"truncated_pixel_data"},
        "reject",
    ),
    # transfer syntax and compression
    "no-transfer-syntax": (_j2k_without_syntax, {"missing_transfer_syntax"}, "reject"),
    "no-decoder": (_unknown_compression, {"unsupported_transfer_syntax"}, "reject"),
    "corrupt-stream": (lambda: _fault("corrupt_compressed"), {"corrupt_pixel_data"}, "reject"),
    # frames, colour, bits, geometry in the header
    "multiframe": (lambda: _edit(_two_frames), {"ambiguous_multiframe"}, "reject"),
    "tomographic": (lambda: _fault("multiframe_tomo"), {"tomographic_not_supported"}, "reject"),
    "rgb": (lambda: _edit(_colour("RGB")), {"colour_image"}, "reject"),
    "palette": (lambda: _edit(_colour("PALETTE COLOR")), {"colour_image"}, "reject"),
    "bits-32": (lambda: _edit(_bits32), {"unsupported_bits_allocated"}, "reject"),
    "rows-zero": (lambda: _edit(_set(Rows=0)), {"bad_geometry"}, "reject"),
    "rows-absurd": (lambda: _edit(_set(Rows=40000)), {"bad_geometry"}, "reject"),
    # decodes, but the suite rejects it
    "ct": (lambda: _fault("not_nm"), {"not_nm_modality"}, "reject"),
    "secondary-capture": (
        lambda: _edit(_set(SOPClassUID="1.2.840.10008.5.1.4.1.1.7")),
        {"wrong_sop_class"},
        "reject",
    ),
    "burned-in": (
        lambda: _edit(_set(BurnedInAnnotation="YES")),
        {"burned_in_annotation"},
        "reject",
    ),
    "not-square": (
        lambda: _edit(
            lambda ds: _set_pixels(ds, np.frombuffer(ds.PixelData, "<u2").reshape(128, 128)[:, :96])
        ),
        {"wrong_geometry"},
        "reject",
    ),
    "field-of-view": (
        lambda: _edit(_set(PixelSpacing=["4.0", "4.0"])),
        {"wrong_geometry"},
        "reject",
    ),
    "all-zero": (
        lambda: _edit(lambda ds: _set_pixels(ds, np.zeros((128, 128)))),
        {"empty_image"},
        "reject",
    ),
    "flat": (
        lambda: _edit(lambda ds: _set_pixels(ds, np.full((128, 128), 40))),
        {"blank_image"},
        "reject",
    ),
    "no-patient-id": (lambda: _edit(_set(PatientID=None)), {"missing_identifier"}, "reject"),
    "no-study-uid": (lambda: _edit(_set(StudyInstanceUID=None)), {"missing_identifier"}, "reject"),
    # let through, flagged
    "low-counts": (lambda: _edit(_scaled(0.1)), {"low_counts"}, "accept"),
    "saturated": (lambda: _edit(_saturated), {"saturated_pixels"}, "accept"),
    "odd-spacing": (
        lambda: _edit(_set(PixelSpacing=["0.3", "0.3"])),
        {"unusual_pixel_spacing"},
        "accept",
    ),
    "no-spacing": (lambda: _edit(_set(PixelSpacing=None)), {"missing_pixel_spacing"}, "accept"),
    "no-radiopharmaceutical": (
        lambda: _edit(_set(RadiopharmaceuticalInformationSequence=None)),
        {"missing_radiopharmaceutical"},
        "accept",
    ),
    "monochrome1": (
        lambda: _edit(_set(PhotometricInterpretation="MONOCHROME1")),
        {"monochrome1_image"},
        "accept",
    ),
    "posterior": (
        lambda: _edit(_view("399001007", "Posterior projection")),
        {"unexpected_view"},
        "accept",
    ),
}
# duplicates: keys sort after their originals ("zz-" prefix), so the originals stay accepted
DUPLICATES: dict[str, tuple[str, set[str]]] = {
    "zz-same-bytes": ("good", {"duplicate_bytes", "duplicate_sop_instance"}),
    "zz-same-sop-uid": ("good", {"duplicate_sop_instance"}),
}


@dataclass(frozen=True)
class CorpusRun:
    store: LocalStore
    summary: ChecksSummary


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> CorpusRun:
    store = LocalStore(tmp_path_factory.mktemp("corpus"))
    built = {name: make() for name, (make, _, _) in CORPUS.items()}
    for name, data in built.items():
        store.put(f"{EXPORTS}corpus/{name}.dcm", data)
    store.put(f"{EXPORTS}corpus/zz-same-bytes.dcm", built["good"])
    original = pydicom.dcmread(io.BytesIO(built["good"]))
    original.PixelData = (np.frombuffer(original.PixelData, "<u2") + 1).astype("<u2").tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, original, enforce_file_format=True)
    store.put(f"{EXPORTS}corpus/zz-same-sop-uid.dcm", buffer.getvalue())
    return CorpusRun(store, run_checks(store, night=NIGHT, run_id="corpus", settings=Settings()))


def test_corpus_reaches_every_suite_code() -> None:
    reached = set().union(*(codes for _, codes, _ in CORPUS.values()))
    suite_rejects = {c for c, (sev, _) in REASONS.items() if sev == "reject"} - {
        r.value for r in DecodeReason
    }
    storage = {"invalid_key", "symlink_not_followed", "not_a_regular_file", "too_large"}
    duplicates = set().union(*(codes for _, codes in DUPLICATES.values()))
    assert suite_rejects - storage - duplicates <= reached
    assert {c for c, (sev, _) in REASONS.items() if sev == "warn"} <= reached


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_case_ends_with_its_reason(corpus: CorpusRun, name: str) -> None:
    _, codes, verdict = CORPUS[name]
    key = f"{EXPORTS}corpus/{name}.dcm"
    summary = corpus.summary
    if verdict == "accept":
        assert key in summary.accepted, summary.quarantined.get(key)
        assert set(summary.warned.get(key, ())) == codes
    else:
        assert key in summary.quarantined
        assert codes <= set(summary.quarantined[key]), summary.quarantined[key]


@pytest.mark.parametrize("name", sorted(DUPLICATES))
def test_duplicates_are_rejected_after_the_first(corpus: CorpusRun, name: str) -> None:
    original, codes = DUPLICATES[name]
    summary = corpus.summary
    assert f"{EXPORTS}corpus/{original}.dcm" in summary.accepted
    assert set(summary.quarantined[f"{EXPORTS}corpus/{name}.dcm"]) == codes


def test_corpus_failing_values_are_recorded(corpus: CorpusRun) -> None:
    summary, store = corpus.summary, corpus.store
    key = f"{EXPORTS}corpus/field-of-view.dcm"
    reason = _read_json(store, summary.quarantine_locations[key] + ".reason.json")
    (source,) = reason["sources"]
    assert source["failing_values"]["wrong_geometry"]["field_of_view_mm"] == pytest.approx(512.0)
    key = f"{EXPORTS}corpus/ct.dcm"
    reason = _read_json(store, summary.quarantine_locations[key] + ".reason.json")
    assert reason["sources"][0]["failing_values"]["not_nm_modality"] == {"modality": "CT"}


def test_identical_rejected_bytes_share_one_copy_listing_both_keys(
    corpus: CorpusRun, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path)
    for name in ("a", "b"):
        store.put(f"{EXPORTS}{name}.dcm", b"")
    summary = run_checks(store, night=NIGHT, run_id="empties", settings=Settings())
    assert summary.quarantined == {
        f"{EXPORTS}a.dcm": ("empty_file",),
        f"{EXPORTS}b.dcm": ("duplicate_bytes", "empty_file"),
    }
    location = f"quarantine/{DAY}/{sha256_hex(b'')}"
    assert set(summary.quarantine_locations.values()) == {location}
    reason = _read_json(store, location + ".reason.json")
    assert [s["key"] for s in reason["sources"]] == [f"{EXPORTS}a.dcm", f"{EXPORTS}b.dcm"]


# ---------------------------------------------------------------------------------------
# pydicom's bundled files


def _bundled() -> dict[str, Path]:
    base = Path(pydicom.data.__file__).parent
    found = {
        *pydicom.data.get_testdata_files(),
        *pydicom.data.get_charset_files(),
        *pydicom.data.get_palette_files(),
    }
    return {Path(p).relative_to(base).as_posix(): Path(p) for p in found if Path(p).is_file()}


def test_every_bundled_pydicom_file_ends_accepted_or_quarantined(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    files = _bundled()
    assert set(files) == set(BUNDLED_EXPECTED)
    for name, path in files.items():
        store.put(f"{EXPORTS}pydicom/{name}", path.read_bytes())
    summary = run_checks(store, night=NIGHT, run_id="bundled", settings=Settings())
    assert summary.inputs == len(files)
    assert len(summary.accepted) + len(summary.quarantined) == len(files)
    # none of them is an NM Image Storage thyroid view
    assert summary.accepted == ()
    for name, expected in BUNDLED_EXPECTED.items():
        codes = summary.quarantined[f"{EXPORTS}pydicom/{name}"]
        assert codes, name
        if expected != "ok":
            assert expected in codes, (name, codes)
        else:  # decodes, so the suite says why
            assert not set(codes) & {r.value for r in DecodeReason}, (name, codes)
    # the NM whole-body bone scans: wrong geometry for a thyroid study
    for name in ("test_files/JPEG2000.dcm", "test_files/JPGExtended.dcm"):
        assert "wrong_geometry" in summary.quarantined[f"{EXPORTS}pydicom/{name}"]
    row = summary.table.set_index("key").loc[f"{EXPORTS}pydicom/test_files/JPGExtended.dcm"]
    assert row["modality"] == "NM"
    assert (row["rows"], row["cols"]) == (1024, 256)
    assert row["field_of_view_mm"] > 2000


# ---------------------------------------------------------------------------------------
# Storage: the same night on S3 (moto), and objects that vanish between list and read


@pytest.mark.s3
def test_s3_gives_the_same_checks_json_as_a_folder(
    night: NightRun, s3_bucket: str, s3_settings: Settings
) -> None:
    s3 = S3Store(s3_bucket, "site", endpoint_url=s3_settings.s3_endpoint_url, max_attempts=2)
    for info in night.store.list(EXPORTS):
        s3.put(info.key, night.store.get(info.key))
    summary = run_checks(s3, night=NIGHT, run_id="run-s3", settings=Settings())
    on_s3 = _meaningful(_read_json(s3, summary.checks_key))
    local = _meaningful(_read_json(night.store, night.summary.checks_key))
    assert on_s3 == local
    assert s3.exists(summary.docs_key)
    for key, location in summary.quarantine_locations.items():
        assert s3.get(location) == s3.get(key)
    # and a re-run on S3 writes no second copy either
    before = {o.key: o.size for o in s3.list(f"quarantine/{DAY}/")}
    run_checks(s3, night=NIGHT, run_id="run-s3-again", settings=Settings())
    assert {o.key: o.size for o in s3.list(f"quarantine/{DAY}/")} == before


class _VanishingStore(LocalStore):
    """A folder where one object is deleted right after it was listed (an export clean-up
    racing the check), so it is listed but cannot be read."""

    def __init__(self, root: Path, vanish: str) -> None:
        super().__init__(root)
        self.vanish = vanish

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for info in super().list(prefix):
            yield info
            if info.key == self.vanish:
                (self.root / info.key).unlink()


def test_a_listed_object_that_vanished_is_not_read_not_quarantined(tmp_path: Path) -> None:
    """[F8] defect 4: a storage error is not a property of the scan, so nothing is quarantined."""
    key = f"{EXPORTS}gone.dcm"
    store = _VanishingStore(tmp_path, key)
    store.put(key, _good_plain())
    store.put(f"{EXPORTS}kept.dcm", _good_bytes(9))
    summary = run_checks(store, night=NIGHT, run_id="vanish", settings=Settings())
    assert summary.quarantined == {}
    assert summary.not_read == {key: "missing_object"}
    assert summary.accepted == (f"{EXPORTS}kept.dcm",)
    assert list(store.list(f"quarantine/{DAY}/")) == []
    doc = _read_json(store, summary.checks_key)
    assert doc["not_read"] == {key: "missing_object"}
    assert doc["counts"]["not_read"] == 1


def test_check_keys_reports_a_missing_key_as_not_read(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    table, outcome, not_read = checks_run.check_keys(
        store, ["exports/x/none.dcm"], settings=Settings()
    )
    assert not_read == {"exports/x/none.dcm": "missing_object"}
    assert outcome.rejected == {}
    with pytest.raises(KeyNotFoundError):
        store.get("exports/x/none.dcm")
    assert len(table) == 0


# ---------------------------------------------------------------------------------------
# Units: reason codes, the table, thresholds, the invariant


def test_every_code_has_a_severity_and_an_explanation() -> None:
    assert {r.value for r in DecodeReason} <= set(REASONS)
    suite_codes = {spec.code for spec in suite_specs(CheckThresholds())} - {"<decode_reason>"}
    assert suite_codes <= set(REASONS)
    for code, (sev, text) in REASONS.items():
        assert code == code.lower()
        assert " " not in code
        assert sev in ("reject", "warn")
        assert text.endswith(".")


def test_table_holds_no_identifiers(night: NightRun) -> None:
    table = night.summary.table
    assert list(table.columns) == list(checks_table.TABLE_COLUMNS)
    assert not {
        c for c in table.columns if "uid" in c and c != "sop_class_uid" and not c.startswith("has_")
    }
    assert table["has_patient_id"].dropna().all()


def test_duplicate_tracker_spans_batches(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a/1.dcm", _good_plain())
    store.put("a/2.dcm", store.get("a/1.dcm"))
    tracker = DuplicateTracker()
    first = build_checks_table(
        decode_objects(store, ["a/1.dcm"], patient_hash_key=b"test-phi-key"),
        tracker=tracker,
        uid_hash_key=b"test-phi-key",
    )
    second = build_checks_table(
        decode_objects(store, ["a/2.dcm"], patient_hash_key=b"test-phi-key"),
        tracker=tracker,
        uid_hash_key=b"test-phi-key",
    )
    assert first["duplicate_bytes"].tolist() == [False]
    assert second["duplicate_bytes"].tolist() == [True]
    assert second["duplicate_sop_instance"].tolist() == [True]


def test_thresholds_drive_the_suite(night: NightRun) -> None:
    table = night.summary.table
    strict = CheckThresholds(low_total_counts=1e9, max_field_of_view_mm=100.0)
    outcome = validate_table(table, strict)
    accepted_before = set(night.summary.accepted)
    # every good file now has too few counts (warn) and a field of view over 100 mm (reject)
    assert outcome.accepted == ()
    for key in accepted_before:
        assert {"low_counts", "wrong_geometry"} <= set(outcome.codes[key])
    assert strict.fingerprint() != CheckThresholds().fingerprint()


def test_the_invariant_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path)
    store.put(f"{EXPORTS}a.dcm", _good_plain())
    store.put(f"{EXPORTS}b.dcm", b"")
    real = checks.ChecksValidator.validate

    def losing(self: checks.ChecksValidator, df: Any, **kwargs: Any) -> checks.CheckOutcome:
        outcome = real(self, df, **kwargs)
        return replace(outcome, accepted=())  # a bug that drops accepted files

    monkeypatch.setattr(checks.ChecksValidator, "validate", losing)
    with pytest.raises(ChecksInvariantError):
        run_checks(store, night=NIGHT, run_id="broken", settings=Settings())


# ---------------------------------------------------------------------------------------
# CLI


@pytest.fixture
def _fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


runner = CliRunner()


@pytest.mark.usefixtures("_fresh_settings")
def test_cli_check_prints_counts_and_locations(night: NightRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["check", "--input", str(night.root), "--out", str(out), "--night", DAY],
        env={"COLUMNS": "240"},
    )
    assert result.exit_code == 0, result.output
    for code in night.summary.reason_counts:
        assert code in result.output
    assert "checks.json:" in result.output
    assert "data docs:" in result.output
    written = LocalStore(out)
    (checks_key,) = [o.key for o in written.list("results/") if o.key.endswith("checks.json")]
    assert checks_key in result.output.replace("\n", "")
    doc = _read_json(written, checks_key)
    assert _meaningful(doc) == _meaningful(_read_json(night.store, night.summary.checks_key))
    assert f"quarantined {len(doc['quarantined'])}" in result.output
    for sentinel in PHI_SENTINELS:
        assert sentinel not in result.output
    run_dir = checks_key.removesuffix("checks/checks.json")
    assert not list(night.store.list(run_dir))  # --out got the results, --input nothing


@pytest.mark.s3
@pytest.mark.usefixtures("_fresh_settings")
def test_cli_check_exits_non_zero_when_the_run_fails(s3_endpoint: str, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["check", "--input", "s3://no-such-bucket/x", "--out", str(tmp_path), "--night", DAY],
        env={
            "COLUMNS": "240",
            "SCINTIFLOW_S3_ENDPOINT_URL": s3_endpoint,
            "SCINTIFLOW_S3_MAX_ATTEMPTS": "1",
        },
    )
    assert result.exit_code == 1
    assert "check failed" in result.output


@pytest.mark.usefixtures("_fresh_settings")
def test_cli_check_on_an_empty_night_exits_zero(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["check", "--input", str(tmp_path), "--night", DAY], env={"COLUMNS": "240"}
    )
    assert result.exit_code == 0, result.output
    assert "0 files" in result.output


def test_shards_give_the_same_verdicts_and_one_night_validation(night: NightRun) -> None:
    """Checked in shards of 12 (one row validation each), the night is validated once more
    as a whole (duplicates across shards, data docs): the same document as one shard."""
    store = night.store
    summary = run_checks(store, night=NIGHT, run_id="batched", batch_size=12, settings=Settings())
    batches = -(-summary.inputs // 12)
    assert batches > 1
    one, many = (
        _read_json(store, night.summary.checks_key),
        _read_json(store, summary.checks_key),
    )
    for field in ("inputs", "accepted", "warned", "quarantined", "quarantine", "reason_counts"):
        assert many[field] == one[field], field
    assert many["gx"] == one["gx"]
    pages = [
        o.key
        for o in store.list(f"results/{DAY}/batched/checks/docs/validations/")
        if o.key.endswith(".html")
    ]
    assert len(pages) == 1
    index = store.get(summary.docs_key).decode()
    assert all(p.rsplit("/", 1)[-1] in index for p in pages)


def test_files_that_fail_to_decode_still_describe_their_format(corpus: CorpusRun) -> None:
    table = corpus.summary.table.set_index("key")
    rgb = table.loc[f"{EXPORTS}corpus/rgb.dcm"]
    assert rgb["decode_reason"] == "colour_image"
    assert (rgb["modality"], rgb["rows"], rgb["cols"]) == ("NM", 128, 128)
    assert rgb["photometric_interpretation"] == "RGB"
    assert rgb["bits_allocated"] == 8
    assert bool(rgb["decoded"]) is False
    not_dicom = table.loc[f"{EXPORTS}corpus/random.dcm"]
    assert not_dicom["modality"] is None
    assert not_dicom["sha256"] == sha256_hex(corpus.store.get(f"{EXPORTS}corpus/random.dcm"))
