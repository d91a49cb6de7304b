"""The scintigraphy simulator: class physiology, counts, determinism, DICOM, PHI, faults."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from scintiflow import CLASSES
from scintiflow.domain import sha256_hex
from scintiflow.sim import (
    ENCODINGS,
    FAULT_KINDS,
    NM_IMAGE_STORAGE,
    PHI_SENTINELS,
    SENTINEL_ACCESSION,
    SENTINEL_BIRTH_DATE,
    SENTINEL_PATIENT_ID,
    SENTINEL_PATIENT_NAME,
    SITES,
    PhantomCase,
    SimulatedFile,
    bad_file_count,
    case_to_dicom,
    case_to_multiview_dicom,
    generate_night,
    render_expected,
    render_montage,
    simulate_case,
    simulate_cases,
    write_night,
)

NIGHT = date(2024, 5, 1)
TEST_KEY = b"scintiflow-test-phi-key"
KEY_RE = re.compile(r"^site-[A-Z]/[0-9a-f]{24}\.(dcm|png)$")


class DictStore:
    """The one method write_night needs, recording puts."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> None:
        assert key not in self.objects, f"overwrote {key}"
        self.objects[key] = data


def roi_means(case: PhantomCase) -> dict[str, float]:
    """Mean counts per region of interest of the noisy image."""
    img = case.image.astype(np.float64)
    return {name: float(img[mask].mean()) for name, mask in case.masks().items() if mask.any()}


@pytest.fixture(scope="module")
def by_class() -> dict[str, list[PhantomCase]]:
    """40 images per class from the two internal sites at the default difficulty."""
    return {
        label: simulate_cases(40, sites=("A", "B"), seed=11, class_weights={label: 1.0})
        for label in CLASSES
    }


@pytest.fixture(scope="module")
def night_files() -> list[SimulatedFile]:
    """A small night with every fault kind and every good-file encoding."""
    return list(
        generate_night(
            30,
            night=NIGHT,
            sites=("A", "B", "C"),
            seed=5,
            bad_fraction=0.25,
            compressed_fraction=0.3,
            multiview_fraction=0.15,
        )
    )


# --------------------------------------------------------------------------- sites


def test_site_profiles_are_frozen_and_distinct() -> None:
    assert len(SITES) >= 3
    assert {(s.matrix, s.pixel_spacing_mm) for s in SITES.values()} >= {(128, 1.8), (256, 0.75)}
    for name, site in SITES.items():
        assert site.name == name
        assert sum(site.class_prior) == pytest.approx(1.0)
        assert site.counts_range[0] < site.counts_range[1]
        assert site.collimator_type == "PINH"
        with pytest.raises(dataclasses.FrozenInstanceError):
            site.matrix = 64  # type: ignore[misc]
    assert {s.radionuclide for s in SITES.values()} == {"Tc-99m", "I-123"}
    assert len({s.blur_sigma_px for s in SITES.values()}) == len(SITES)


@pytest.mark.parametrize("site", sorted(SITES))
@pytest.mark.parametrize("label", CLASSES)
def test_simulate_case_matrix_dtype_and_counts(label: str, site: str) -> None:
    rng = np.random.default_rng(3)
    prof = SITES[site]
    for _ in range(3):
        img = simulate_case(label, site, rng)
        assert img.shape == (prof.matrix, prof.matrix)
        assert img.dtype == np.uint16
        lo, hi = prof.counts_range
        assert lo <= int(img.sum()) <= hi
        assert img[0, 0] == 0  # outside the round pinhole field of view


def test_counts_within_site_range_over_a_cohort(by_class: dict[str, list[PhantomCase]]) -> None:
    cases = [c for cs in by_class.values() for c in cs]
    for case in cases:
        lo, hi = case.profile.counts_range
        assert lo <= case.total_counts <= hi
    totals = [c.total_counts for c in cases]
    assert max(totals) / min(totals) > 2.0  # drawn per image, not fixed


def test_unknown_label_or_site_is_rejected() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown class"):
        simulate_case("goitre", "A", rng)
    with pytest.raises(ValueError, match="unknown site"):
        simulate_case("normal", "Z", rng)
    with pytest.raises(ValueError, match="difficulty"):
        simulate_case("normal", "A", rng, difficulty=1.5)


# --------------------------------------------------------------------------- physiology


def test_graves_thyroid_to_background_exceeds_normal(
    by_class: dict[str, list[PhantomCase]],
) -> None:
    def tb(case: PhantomCase) -> float:
        m = roi_means(case)
        return m["thyroid"] / m["background"]

    normal = np.array([tb(c) for c in by_class["normal"]])
    graves = np.array([tb(c) for c in by_class["graves"]])
    assert graves.mean() > 1.8 * normal.mean()
    assert np.median(graves) > np.percentile(normal, 75)


def test_graves_gland_is_enlarged(by_class: dict[str, list[PhantomCase]]) -> None:
    def area(case: PhantomCase) -> int:
        return int(case.masks()["thyroid"].sum() * case.profile.object_spacing_mm**2)

    assert np.mean([area(c) for c in by_class["graves"]]) > 1.3 * np.mean(
        [area(c) for c in by_class["normal"]]
    )


def test_normal_salivary_glands_visible_and_below_thyroid(
    by_class: dict[str, list[PhantomCase]],
) -> None:
    ratios = []
    for case in by_class["normal"]:
        m = roi_means(case)
        assert m["salivary"] > 1.2 * m["background"]  # visible above soft tissue
        ratios.append(m["thyroid"] / m["salivary"])
    assert np.median(ratios) > 1.3
    assert np.mean(np.array(ratios) > 1.0) >= 0.9


def test_thyroiditis_gland_fainter_than_salivary(by_class: dict[str, list[PhantomCase]]) -> None:
    thy, sal = [], []
    for case in by_class["subacute_thyroiditis"]:
        m = roi_means(case)
        thy.append(m["thyroid"])
        sal.append(m["salivary"])
    thy_a, sal_a = np.array(thy), np.array(sal)
    assert thy_a.mean() < sal_a.mean()
    assert np.mean(thy_a < sal_a) >= 0.85


def test_tumour_has_one_focal_lesion_inside_a_lobe(by_class: dict[str, list[PhantomCase]]) -> None:
    cases = by_class["thyroid_tumor"]
    kinds = Counter(c.nodule_kind for c in cases)
    assert kinds["cold"] > kinds["hot"] > 0  # cold defects are the common finding
    focal = 0
    for case in cases:
        nod = case.anatomy.nodule
        assert nod is not None
        masks = case.masks()
        row, col = case.nodule_center_px or (0.0, 0.0)
        assert masks[f"{nod.lobe}_lobe"][round(row), round(col)]  # centre lies in its lobe
        # noise-free: the lesion changes its region relative to the rest of the lobe
        site = case.profile
        with_nodule = render_expected(case.anatomy, site)
        without = render_expected(dataclasses.replace(case.anatomy, nodule=None), site)

        def contrast(img: np.ndarray, masks: dict[str, np.ndarray] = masks) -> float:
            return float(img[masks["nodule"]].mean() / img[masks["nodule_lobe_rest"]].mean())

        base = contrast(without)
        if nod.kind == "cold":
            assert contrast(with_nodule) < 0.97 * base
            focal += contrast(case.image.astype(np.float64)) < 0.9 * base
        else:
            assert contrast(with_nodule) > 1.1 * base
            focal += contrast(case.image.astype(np.float64)) > 1.1 * base
    assert focal >= 0.8 * len(cases)  # visible in the noisy image for most


def test_other_classes_have_no_nodule(by_class: dict[str, list[PhantomCase]]) -> None:
    for label in ("normal", "graves", "subacute_thyroiditis"):
        assert all(c.nodule_kind is None for c in by_class[label])


def test_difficulty_moves_findings_towards_subtle() -> None:
    easy = simulate_cases(40, seed=2, difficulty=0.0, class_weights={"graves": 1.0})
    hard = simulate_cases(40, seed=2, difficulty=1.0, class_weights={"graves": 1.0})
    assert (
        np.mean([c.anatomy.severity for c in easy])
        > np.mean([c.anatomy.severity for c in hard]) + 0.3
    )
    assert np.mean([c.anatomy.thyroid_to_background for c in easy]) > np.mean(
        [c.anatomy.thyroid_to_background for c in hard]
    )
    normals = simulate_cases(80, seed=2, difficulty=1.0, class_weights={"normal": 1.0})
    assert {c.anatomy.confuser for c in normals} >= {"high_normal", "asymmetric", "faint"}
    textbook = simulate_cases(40, seed=2, difficulty=0.0, class_weights={"normal": 1.0})
    assert all(c.anatomy.confuser is None for c in textbook)


# --------------------------------------------------------------------------- cohort


def test_patients_with_several_images_share_label_and_site() -> None:
    cases = simulate_cases(80, sites=("A", "B", "C"), seed=4)
    per_patient: dict[str, list[PhantomCase]] = defaultdict(list)
    for c in cases:
        per_patient[c.patient_id].append(c)
    multi = [cs for cs in per_patient.values() if len(cs) > 1]
    assert 0.1 <= len(multi) / len(per_patient) <= 0.45
    for cs in multi:
        assert len({c.label for c in cs}) == 1
        assert len({c.site for c in cs}) == 1
        assert [c.visit for c in cs] == list(range(len(cs)))
        assert cs[0].days_before > cs[-1].days_before >= 0
        assert not np.array_equal(cs[0].image, cs[1].image)
    assert {c.site for c in cases} == {"A", "B", "C"}
    assert set(Counter(c.label for c in cases)) == set(CLASSES)


def test_class_weights_select_classes() -> None:
    cases = simulate_cases(20, seed=1, class_weights=[0, 0, 1, 1])
    assert {c.label for c in cases} <= {"subacute_thyroiditis", "thyroid_tumor"}
    with pytest.raises(ValueError, match="unknown classes"):
        simulate_cases(2, class_weights={"cancer": 1.0})


def test_same_seed_same_images_different_seed_different() -> None:
    a = simulate_cases(6, seed=9)
    b = simulate_cases(6, seed=9)
    c = simulate_cases(6, seed=10)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert [x.patient_id for x in a] == [y.patient_id for y in b]
    assert not any(np.array_equal(x.image, y.image) for x, y in zip(a, c, strict=True))
    assert not {x.patient_id for x in a} & {y.patient_id for y in c}
    longer = simulate_cases(9, seed=9)  # a longer run starts with the shorter one
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, longer, strict=False))


def test_same_seed_same_bytes() -> None:
    def night(seed: int) -> list[bytes]:
        return [f.data for f in generate_night(12, night=NIGHT, seed=seed, bad_fraction=0.4)]

    first = night(1)
    assert first == night(1)
    assert not set(first) & set(night(2)) - {b""}


def test_faults_do_not_change_the_good_files() -> None:
    def good(bad_fraction: float) -> list[bytes]:
        files = generate_night(15, night=NIGHT, seed=4, bad_fraction=bad_fraction)
        return [f.data for f in files if f.fault is None]

    assert good(0.0) == good(0.4)


# --------------------------------------------------------------------------- DICOM


@pytest.mark.parametrize("site", sorted(SITES))
def test_dicom_nm_headers_per_site(site: str) -> None:
    case = simulate_cases(1, sites=(site,), seed=3)[0]
    data = case_to_dicom(case, night=NIGHT, index=0, seed=3)
    assert data[128:132] == b"DICM"
    ds = pydicom.dcmread(io.BytesIO(data))
    prof = SITES[site]
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == NM_IMAGE_STORAGE == "1.2.840.10008.5.1.4.1.1.20"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.Modality == "NM"
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "STATIC", "EMISSION"]
    assert (ds.Rows, ds.Columns) == (prof.matrix, prof.matrix)
    assert [float(v) for v in ds.PixelSpacing] == [prof.pixel_spacing_mm] * 2
    assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 16, 0)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert int(ds.NumberOfFrames) == 1
    assert int(ds.CountsAccumulated) == case.total_counts
    assert ds.StudyDate <= NIGHT.strftime("%Y%m%d")
    det = ds.DetectorInformationSequence[0]
    assert det.CollimatorType == "PINH"
    assert det.ViewCodeSequence[0].CodeValue == "399321004"  # SCT anterior projection
    radio = ds.RadiopharmaceuticalInformationSequence[0]
    nuclide = radio.RadionuclideCodeSequence[0].CodeMeaning
    assert nuclide == ("^123^Iodine" if prof.radionuclide == "I-123" else "^99m^Technetium")
    assert ds.Manufacturer == prof.manufacturer
    np.testing.assert_array_equal(ds.pixel_array, case.image)


@pytest.mark.parametrize(
    "syntax",
    [pydicom.uid.RLELossless, pydicom.uid.JPEG2000Lossless, pydicom.uid.ImplicitVRLittleEndian],
)
def test_compressed_dicom_is_lossless_and_keeps_uids(syntax: str) -> None:
    case = simulate_cases(1, seed=8)[0]
    plain = pydicom.dcmread(io.BytesIO(case_to_dicom(case, night=NIGHT, index=0, seed=8)))
    data = case_to_dicom(case, night=NIGHT, index=0, seed=8, transfer_syntax=syntax)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.SOPInstanceUID == plain.SOPInstanceUID
    np.testing.assert_array_equal(ds.pixel_array, case.image)
    with pytest.raises(ValueError, match="unsupported"):
        case_to_dicom(case, night=NIGHT, index=0, seed=8, transfer_syntax="1.2.840.10008.1.2.4.50")


def test_multiview_object_identifies_views_through_detectors() -> None:
    case = simulate_cases(1, seed=6)[0]
    ds = pydicom.dcmread(io.BytesIO(case_to_multiview_dicom(case, night=NIGHT, index=0, seed=6)))
    assert int(ds.NumberOfFrames) == 3
    assert [int(t) for t in ds.FrameIncrementPointer] == [0x00540010, 0x00540020]
    views = [
        ds.DetectorInformationSequence[d - 1].ViewCodeSequence[0].CodeMeaning
        for d in ds.DetectorVector
    ]
    assert sorted(views) == [
        "Anterior projection",
        "Left anterior oblique",
        "Right anterior oblique",
    ]
    frames = ds.pixel_array
    np.testing.assert_array_equal(frames[views.index("Anterior projection")], case.image)


# --------------------------------------------------------------------------- PHI


def test_phi_sentinel_mode_writes_sentinels_and_default_mode_does_not() -> None:
    case = simulate_cases(1, seed=2)[0]
    marked = case_to_dicom(case, night=NIGHT, index=0, seed=2, phi_sentinel=True)
    ds = pydicom.dcmread(io.BytesIO(marked))
    assert str(ds.PatientName) == SENTINEL_PATIENT_NAME
    assert ds.PatientID == SENTINEL_PATIENT_ID
    assert ds.AccessionNumber == SENTINEL_ACCESSION
    assert ds.PatientBirthDate == SENTINEL_BIRTH_DATE
    for value in PHI_SENTINELS:
        assert value.encode() in marked
    plain = case_to_dicom(case, night=NIGHT, index=0, seed=2)
    ds = pydicom.dcmread(io.BytesIO(plain))
    assert str(ds.PatientName).startswith("SIM^")
    assert ds.PatientID == case.patient_id
    assert ds.PatientID.startswith("SIM-")
    for value in PHI_SENTINELS:
        assert value.encode() not in plain


def test_sentinel_night_marks_every_dicom_file() -> None:
    files = list(generate_night(10, night=NIGHT, seed=3, bad_fraction=0.5, phi_sentinel=True))
    for f in files:
        if f.fault is None or f.fault in {"truncated", "not_nm", "colour_screenshot"}:
            assert SENTINEL_PATIENT_ID.encode() in f.data
            assert f.patient_id == SENTINEL_PATIENT_ID
        assert SENTINEL_PATIENT_ID not in f.relative_key


def test_keys_are_content_hashes_without_identifiers(night_files: list[SimulatedFile]) -> None:
    for f in night_files:
        assert KEY_RE.match(f.relative_key), f.relative_key
        assert f.relative_key.startswith(f"site-{f.site}/")
        assert sha256_hex(f.data)[:24] in f.relative_key
        if f.patient_id:
            assert f.patient_id not in f.relative_key
            assert f.patient_id.split("-")[-1] not in f.relative_key.split("/")[0]
    assert len({f.relative_key for f in night_files}) == len(night_files)


# --------------------------------------------------------------------------- nights


def test_bad_fraction_maps_to_a_share_of_all_files() -> None:
    assert bad_file_count(90, 0.1) == 10
    assert bad_file_count(30, 0.25) == 10
    assert bad_file_count(40, 0.0) == 0
    with pytest.raises(ValueError, match="bad_fraction"):
        bad_file_count(10, 1.0)


def test_night_has_every_fault_kind_and_encoding(night_files: list[SimulatedFile]) -> None:
    good = [f for f in night_files if f.fault is None]
    bad = [f for f in night_files if f.fault is not None]
    assert len(good) == 30
    assert len(bad) == bad_file_count(30, 0.25) >= len(FAULT_KINDS)
    assert {f.fault for f in bad} == set(FAULT_KINDS)
    assert {f.encoding for f in good} == set(ENCODINGS)
    assert all(f.label in CLASSES and f.case is not None for f in good)
    assert all(f.label is None for f in bad)
    assert {f.site for f in night_files} <= {"A", "B", "C"}
    by_kind = {f.fault: f for f in bad}
    assert by_kind["empty"].data == b""
    assert by_kind["png"].data.startswith(b"\x89PNG")
    assert by_kind["png"].relative_key.endswith(".png")
    assert Image.open(io.BytesIO(by_kind["png"].data)).info == {}  # no text chunks


def test_fault_files_are_what_they_claim(night_files: list[SimulatedFile]) -> None:
    by_kind = {f.fault: f for f in night_files if f.fault is not None}

    def read(kind: str) -> pydicom.Dataset:
        return pydicom.dcmread(io.BytesIO(by_kind[kind].data))

    ct = read("not_nm")
    assert ct.Modality == "CT"
    assert ct.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ct.pixel_array.shape == (128, 128)
    shot = read("colour_screenshot")
    assert shot.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert (shot.SamplesPerPixel, shot.PhotometricInterpretation) == (3, "RGB")
    assert shot.BurnedInAnnotation == "YES"
    tomo = read("multiframe_tomo")
    assert int(tomo.NumberOfFrames) >= 60
    assert tomo.ImageType[2] == "TOMO"
    assert tomo.pixel_array.shape[0] == int(tomo.NumberOfFrames)
    comp = read("corrupt_compressed")
    assert comp.file_meta.TransferSyntaxUID in {
        pydicom.uid.JPEGBaseline8Bit,
        pydicom.uid.JPEGLSLossless,
        pydicom.uid.JPEG2000Lossless,
    }
    cut = by_kind["truncated"].data
    assert cut[128:132] == b"DICM"
    assert b"\xe0\x7f\x10\x00" in cut  # the pixel data element starts, then stops short
    head = by_kind["truncated_header"].data
    assert head[128:132] == b"DICM"
    assert b"\xe0\x7f\x10\x00" not in head
    assert by_kind["random_bytes"].data[128:132] != b"DICM"


def test_write_night_puts_files_and_label_csvs() -> None:
    store = DictStore()
    seen: list[int] = []
    summary = write_night(
        store,
        night=NIGHT,
        n=24,
        sites=("A", "B"),
        seed=7,
        bad_fraction=0.3,
        difficulty=0.5,
        phi_sentinel=False,
        progress=seen.append,
    )
    day = "2024-05-01"
    assert summary.exports_prefix == f"exports/{day}"
    assert summary.labels_key == f"labels/{day}.csv"
    assert summary.faults_key == f"labels/{day}.faults.csv"
    assert summary.images == 24
    assert summary.faults == bad_file_count(24, 0.3)
    assert seen == list(range(1, summary.files + 1))
    exports = {k for k in store.objects if k.startswith(f"exports/{day}/")}
    assert len(exports) == summary.files
    labels = list(csv.DictReader(io.StringIO(store.objects[summary.labels_key].decode())))
    faults = list(csv.DictReader(io.StringIO(store.objects[summary.faults_key].decode())))
    assert list(labels[0]) == ["key", "label", "patient_id", "site"]
    assert list(faults[0]) == ["key", "fault", "site"]
    assert {r["key"] for r in labels} | {r["key"] for r in faults} == exports
    assert {r["fault"] for r in faults} == set(FAULT_KINDS)
    assert Counter(r["label"] for r in labels) == Counter(summary.by_label)
    assert sum(summary.by_encoding.values()) == 24
    patients = Counter(r["patient_id"] for r in labels)
    assert max(patients.values()) > 1  # some patients have follow-up images
    for row in labels:
        assert row["patient_id"] not in row["key"]
        data = store.objects[row["key"]]
        assert row["patient_id"].encode() in data


def test_write_night_with_local_store(tmp_path: Path) -> None:
    from scintiflow.storage import LocalStore

    store = LocalStore(tmp_path)
    summary = write_night(
        store, night=NIGHT, n=5, exports_prefix="in", labels_prefix="truth", bad_fraction=0.0
    )
    assert summary.labels_key == "truth/2024-05-01.csv"
    rows = store.get(summary.faults_key).decode().splitlines()
    assert rows == ["key,fault,site"]
    assert len(list(store.list("in/2024-05-01/"))) == 5


# --------------------------------------------------------------------------- decoder


def test_every_good_file_decodes_to_the_simulated_image(night_files: list[SimulatedFile]) -> None:
    from scintiflow.ingest.dicom import DecodeError, decode_dicom

    for f in night_files:
        if f.fault is None:
            assert f.case is not None
            record = decode_dicom(f.data, patient_hash_key=TEST_KEY)
            assert record.modality == "NM"
            assert record.view == "anterior"
            np.testing.assert_array_equal(record.pixels, f.case.image.astype(np.float32))
            assert record.pixel_spacing_mm == (f.case.profile.pixel_spacing_mm,) * 2
        elif f.fault == "not_nm":  # decodes; the checks reject it
            assert decode_dicom(f.data, patient_hash_key=TEST_KEY).modality == "CT"
        else:
            with pytest.raises(DecodeError):
                decode_dicom(f.data, patient_hash_key=TEST_KEY)


# --------------------------------------------------------------------------- montage


def test_montage_has_one_row_per_class() -> None:
    img = render_montage(per_class=2, sites=("A", "C"), tile=64)
    assert img.mode == "RGB"
    width, height = img.size
    assert width > 2 * 64
    assert height > len(CLASSES) * 64
    pixels = np.asarray(img)
    assert pixels.std() > 10  # not blank
