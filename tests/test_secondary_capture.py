"""Heatmap overlays as DICOM Secondary Capture: dciodvfy-clean, in the original study, derived."""

from __future__ import annotations

import io
import shutil
import subprocess
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from scintiflow.inference.explain import overlay_png
from scintiflow.ingest.dicom import decode_dicom
from scintiflow.outputs.secondary_capture import (
    PATIENT_MODULE_KEYWORDS,
    build_secondary_capture,
    encode,
    png_rgb,
    read_source,
    sc_key,
    sc_uids,
    series_description,
    source_frame_number,
)
from scintiflow.sim import write_night
from scintiflow.storage import LocalStore

DCIODVFY = shutil.which("dciodvfy")
needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools' dciodvfy is missing")
VERSION = "v20261127T020000Z-a1b2c3"


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) that dicom3tools' validator reports for a file."""
    assert DCIODVFY is not None
    proc = subprocess.run(
        [DCIODVFY, "-new", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    return (
        [line for line in lines if line.startswith("Error")],
        [line for line in lines if line.startswith("Warning")],
    )


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Simulated exports: 128 and 256 px, single- and multi-frame, some compressed."""
    store = LocalStore(tmp_path_factory.mktemp("sc"))
    write_night(
        store,
        night=date(2026, 11, 27),
        n=12,
        sites=("A", "C"),
        seed=4,
        multiview_fraction=0.3,
        compressed_fraction=0.3,
    )
    return [store.get(o.key) for o in store.list("exports/")]


def _heat(rows: int, cols: int) -> np.ndarray:
    y, x = np.mgrid[0:rows, 0:cols]
    return np.exp(-(((y - rows * 0.6) ** 2 + (x - cols * 0.4) ** 2) / (2 * (rows / 8) ** 2)))


def _build(data: bytes, label: str = "graves") -> tuple[bytes, np.ndarray, int]:
    record = decode_dicom(data, patient_hash_key=b"test-phi-key")
    overlay = png_rgb(overlay_png(record.pixels, _heat(record.rows, record.cols)))
    source = read_source(data)
    series, sop = sc_uids("run-1", str(source.StudyInstanceUID), "ab" * 32)
    ds = build_secondary_capture(
        source,
        overlay,
        series_uid=series,
        sop_uid=sop,
        instance_number=1,
        model_name="thyroid",
        model_version=VERSION,
        engine="onnxruntime",
        predicted_label=label,
        confidence=0.734,
        source_frame=source_frame_number(record.frames, record.frame_index),
    )
    return encode(ds), overlay, record.frames


@needs_dciodvfy
def test_dciodvfy_reports_no_errors(sources: list[bytes], tmp_path: Path) -> None:
    frames_seen = set()
    warnings: set[str] = set()
    for i, data in enumerate(sources):
        blob, _, frames = _build(data)
        frames_seen.add(frames > 1)
        path = tmp_path / f"{i}.dcm"
        path.write_bytes(blob)
        errors, warns = dciodvfy(path)
        assert errors == [], errors
        warnings.update(warns)
    assert frames_seen == {False, True}  # single- and multi-frame sources both covered
    print("dciodvfy warnings:", sorted(warnings) or "none")


def test_same_study_and_patient_new_series_derived(sources: list[bytes]) -> None:
    for data in sources:
        blob, overlay, frames = _build(data, label="subacute_thyroiditis")
        sc = dcmread(io.BytesIO(blob))
        src = dcmread(io.BytesIO(data), stop_before_pixels=True)
        assert sc.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
        assert sc.StudyInstanceUID == src.StudyInstanceUID
        assert sc.SeriesInstanceUID != src.SeriesInstanceUID
        assert sc.SOPInstanceUID not in (src.SOPInstanceUID, sc.SeriesInstanceUID)
        copied = [kw for kw in PATIENT_MODULE_KEYWORDS if kw in src]
        assert {"PatientName", "PatientID", "PatientBirthDate", "PatientSex"} <= set(copied)
        for kw in copied:
            assert sc[kw].value == src[kw].value, kw
        assert sc.AccessionNumber == src.AccessionNumber
        assert list(sc.ImageType) == ["DERIVED", "SECONDARY"]
        assert sc.ConversionType == "SYN"
        assert sc.BurnedInAnnotation == "NO"
        assert "AI-GENERATED" in sc.SeriesDescription
        assert VERSION in sc.SeriesDescription
        assert "subacute_thyroiditis" in sc.SeriesDescription
        assert "not a diagnosis" in sc.DerivationDescription
        assert (sc.PhotometricInterpretation, sc.SamplesPerPixel) == ("RGB", 3)
        assert np.array_equal(sc.pixel_array, overlay)  # the overlay PNG, pixel for pixel
        ref = sc.SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert ref.ReferencedSOPClassUID == src.SOPClassUID
        if frames > 1:
            record = decode_dicom(data, patient_hash_key=b"test-phi-key")
            assert ref.ReferencedFrameNumber == record.frame_index + 1
        else:
            assert "ReferencedFrameNumber" not in ref


def test_uids_are_deterministic_per_run_study_and_image() -> None:
    a = sc_uids("run-1", "1.2.3", "aa" * 32)
    assert a == sc_uids("run-1", "1.2.3", "aa" * 32)
    b = sc_uids("run-1", "1.2.3", "bb" * 32)
    assert b[0] == a[0]  # same study, same run: one series
    assert b[1] != a[1]
    c = sc_uids("run-2", "1.2.3", "aa" * 32)
    assert c[0] != a[0]
    assert c[1] != a[1]
    assert all(len(u) <= 64 and u.replace(".", "").isdigit() for u in (*a, *b, *c))


def test_series_description_fits_lo_and_keeps_the_class() -> None:
    text = series_description(VERSION, "subacute_thyroiditis")
    assert text == f"AI-GENERATED CAM {VERSION} subacute_thyroiditis"
    assert len(text) <= 64
    long = series_description("v" + "9" * 80, "thyroid_tumor")
    assert len(long) == 64
    assert long.endswith(" thyroid_tumor")
    assert long.startswith("AI-GENERATED CAM v999")


def test_sc_key_is_named_by_hash() -> None:
    assert sc_key("results/2026-11-27/run-1/", "ab" * 32) == (
        f"results/2026-11-27/run-1/sc/{'ab' * 32}.dcm"
    )


def test_overlay_must_be_rgb(sources: list[bytes]) -> None:
    source = read_source(sources[0])
    with pytest.raises(ValueError, match="rows, cols, 3"):
        build_secondary_capture(
            source,
            np.zeros((8, 8), dtype=np.uint8),
            series_uid="1.2.3",
            sop_uid="1.2.3.4",
            instance_number=1,
            model_name=None,
            model_version=VERSION,
            engine="torch",
            predicted_label="normal",
            confidence=0.5,
        )
