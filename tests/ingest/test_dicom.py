"""scintiflow.ingest.dicom: bundled pydicom files, a generated bad-input corpus, round trips."""

from __future__ import annotations

import copy
import io
import logging
import os
import re
import struct
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.data
import pytest
from dicom_expectations import BUNDLED_EXPECTED, PYDICOM_VERSION
from PIL import Image
from pydicom.data import get_charset_files, get_palette_files, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from scintiflow.domain import ImageRecord, hash_identifier
from scintiflow.ingest import dicom
from scintiflow.ingest.dicom import (
    REASON_TEXT,
    DecodeError,
    DecodeReason,
    decode_dicom,
    normalise_view,
    read_header,
)
from scintiflow.ingest.dicom import pixels as dicom_pixels

TEST_KEY = b"scintiflow-test-phi-key"
PATIENT_NAME = "Zzyzx^Quintessa"
PATIENT_ID = "PID-7731-SECRET"
PHI_STRINGS = (PATIENT_NAME, "Zzyzx", "Quintessa", PATIENT_ID, "7731", "19510723")
NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.2"
SOP_UID = "1.2.826.0.1.3680043.8.498.3"

VIEW_CODES = {  # CID 26: code value, meaning
    "anterior": ("399321004", "Anterior projection"),
    "left anterior oblique": ("399074003", "Left anterior oblique"),
    "right anterior oblique": ("399108003", "Right anterior oblique"),
    "posterior": ("399001007", "Posterior projection"),
}


# ---------------------------------------------------------------------------------------
# Building test objects


def decode(data: bytes, **kwargs: Any) -> ImageRecord:
    """`decode_dicom` with the test PHI hash key (the key is a required argument)."""
    return decode_dicom(data, patient_hash_key=TEST_KEY, **kwargs)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _detector(view: str | None, collimator: str = "PINH") -> Dataset:
    item = Dataset()
    item.CollimatorType = collimator
    item.CollimatorGridName = "PINHOLE 4MM"
    if view is not None:
        value, meaning = VIEW_CODES[view]
        item.ViewCodeSequence = Sequence([_code(value, "SCT", meaning)])
    return item


def default_pixels(rows: int = 16, cols: int = 16, frames: int = 1) -> np.ndarray:
    """Distinct, deterministic counts per frame: frame f holds f*1000 + a ramp."""
    ramp = np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols) % 977
    stack = np.stack([ramp + np.uint16(f * 1000) for f in range(frames)])
    return stack[0] if frames == 1 else stack


def nm_dataset(
    *,
    rows: int = 16,
    cols: int = 16,
    pixels: np.ndarray | None = None,
    views: list[str | None] | None = None,
    ts: str = ExplicitVRLittleEndian,
) -> Dataset:
    """A small valid planar NM image (Tc-99m, pinhole, anterior) with test PHI in it.

    `views` with more than one entry builds a multi-frame static object whose frames are
    labelled through Frame Increment Pointer -> Detector Vector -> Detector Information.
    """
    frames = 1 if views is None else len(views)
    if pixels is None:
        pixels = default_pixels(rows, cols, frames)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(ts)
    ds.file_meta.MediaStorageSOPClassUID = UID(NM_IMAGE_STORAGE)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(SOP_UID)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "STATIC", "EMISSION"]
    ds.SOPClassUID = NM_IMAGE_STORAGE
    ds.SOPInstanceUID = SOP_UID
    ds.StudyDate = "20240102"
    ds.Modality = "NM"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19510723"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [2.2, 2.4]
    radiopharm = Dataset()
    radiopharm.Radiopharmaceutical = "Tc-99m pertechnetate"
    radiopharm.RadionuclideCodeSequence = Sequence([_code("C-163A8", "SRT", "^99m^Technetium")])
    ds.RadiopharmaceuticalInformationSequence = Sequence([radiopharm])
    if views is None:
        ds.DetectorInformationSequence = Sequence([_detector("anterior")])
    else:
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = [0x00540010, 0x00540020]  # energy window, detector
        ds.EnergyWindowVector = [1] * frames
        ds.NumberOfEnergyWindows = 1
        ds.DetectorVector = list(range(1, frames + 1))
        ds.NumberOfDetectors = frames
        ds.DetectorInformationSequence = Sequence([_detector(v) for v in views])
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """Part 10 bytes with preamble, "DICM" and file meta, encoded as the meta says."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def raw_bytes(ds: Dataset, *, implicit: bool) -> bytes:
    """The dataset alone: no preamble, no "DICM", no file meta."""
    ds = copy.deepcopy(ds)
    del ds.file_meta
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=implicit, little_endian=True)
    return buffer.getvalue()


def nm_bytes(**kwargs: Any) -> bytes:
    return to_bytes(nm_dataset(**kwargs))


def changed(**changes: object) -> bytes:
    """Bytes of the default NM image with top-level attributes set (None deletes)."""
    ds = nm_dataset()
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return to_bytes(ds)


def meta_end(data: bytes) -> int:
    """Offset of the first dataset element after the file meta group."""
    assert data[128:132] == b"DICM"
    assert data[132:136] == b"\x02\x00\x00\x00"
    (group_length,) = struct.unpack_from("<I", data, 140)
    return 144 + group_length


def rewrap(data: bytes, ts: str | None) -> bytes:
    """Same dataset bytes under a new file meta whose transfer syntax is `ts` (None: absent)."""

    def element(elem: int, vr: bytes, value: bytes) -> bytes:
        if len(value) % 2:
            value += b"\x00"
        if vr == b"OB":
            return struct.pack("<HH2sHI", 2, elem, vr, 0, len(value)) + value
        return struct.pack("<HH2sH", 2, elem, vr, len(value)) + value

    meta = element(0x0001, b"OB", b"\x00\x01")
    meta += element(0x0002, b"UI", NM_IMAGE_STORAGE.encode())
    meta += element(0x0003, b"UI", SOP_UID.encode())
    if ts is not None:
        meta += element(0x0010, b"UI", ts.encode())
    header = struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(meta))
    return b"\x00" * 128 + b"DICM" + header + meta + data[meta_end(data) :]


def pixel_element_offset(data: bytes) -> int:
    offset = data.rfind(b"\xe0\x7f\x10\x00")
    assert offset > 0
    return offset


def set_pixel_length(data: bytes, length: int) -> bytes:
    """Overwrite the (explicit VR, 4-byte) length of Pixel Data."""
    offset = pixel_element_offset(data)
    assert data[offset + 4 : offset + 6] in (b"OW", b"OB")
    return data[: offset + 8] + struct.pack("<I", length) + data[offset + 12 :]


def set_explicit_length(data: bytes, tag: tuple[int, int], length: int) -> bytes:
    """Overwrite the length field of a top-level explicit VR element with a 2-byte length."""
    offset = data.find(struct.pack("<HH", *tag), meta_end(data))
    assert offset > 0
    return data[: offset + 6] + struct.pack("<H", length) + data[offset + 8 :]


def set_implicit_length(data: bytes, tag: tuple[int, int], length: int) -> bytes:
    offset = data.find(struct.pack("<HH", *tag))
    assert offset >= 0
    return data[: offset + 4] + struct.pack("<I", length) + data[offset + 8 :]


def noise_image(size: int = 64) -> np.ndarray:
    return np.random.default_rng(size).integers(0, 256, (size, size), dtype=np.uint8)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(noise_image()).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_stream(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def nm_jpeg_baseline(stream: bytes | None = None) -> bytes:
    """An 8-bit NM image encapsulated as JPEG Baseline (encoded by Pillow)."""
    pixels = (default_pixels() % 256).astype(np.uint8)
    ds = nm_dataset(ts=JPEGBaseline8Bit)
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = encapsulate([stream if stream is not None else jpeg_stream(pixels)])
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def nm_compressed(ts: str) -> tuple[bytes, np.ndarray]:
    """A 64x64 NM image compressed with `ts` (openjpeg needs >= 32 px for its resolutions)."""
    ds = nm_dataset(rows=64, cols=64)
    expected = ds.pixel_array.copy()
    ds.compress(ts)
    return to_bytes(ds), expected


def j2k_with_ts(ts: str | None) -> bytes:
    data, _ = nm_compressed(JPEG2000Lossless)
    return rewrap(data, ts)


def corrupt_j2k() -> bytes:
    """J2K whose SIZ segment is intact (so sizes agree) but whose following header is junk."""
    ds = nm_dataset(rows=64, cols=64)
    ds.compress(JPEG2000Lossless)
    stream = pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=1)
    (siz_length,) = struct.unpack_from(">H", stream, 6)
    keep = 4 + siz_length
    ds.PixelData = encapsulate([stream[:keep] + b"\xa5" * (len(stream) - keep)])
    return to_bytes(ds)


def corrupt_jpeg() -> bytes:
    """JPEG Baseline whose entropy-coded scan is replaced by markers that break decoding."""
    pixels = (default_pixels() % 256).astype(np.uint8)
    stream = jpeg_stream(pixels)
    sos = stream.find(b"\xff\xda")
    broken = stream[: sos + 2] + b"\x00\x02" + b"\xff\xd9"
    return nm_jpeg_baseline(broken)


def multiframe(
    *, pointers: list[int], image_type_3: str = "STATIC", frames: int = 4, **extra: object
) -> bytes:
    rows = cols = 4
    ds = nm_dataset(rows=rows, cols=cols, pixels=default_pixels(rows, cols, frames), views=None)
    ds.NumberOfFrames = frames
    ds.ImageType = ["ORIGINAL", "PRIMARY", image_type_3, "EMISSION"]
    ds.FrameIncrementPointer = pointers
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return to_bytes(ds)


def three_views() -> Dataset:
    return nm_dataset(views=["left anterior oblique", "anterior", "right anterior oblique"])


def three_views_with_codes(*codes: tuple[str, str, str]) -> bytes:
    ds = three_views()
    for item, code in zip(ds.DetectorInformationSequence, codes, strict=True):
        item.ViewCodeSequence = Sequence([_code(*code)])
    return to_bytes(ds)


def nm_colour(photometric: str, samples: int) -> bytes:
    ds = nm_dataset()
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.PixelData = bytes(16 * 16 * samples)
    return to_bytes(ds)


def nm_bits(bits: int) -> bytes:
    ds = nm_dataset()
    ds.BitsAllocated = bits
    ds.BitsStored = min(bits, 12)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelData = bytes(16 * 16 * max(bits // 8, 1))
    return to_bytes(ds)


def deflate_bomb() -> bytes:
    valid = to_bytes(nm_dataset(ts=DeflatedExplicitVRLittleEndian))
    return valid[: meta_end(valid)] + b"\xff\xfe\xfd" * 40


def random_bytes(seed: int, size: int = 4096) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def huge_ut() -> bytes:
    """A UT element (4-byte length) whose declared length swallows the rest of the file."""
    ds = nm_dataset()
    ds.TextValue = "note"  # (0040,A160) UT
    data = to_bytes(ds)
    offset = data.find(b"\x40\x00\x60\xa1UT")
    assert offset > 0
    return data[: offset + 8] + struct.pack("<I", 0x7FFFFFF0) + data[offset + 12 :]


def bad_number_of_frames() -> bytes:
    data = changed(NumberOfFrames=1)
    offset = data.find(b"\x28\x00\x08\x00IS")
    assert offset > 0
    return data[: offset + 8] + b"X?" + data[offset + 10 :]


VALID = nm_bytes()
PIXEL_OFFSET = pixel_element_offset(VALID)

# (case id, bytes factory, expected "ok" or reason). Every class of bad input behind the
# decode reason codes (docs/decoding.md) has at least one case.
CORPUS: list[tuple[str, Callable[[], bytes], str]] = [
    ("valid_nm", lambda: VALID, "ok"),
    ("empty", lambda: b"", "empty_file"),
    ("tiny_dicm", lambda: b"DICM", "too_small"),
    ("tiny_prefix", lambda: VALID[:100], "too_small"),
    *[(f"random_{seed}", lambda seed=seed: random_bytes(seed), "not_dicom") for seed in range(5)],
    # claims to be DICOM: the first "element" declares a length far past the end
    ("random_after_dicm", lambda: b"\x00" * 128 + b"DICM" + random_bytes(9), "truncated_element"),
    ("png", png_bytes, "not_dicom"),
    ("jpeg_file", lambda: jpeg_stream(noise_image()), "not_dicom"),
    ("json_text", lambda: b'{"PatientName": "x"}' * 20, "not_dicom"),
    ("raw_implicit_no_preamble", lambda: raw_bytes(nm_dataset(), implicit=True), "ok"),
    ("raw_explicit_no_preamble", lambda: raw_bytes(nm_dataset(), implicit=False), "ok"),
    ("stray_byte_before_raw", lambda: b" " + raw_bytes(nm_dataset(), implicit=True), "not_dicom"),
    ("truncated_in_meta", lambda: VALID[:150], "truncated_header"),
    ("preamble_only", lambda: VALID[:132], "truncated_header"),
    ("meta_only", lambda: VALID[: meta_end(VALID)], "truncated_header"),
    ("truncated_in_element", lambda: VALID[: meta_end(VALID) + 60], "truncated_element"),
    ("truncated_before_pixel_tag", lambda: VALID[: PIXEL_OFFSET - 3], "truncated_element"),
    ("truncated_in_pixel_header", lambda: VALID[: PIXEL_OFFSET + 10], "truncated_pixel_data"),
    ("truncated_in_pixel_data", lambda: VALID[:-10], "truncated_pixel_data"),
    ("truncated_in_fragment", lambda: j2k_with_ts(JPEG2000Lossless)[:-40], "truncated_pixel_data"),
    ("missing_ts_native_inferred", lambda: rewrap(VALID, None), "ok"),
    ("missing_ts_compressed", lambda: j2k_with_ts(None), "missing_transfer_syntax"),
    (
        "length_past_eof",
        lambda: set_explicit_length(VALID, (0x0010, 0x0010), 0xFFF0),
        "truncated_element",
    ),
    ("pixel_length_fffffff0", lambda: set_pixel_length(VALID, 0xFFFFFFF0), "truncated_pixel_data"),
    (
        "huge_text_length_implicit",
        lambda: set_implicit_length(
            raw_bytes(nm_dataset(), implicit=True), (0x0010, 0x0010), 0x7FFFFFF0
        ),
        "truncated_element",
    ),
    (
        "huge_text_length_ut",
        huge_ut,
        "truncated_element",
    ),
    (
        "jpeg_xl_no_decoder",
        lambda: j2k_with_ts("1.2.840.10008.1.2.4.110"),
        "unsupported_transfer_syntax",
    ),
    (
        "mpeg2_no_decoder",
        lambda: j2k_with_ts("1.2.840.10008.1.2.4.100"),
        "unsupported_transfer_syntax",
    ),
    (
        "j2k_part2_no_decoder",
        lambda: j2k_with_ts("1.2.840.10008.1.2.4.92"),
        "unsupported_transfer_syntax",
    ),
    (
        "native_ts_encapsulated_pixels",
        lambda: j2k_with_ts(ExplicitVRLittleEndian),
        "malformed_structure",
    ),
    ("corrupt_j2k", corrupt_j2k, "corrupt_pixel_data"),
    ("corrupt_jpeg", corrupt_jpeg, "corrupt_pixel_data"),
    (
        "jpeg_size_mismatch",
        lambda: nm_jpeg_baseline(jpeg_stream(np.zeros((8, 16), np.uint8))),
        "corrupt_pixel_data",
    ),
    ("deflate_garbage", deflate_bomb, "malformed_structure"),
    (
        "tomo_image_type",
        lambda: multiframe(pointers=[0x00540020], image_type_3="TOMO"),
        "tomographic_not_supported",
    ),
    (
        "tomo_rotation_pointer",
        lambda: multiframe(pointers=[0x00540050, 0x00540090], image_type_3="STATIC"),
        "tomographic_not_supported",
    ),
    (
        "tomo_many_unlabeled_frames",
        lambda: multiframe(pointers=[0x00540010], frames=64),
        "tomographic_not_supported",
    ),
    (
        "dynamic",
        lambda: multiframe(pointers=[0x00540030, 0x00540100], image_type_3="DYNAMIC"),
        "dynamic_not_supported",
    ),
    (
        "gated",
        lambda: multiframe(pointers=[0x00540060], image_type_3="GATED"),
        "dynamic_not_supported",
    ),
    (
        "ambiguous_energy_windows",
        lambda: multiframe(pointers=[0x00540010], frames=2),
        "ambiguous_multiframe",
    ),
    (
        "ambiguous_no_pointer",
        lambda: multiframe(pointers=[], frames=2),
        "ambiguous_multiframe",
    ),
    (
        "ambiguous_two_anterior",
        lambda: nm_bytes(views=["anterior", "anterior"]),
        "ambiguous_multiframe",
    ),
    (
        "ambiguous_unlabeled_view",
        lambda: nm_bytes(views=["anterior", None]),
        "ambiguous_multiframe",
    ),
    ("multiview_static", lambda: to_bytes(three_views()), "ok"),
    (
        "view_not_found",
        lambda: nm_bytes(views=["left anterior oblique", "posterior"]),
        "view_not_found",
    ),
    ("rgb", lambda: nm_colour("RGB", 3), "colour_image"),
    ("ybr", lambda: nm_colour("YBR_FULL", 3), "colour_image"),
    ("palette", lambda: nm_colour("PALETTE COLOR", 1), "colour_image"),
    ("bits_allocated_32", lambda: nm_bits(32), "unsupported_bits_allocated"),
    ("bits_allocated_12", lambda: nm_bits(12), "unsupported_bits_allocated"),
    ("bits_allocated_1", lambda: nm_bits(1), "unsupported_bits_allocated"),
    ("bits_stored_above_allocated", lambda: changed(BitsStored=17), "invalid_tag_value"),
    ("rows_zero", lambda: changed(Rows=0), "bad_geometry"),
    ("rows_absurd", lambda: changed(Rows=4096), "bad_geometry"),
    ("cols_absurd", lambda: changed(Columns=65535), "bad_geometry"),
    ("frames_zero", lambda: changed(NumberOfFrames=0), "bad_geometry"),
    ("frames_not_a_number", bad_number_of_frames, "invalid_tag_value"),
    ("missing_rows", lambda: changed(Rows=None), "missing_required_tag"),
    ("missing_bits_allocated", lambda: changed(BitsAllocated=None), "missing_required_tag"),
    (
        "missing_photometric",
        lambda: changed(PhotometricInterpretation=None),
        "missing_required_tag",
    ),
    ("missing_pixel_data", lambda: changed(PixelData=None), "missing_pixel_data"),
    (
        "pixel_data_too_long",
        lambda: changed(PixelData=bytes(16 * 16 * 2 + 64)),
        "pixel_length_mismatch",
    ),
    (
        "pixel_data_too_short",
        lambda: changed(PixelData=bytes(16 * 16 * 2 - 64)),
        "pixel_length_mismatch",
    ),
    ("rescale_slope_zero", lambda: changed(RescaleSlope=0), "invalid_tag_value"),
    ("modality_ct", lambda: changed(Modality="CT"), "ok"),
    ("wrong_sop_class", lambda: changed(SOPClassUID=SECONDARY_CAPTURE), "ok"),
    ("burned_in_annotation", lambda: changed(BurnedInAnnotation="YES"), "ok"),
    ("monochrome1", lambda: changed(PhotometricInterpretation="MONOCHROME1"), "ok"),
    ("deflated", lambda: to_bytes(nm_dataset(ts=DeflatedExplicitVRLittleEndian)), "ok"),
    ("implicit_vr", lambda: to_bytes(nm_dataset(ts=ImplicitVRLittleEndian)), "ok"),
    ("jpeg_baseline", nm_jpeg_baseline, "ok"),
]


def outcome(data: bytes, preferred_view: str = "anterior") -> str:
    try:
        decode(data, preferred_view=preferred_view)
    except DecodeError as exc:
        return exc.reason.value
    return "ok"


# ---------------------------------------------------------------------------------------
# 1. every file bundled with pydicom


def _bundled_files() -> dict[str, Path]:
    root = Path(pydicom.data.__file__).parent
    found = {*get_testdata_files(), *get_charset_files(), *get_palette_files()}
    return {
        Path(path).relative_to(root).as_posix(): Path(path)
        for path in found
        if os.path.isfile(path)
    }


BUNDLED = _bundled_files()


def test_bundled_table_covers_exactly_the_installed_files() -> None:
    where = f"pydicom {pydicom.__version__} (table made against {PYDICOM_VERSION})"
    missing = sorted(set(BUNDLED) - set(BUNDLED_EXPECTED))
    stale = sorted(set(BUNDLED_EXPECTED) - set(BUNDLED))
    assert not missing, f"{where}: bundled files without an expected outcome: {missing}"
    assert not stale, f"{where}: expected outcomes for files no longer bundled: {stale}"
    reasons = {reason.value for reason in DecodeReason}
    assert set(BUNDLED_EXPECTED.values()) <= reasons | {"ok"}


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_file_outcome(name: str) -> None:
    data = BUNDLED[name].read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the decoder must not leak warnings (they quote values)
        result = outcome(data)
    assert result == BUNDLED_EXPECTED.get(name)


def test_bundled_files_include_successes_and_deliberately_broken_ones() -> None:
    values = list(BUNDLED_EXPECTED.values())
    assert values.count("ok") >= 40
    for reason in ("truncated_pixel_data", "truncated_element", "colour_image", "not_dicom"):
        assert reason in values


def test_bundled_decodes_match_pydicom_pixels() -> None:
    """Every bundled success equals pydicom's own decode after the modality LUT."""
    from pydicom.pixels import apply_modality_lut

    checked = 0
    for name, expected in BUNDLED_EXPECTED.items():
        if expected != "ok":
            continue
        data = BUNDLED[name].read_bytes()
        record = decode(data)
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
        np.testing.assert_array_equal(record.pixels, reference, err_msg=name)
        assert record.pixels.dtype == np.float32
        assert record.shape == reference.shape
        checked += 1
    assert checked == list(BUNDLED_EXPECTED.values()).count("ok")


# ---------------------------------------------------------------------------------------
# 2. generated bad-input corpus


@pytest.mark.parametrize(
    ("make", "expected"),
    [pytest.param(make, expected, id=case) for case, make, expected in CORPUS],
)
def test_corpus_outcome(make: Callable[[], bytes], expected: str) -> None:
    data = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert outcome(data) == expected


def test_corpus_errors_carry_text_and_no_phi() -> None:
    for case, make, expected in CORPUS:
        if expected == "ok":
            continue
        with pytest.raises(DecodeError) as info:
            decode(make())
        error = info.value
        assert error.reason.value == expected, case
        assert error.message, case
        rendered = " ".join([str(error), error.message, repr(error), repr(error.header)])
        for phi in (*PHI_STRINGS, STUDY_UID, SERIES_UID, SOP_UID):
            assert phi not in rendered, (case, phi)


def test_every_reason_has_text() -> None:
    assert set(REASON_TEXT) == set(DecodeReason)
    for reason in DecodeReason:
        assert re.fullmatch(r"[a-z][a-z0-9_]+", reason.value)
        assert reason.describe() == REASON_TEXT[reason]
        assert reason.describe().endswith(".")


def test_header_survives_pixel_failures() -> None:
    with pytest.raises(DecodeError) as info:
        decode(VALID[:-10])
    header = info.value.header
    assert header is not None
    assert (header.rows, header.cols, header.bits_allocated) == (16, 16, 16)
    assert header.modality == "NM"
    assert header.has_pixel_data

    with pytest.raises(DecodeError) as info:
        decode(nm_colour("RGB", 3))
    assert info.value.header is not None
    assert info.value.header.samples_per_pixel == 3


def test_read_header() -> None:
    header = read_header(VALID)
    assert header.is_part10
    assert header.transfer_syntax_uid == ExplicitVRLittleEndian
    assert header.transfer_syntax_declared
    assert (header.rows, header.cols, header.frames) == (16, 16, 1)
    assert header.sop_class_uid == NM_IMAGE_STORAGE
    assert header.image_type == ("ORIGINAL", "PRIMARY", "STATIC", "EMISSION")
    assert not header.pixel_data_encapsulated
    rendered = repr(header)
    for phi in (*PHI_STRINGS, SOP_UID):
        assert phi not in rendered

    multi = read_header(to_bytes(three_views()))
    assert multi.frames == 3
    assert multi.frame_increment_pointer == ("EnergyWindowVector", "DetectorVector")

    raw = read_header(raw_bytes(nm_dataset(), implicit=True))
    assert not raw.is_part10
    assert raw.transfer_syntax_uid == ImplicitVRLittleEndian
    assert not raw.transfer_syntax_declared

    # defects past the header do not stop read_header; non-DICOM does
    assert read_header(VALID[:-10]).rows == 16
    assert read_header(j2k_with_ts("1.2.840.10008.1.2.4.110")).pixel_data_encapsulated
    for data, reason in (
        (b"", "empty_file"),
        (png_bytes(), "not_dicom"),
        (VALID[:150], "truncated_header"),
    ):
        with pytest.raises(DecodeError) as info:
            read_header(data)
        assert info.value.reason.value == reason


def test_every_prefix_of_a_valid_file_fails() -> None:
    """A file cut anywhere is never mistaken for a good image."""
    data = nm_bytes(rows=4, cols=4)
    for end in range(len(data)):
        assert outcome(data[:end]) != "ok", end


def test_byte_flips_raise_only_decode_error() -> None:
    """Random corruption either decodes or fails with DecodeError, nothing else."""
    rng = np.random.default_rng(20240102)
    sources = [
        nm_bytes(rows=4, cols=4),
        nm_compressed(JPEG2000Lossless)[0],
        nm_compressed(RLELossless)[0],
    ]
    outcomes: set[str] = set()
    for source in sources:
        for _ in range(150):
            mutated = bytearray(source)
            for position in rng.integers(0, len(source), size=int(rng.integers(1, 6))):
                mutated[position] = int(rng.integers(0, 256))
            try:
                decode(bytes(mutated))
                outcomes.add("ok")
            except DecodeError as exc:
                outcomes.add(exc.reason.value)
    assert "ok" in outcomes
    assert len(outcomes) > 3


def test_decode_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    real = dicom_pixels.decode_frame

    def slow(ds: Dataset, index: int | None) -> np.ndarray:
        time.sleep(0.5)
        return real(ds, index)

    monkeypatch.setattr(dicom_pixels, "decode_frame", slow)
    data, _ = nm_compressed(JPEG2000Lossless)
    with pytest.raises(DecodeError) as info:
        decode(data, decode_timeout_s=0.05)
    assert info.value.reason is DecodeReason.DECODE_TIMEOUT
    assert decode(data, decode_timeout_s=5.0).rows == 64


def test_unexpected_exception_becomes_unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ds: Dataset, raw: np.ndarray, slope: float | None, intercept: float | None) -> Any:
        raise RuntimeError(f"boom {PATIENT_ID}")

    monkeypatch.setattr(dicom_pixels, "to_counts", broken)
    with pytest.raises(DecodeError) as info:
        decode(VALID)
    assert info.value.reason is DecodeReason.UNREADABLE_DICOM
    assert PATIENT_ID not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


# ---------------------------------------------------------------------------------------
# 3. decoded values and round trips


def test_native_round_trip_and_metadata() -> None:
    pixels = default_pixels(32, 24)
    record = decode(nm_bytes(rows=32, cols=24, pixels=pixels))
    assert record.pixels.dtype == np.float32
    assert record.pixels.flags.c_contiguous
    np.testing.assert_array_equal(record.pixels, pixels.astype(np.float32))
    assert (record.rows, record.cols) == (32, 24)
    assert record.pixel_spacing_mm == (2.2, 2.4)
    assert record.modality == "NM"
    assert record.sop_class_uid == NM_IMAGE_STORAGE
    assert record.sop_instance_uid == SOP_UID
    assert record.study_instance_uid == STUDY_UID
    assert record.series_instance_uid == SERIES_UID
    assert record.transfer_syntax_uid == ExplicitVRLittleEndian
    assert record.bits_allocated == 16
    assert record.photometric_interpretation == "MONOCHROME2"
    assert (record.frames, record.frame_index) == (1, 0)
    assert record.view == "anterior"
    assert record.radiopharmaceutical == "Tc-99m pertechnetate"
    assert record.collimator == "PINH"
    assert record.burned_in_annotation is None
    assert record.image_type == ("ORIGINAL", "PRIMARY", "STATIC", "EMISSION")
    assert record.total_counts == float(pixels.sum())
    assert record.max_count == float(pixels.max())
    assert record.zero_fraction == pytest.approx(np.mean(pixels == 0))


def test_rescale_applied() -> None:
    pixels = default_pixels()
    record = decode(changed(RescaleSlope="0.5", RescaleIntercept="-3"))
    np.testing.assert_allclose(record.pixels, pixels * 0.5 - 3, rtol=0, atol=1e-6)
    assert record.pixels.dtype == np.float32


def test_signed_and_8_bit_pixels() -> None:
    signed = default_pixels().astype(np.int16) - 100
    ds = nm_dataset(pixels=signed.view(np.uint16))
    ds.PixelRepresentation = 1
    np.testing.assert_array_equal(decode(to_bytes(ds)).pixels, signed.astype(np.float32))

    small = (default_pixels(3, 5) % 200).astype(np.uint8)  # 15 bytes: written with a pad byte
    ds = nm_dataset(rows=3, cols=5)
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = small.tobytes()
    ds["PixelData"].VR = "OB"
    data = to_bytes(ds)
    assert len(data) % 2 == 0
    np.testing.assert_array_equal(decode(data).pixels, small.astype(np.float32))

    stored_12 = default_pixels() | np.uint16(0xF000)  # junk in the 4 unused high bits
    ds = nm_dataset(pixels=stored_12)
    ds.BitsStored = 12
    ds.HighBit = 11
    expected = (stored_12 & 0x0FFF).astype(np.float32)
    np.testing.assert_array_equal(decode(to_bytes(ds)).pixels, expected)


def test_reported_facts_for_data_checks() -> None:
    assert decode(changed(Modality="CT")).modality == "CT"
    assert decode(changed(SOPClassUID=SECONDARY_CAPTURE)).sop_class_uid == SECONDARY_CAPTURE
    assert decode(changed(BurnedInAnnotation="YES")).burned_in_annotation == "YES"
    assert decode(changed(PixelSpacing=None)).pixel_spacing_mm is None
    assert decode(changed(PatientID=None)).patient_hash is None
    assert decode(changed(RadiopharmaceuticalInformationSequence=None)).radiopharmaceutical is None
    inferred = decode(rewrap(VALID, None))
    assert inferred.transfer_syntax_uid == ExplicitVRLittleEndian
    assert (
        decode(raw_bytes(nm_dataset(), implicit=True)).transfer_syntax_uid == ImplicitVRLittleEndian
    )


def test_patient_hash() -> None:
    record = decode(VALID)
    assert record.patient_hash is not None
    assert re.fullmatch(r"[0-9a-f]{32}", record.patient_hash)
    assert record.patient_hash != PATIENT_ID
    assert PATIENT_ID not in record.patient_hash
    assert "7731" not in record.patient_hash
    assert record.patient_hash == hash_identifier(PATIENT_ID, TEST_KEY)
    assert decode(VALID).patient_hash == record.patient_hash
    keyed = decode_dicom(VALID, patient_hash_key=b"another-site-key")
    assert keyed.patient_hash != record.patient_hash
    assert (
        keyed.patient_hash == decode_dicom(VALID, patient_hash_key=b"another-site-key").patient_hash
    )
    other = decode(changed(PatientID="PID-0001"))
    assert other.patient_hash != record.patient_hash
    assert PATIENT_ID not in repr(record)
    assert PATIENT_NAME not in repr(record)


@pytest.mark.parametrize("ts", [RLELossless, JPEG2000Lossless])
def test_lossless_compressed_round_trip(ts: str) -> None:
    data, expected = nm_compressed(ts)
    record = decode(data)
    assert record.transfer_syntax_uid == ts
    np.testing.assert_array_equal(record.pixels, expected.astype(np.float32))


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"],
)
def test_bundled_lossless_equals_native(name: str) -> None:
    """JPEG-LS has no encoder installed here: pydicom's bundled lossless files cover decode."""
    native = decode(BUNDLED["test_files/MR_small.dcm"].read_bytes())
    compressed = decode(BUNDLED[f"test_files/{name}"].read_bytes())
    np.testing.assert_array_equal(compressed.pixels, native.pixels)


def test_jpeg_baseline_lossy_round_trip() -> None:
    pixels = (default_pixels() % 256).astype(np.uint8)
    record = decode(nm_jpeg_baseline())
    assert record.transfer_syntax_uid == JPEGBaseline8Bit
    assert record.bits_allocated == 8
    assert np.abs(record.pixels - pixels.astype(np.float32)).mean() < 8


def test_multiview_picks_preferred_frame() -> None:
    data = to_bytes(three_views())
    frames = default_pixels(16, 16, 3).astype(np.float32)

    record = decode(data)
    assert (record.frames, record.frame_index, record.view) == (3, 1, "anterior")
    np.testing.assert_array_equal(record.pixels, frames[1])

    lao = decode(data, preferred_view="left anterior oblique")
    assert (lao.frame_index, lao.view) == (0, "left anterior oblique")
    np.testing.assert_array_equal(lao.pixels, frames[0])
    assert decode(data, preferred_view="LAO").frame_index == 0
    assert decode(data, preferred_view="RAO").frame_index == 2
    assert outcome(data, preferred_view="posterior") == "view_not_found"


def test_multiview_compressed_picks_preferred_frame() -> None:
    ds = three_views()  # RLE: openjpeg cannot encode frames this small
    expected = ds.pixel_array.copy()
    ds.compress(RLELossless)
    record = decode(to_bytes(ds), preferred_view="right anterior oblique")
    assert record.frame_index == 2
    np.testing.assert_array_equal(record.pixels, expected[2].astype(np.float32))


def test_view_matching_by_meaning_or_code() -> None:
    data = three_views_with_codes(
        ("R-10B1F", "SRT", "LAO"),  # legacy code: matched by its meaning
        ("G-A117", "SRT", "ANT"),
        ("399108003", "SCT", "something else"),  # known CID 26 code wins over the meaning
    )
    assert decode(data).frame_index == 1
    assert decode(data, preferred_view="left anterior oblique").frame_index == 0
    assert decode(data, preferred_view="right anterior oblique").frame_index == 2


def test_single_frame_view_from_view_position() -> None:
    ds = nm_dataset()
    del ds.DetectorInformationSequence
    ds.ViewPosition = "ANT"
    assert decode(to_bytes(ds)).view == "anterior"
    ds.ViewPosition = "POST"
    record = decode(to_bytes(ds))
    assert record.view == "posterior"  # single frame: reported, the data checks judge it


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("ANT", "anterior"),
        ("Anterior projection", "anterior"),
        ("anterior", "anterior"),
        ("Left anterior oblique", "left anterior oblique"),
        ("LAO", "left anterior oblique"),
        ("left_anterior-oblique", "left anterior oblique"),
        ("Posterior projection", "posterior"),
        ("Right lateral projection", "right lateral"),
    ],
)
def test_normalise_view(text: str, canonical: str) -> None:
    assert normalise_view(text) == canonical


def test_decode_error_pickles() -> None:
    import pickle

    with pytest.raises(DecodeError) as info:
        decode(VALID[:-10])
    clone = pickle.loads(pickle.dumps(info.value))
    assert clone.reason is info.value.reason
    assert clone.message == info.value.message
    assert clone.header == info.value.header


def test_no_key_means_no_patient_hash() -> None:
    """A caller that does not use the hash passes None; nothing else about the record changes."""
    unkeyed = decode_dicom(VALID, patient_hash_key=None)
    keyed = decode(VALID)
    assert unkeyed.patient_hash is None
    assert keyed.patient_hash is not None
    np.testing.assert_array_equal(unkeyed.pixels, keyed.pixels)
    assert (unkeyed.sop_instance_uid, unkeyed.view) == (keyed.sop_instance_uid, keyed.view)


def test_no_phi_in_logs_or_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """pydicom quotes invalid values verbatim in warnings and logs; decoding must not."""
    secret_uid = "1.2.3.7731SECRET"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom complains (quoting values) as we build it
        ds = nm_dataset()
        ds.SOPInstanceUID = secret_uid  # invalid UI characters: pydicom complains on read
        ds.StudyInstanceUID = secret_uid + ".9"
        ds.PatientID = PATIENT_ID + "\x01"  # control character: invalid LO
        data = to_bytes(ds)
    corpus = [make() for _, make, expected in CORPUS if expected != "ok"]
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # writing the test data above logs the bad values itself
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = decode(data)
        read_header(data)
        for bad in corpus:
            with pytest.raises(DecodeError):
                decode(bad)
    assert record.sop_instance_uid == secret_uid
    assert [str(w.message) for w in caught] == []
    for phi in (secret_uid, PATIENT_ID, PATIENT_NAME):
        assert phi not in caplog.text
    # the log filter only covers decoding threads: pydicom's logger still works elsewhere
    logging.getLogger("pydicom").warning("outside a decode")
    assert "outside a decode" in caplog.text


# ---------------------------------------------------------------------------------------
# 4. the package's interface


def test_package_keeps_every_public_name() -> None:
    """`scintiflow.ingest.dicom` became a package; what importers used is still there."""
    for name in (
        "DEFAULT_PATIENT_HASH_KEY",
        "MAX_MATRIX",
        "REASON_TEXT",
        "DecodeError",
        "DecodeReason",
        "DicomHeader",
        "decode_dicom",
        "normalise_view",
        "read_header",
    ):
        assert name in dicom.__all__, name
        assert hasattr(dicom, name), name
    assert dicom._quiet_pydicom is dicom.quiet_pydicom  # imported by outputs.secondary_capture
    assert callable(dicom._rebuild_error)  # what pickles made before the split refer to


def test_patient_hash_key_is_a_required_argument() -> None:
    """There is no built-in key to fall back to: leaving the key out is a TypeError."""
    import inspect

    from scintiflow.ingest.objects import decode_object, decode_objects

    for fn in (decode_dicom, decode_object, decode_objects):
        param = inspect.signature(fn).parameters["patient_hash_key"]
        assert param.default is inspect.Parameter.empty, fn.__name__
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, fn.__name__
    with pytest.raises(TypeError):
        decode_dicom(VALID)  # type: ignore[call-arg]
