"""Simulated cases -> DICOM NM Image Storage files (single anterior view or ANT/LAO/RAO)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from scintiflow.sim._anatomy import oblique
from scintiflow.sim._cases import PhantomCase
from scintiflow.sim._render import acquire
from scintiflow.sim._sites import SiteProfile

NM_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.20")
SUPPORTED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    JPEG2000Lossless,
)
IMPLEMENTATION_CLASS_UID = generate_uid(entropy_srcs=["scintiflow-phantom-implementation"])
IMPLEMENTATION_VERSION_NAME = "SCINTIFLOW_SIM1"

SENTINEL_PATIENT_NAME = "SENTINEL^LEAK^CANARY"
SENTINEL_PATIENT_ID = "PHI-SENTINEL-0001"
SENTINEL_ACCESSION = "ACCSENTINEL0001"  # SH: at most 16 characters
SENTINEL_BIRTH_DATE = "19010101"
SENTINEL_ADDRESS = "1 SENTINEL ROAD CANARYVILLE"
PHI_SENTINELS: tuple[str, ...] = (
    SENTINEL_PATIENT_NAME,
    SENTINEL_PATIENT_ID,
    SENTINEL_ACCESSION,
    SENTINEL_BIRTH_DATE,
    SENTINEL_ADDRESS,
)
"""Values `phi_sentinel=True` writes; none may ever show up in an output, key or log."""

# DICOM codes (SNOMED CT, as in CID 26 / CID 18 / CID 25 / CID 11 / CID 19-21).
_VIEW_CODES: dict[str, tuple[str, str]] = {
    "anterior": ("399321004", "Anterior projection"),
    "LAO": ("399074003", "Left anterior oblique"),
    "RAO": ("399108003", "Right anterior oblique"),
}


@dataclass(frozen=True, slots=True)
class _Isotope:
    """Radiopharmaceutical facts written to the NM Isotope module."""

    nuclide: tuple[str, str]  # SCT code, meaning (CID 18)
    drug: tuple[str, str]  # SCT code, meaning (CID 25)
    name: str
    route: tuple[str, str, str]  # SCT code, meaning (CID 11), free text
    window_kev: tuple[float, float]
    dose_mbq: tuple[float, float]
    uptake_min: tuple[int, int]  # injection/ingestion to imaging
    half_life_s: float


_ISOTOPES: dict[str, _Isotope] = {
    "Tc-99m": _Isotope(
        nuclide=("72454006", "^99m^Technetium"),
        drug=("19495007", "Sodium pertechnetate Tc^99m^"),
        name="Tc99m Pertechnetate",
        route=("47625008", "Intravenous route", "IV"),
        window_kev=(126.0, 154.0),
        dose_mbq=(110.0, 370.0),  # 3-10 mCi
        uptake_min=(15, 30),
        half_life_s=21624.0,
    ),
    "I-123": _Isotope(
        nuclide=("21572004", "^123^Iodine"),
        drug=("67690002", "Sodium iodide I^123^"),
        name="I123 Sodium Iodide",
        route=("26643006", "Oral route", "ORAL"),
        window_kev=(143.0, 175.0),
        dose_mbq=(7.4, 14.8),  # 200-400 uCi
        uptake_min=(240, 360),
        half_life_s=47602.0,
    ),
}


def code_item(value: str, meaning: str, scheme: str = "SCT") -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def derived_uid(*parts: object) -> UID:
    """A UID that depends only on `parts` (reproducible files, no clock, no randomness)."""
    return generate_uid(entropy_srcs=["scintiflow-phantom", *(str(p) for p in parts)])


@dataclass(frozen=True, slots=True)
class ExportContext:
    """Identifiers and times shared by every object written for one case."""

    study_uid: UID
    series_uid: UID
    sop_uid: UID
    study_date: date
    study_time: str  # HHMMSS
    accession: str
    rng: np.random.Generator


def export_context(case: PhantomCase, *, night: date, index: int, seed: int) -> ExportContext:
    key = (seed, night.isoformat(), case.patient_id, case.visit)
    rng = np.random.default_rng([seed, night.toordinal(), index, 7])
    minutes = int(rng.integers(7 * 60 + 30, 17 * 60))
    return ExportContext(
        study_uid=derived_uid("study", *key),
        series_uid=derived_uid("series", *key, 1),
        sop_uid=derived_uid("sop", *key, index),
        study_date=night - timedelta(days=case.days_before),
        study_time=f"{minutes // 60:02d}{minutes % 60:02d}{int(rng.integers(60)):02d}",
        accession="SIM" + derived_uid("acc", *key).replace(".", "")[-12:],
        rng=rng,
    )


def base_dataset(
    case: PhantomCase,
    ctx: ExportContext,
    *,
    sop_class: UID,
    modality: str,
    phi_sentinel: bool,
) -> Dataset:
    """Patient, study, series, equipment and SOP common modules for one case."""
    site = case.profile
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ctx.sop_uid
    day = ctx.study_date.strftime("%Y%m%d")
    ds.InstanceCreationDate = day
    ds.InstanceCreationTime = ctx.study_time
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = day
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = ctx.study_time
    ds.Modality = modality
    ds.Manufacturer = site.manufacturer
    ds.InstitutionName = site.institution
    ds.ReferringPhysicianName = "SIM^REFERRER"
    ds.StationName = site.station
    ds.StudyDescription = "NM THYROID SCINTIGRAPHY"
    ds.ManufacturerModelName = site.model
    if phi_sentinel:
        ds.AccessionNumber = SENTINEL_ACCESSION
        ds.PatientName = SENTINEL_PATIENT_NAME
        ds.PatientID = SENTINEL_PATIENT_ID
        ds.PatientBirthDate = SENTINEL_BIRTH_DATE
        ds.PatientAddress = SENTINEL_ADDRESS
    else:
        ds.AccessionNumber = ctx.accession
        ds.PatientName = "SIM^PATIENT" + case.patient_id.removeprefix("SIM-").replace("-", "")
        ds.PatientID = case.patient_id
        born = ctx.study_date - timedelta(days=int(case.age * 365.25) + int(ctx.rng.integers(365)))
        ds.PatientBirthDate = born.strftime("%Y%m%d")
    ds.IssuerOfPatientID = "SCINTIFLOW-SIM"
    ds.PatientSex = case.sex
    ds.PatientAge = f"{case.age:03d}Y"
    ds.PatientWeight = f"{case.weight_kg:.1f}"
    ds.PatientIdentityRemoved = "NO"
    ds.DeviceSerialNumber = f"SIM-{site.name}-0001"
    ds.SoftwareVersions = "scintiflow-phantom 1"
    ds.StudyInstanceUID = ctx.study_uid
    ds.SeriesInstanceUID = ctx.series_uid
    ds.StudyID = ctx.accession[-8:]
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    return ds


def _isotope_modules(ds: Dataset, site: SiteProfile, ctx: ExportContext) -> None:
    """NM Isotope module: energy window and radiopharmaceutical."""
    iso = _ISOTOPES[site.radionuclide]
    lo, hi = iso.window_kev
    window = Dataset()
    rng_item = Dataset()
    rng_item.EnergyWindowLowerLimit = f"{lo:.1f}"
    rng_item.EnergyWindowUpperLimit = f"{hi:.1f}"
    window.EnergyWindowRangeSequence = Sequence([rng_item])
    window.EnergyWindowName = site.radionuclide.replace("-", "")
    ds.EnergyWindowInformationSequence = Sequence([window])

    delay = int(ctx.rng.integers(iso.uptake_min[0], iso.uptake_min[1] + 1))
    hh, mm = int(ctx.study_time[:2]), int(ctx.study_time[2:4])
    start = max(0, hh * 60 + mm - delay)
    radio = Dataset()
    radio.RadionuclideCodeSequence = Sequence([code_item(*iso.nuclide)])
    radio.Radiopharmaceutical = iso.name
    radio.RadiopharmaceuticalRoute = iso.route[2]
    radio.AdministrationRouteCodeSequence = Sequence([code_item(*iso.route[:2])])
    radio.RadiopharmaceuticalStartTime = f"{start // 60:02d}{start % 60:02d}00"
    radio.RadionuclideTotalDose = f"{float(ctx.rng.uniform(*iso.dose_mbq)):.1f}"
    radio.RadionuclideHalfLife = f"{iso.half_life_s:.0f}"
    radio.RadiopharmaceuticalCodeSequence = Sequence([code_item(*iso.drug)])
    ds.RadiopharmaceuticalInformationSequence = Sequence([radio])


def detector_item(site: SiteProfile, view: str) -> Dataset:
    """One Detector Information Sequence item: collimator and view code."""
    det = Dataset()
    det.CollimatorGridName = site.collimator_name
    det.CollimatorType = site.collimator_type
    det.FieldOfViewShape = "ROUND"
    det.FieldOfViewDimensions = [round(site.matrix * site.pixel_spacing_mm)]
    det.FocalDistance = [site.focal_distance_mm]
    det.ZoomFactor = ["1.0", "1.0"]
    code_value, meaning = _VIEW_CODES[view]
    view_item = code_item(code_value, meaning)
    view_item.ViewModifierCodeSequence = Sequence([])
    det.ViewCodeSequence = Sequence([view_item])
    return det


def nm_image(
    case: PhantomCase,
    ctx: ExportContext,
    frames: list[np.ndarray],
    views: list[str],
    *,
    phi_sentinel: bool,
) -> Dataset:
    """An NM static image (one frame per view) with every NM module filled in."""
    site = case.profile
    ds = base_dataset(
        case, ctx, sop_class=NM_IMAGE_STORAGE, modality="NM", phi_sentinel=phi_sentinel
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "STATIC", "EMISSION"]
    ds.SeriesDescription = (
        "THYROID " + "/".join("ANT" if v == "anterior" else v for v in views) + " PINHOLE"
    )
    ds.ProtocolName = "THYROID PINHOLE"
    ds.BodyPartExamined = "THYROID"
    ds.AnatomicRegionSequence = Sequence([code_item("69748006", "Thyroid")])
    ds.PatientPosition = "HFS"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageID = "THYROID " + ("ANT" if len(views) == 1 else "MULTI")
    ds.CountsAccumulated = int(sum(int(f.sum(dtype=np.int64)) for f in frames))
    ds.AcquisitionTerminationCondition = "TIME"
    ds.ActualFrameDuration = int(ctx.rng.integers(3, 11)) * 60_000  # ms
    orientation = Dataset()
    orientation.update(code_item("102538003", "recumbent"))
    orientation.PatientOrientationModifierCodeSequence = Sequence([code_item("40199007", "supine")])
    ds.PatientOrientationCodeSequence = Sequence([orientation])
    ds.PatientGantryRelationshipCodeSequence = Sequence([code_item("102540008", "headfirst")])
    ds.AcquisitionContextSequence = Sequence([])
    _isotope_modules(ds, site, ctx)
    ds.NumberOfEnergyWindows = 1
    ds.EnergyWindowVector = [1] * len(frames)
    ds.NumberOfDetectors = len(frames)
    ds.DetectorVector = list(range(1, len(frames) + 1))
    ds.DetectorInformationSequence = Sequence([detector_item(site, v) for v in views])
    ds.FrameIncrementPointer = [Tag(0x0054, 0x0010), Tag(0x0054, 0x0020)]
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = frames[0].shape
    ds.PixelSpacing = [f"{site.pixel_spacing_mm:g}", f"{site.pixel_spacing_mm:g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PixelData = np.stack(frames).astype("<u2").tobytes()
    return ds


def to_bytes(
    ds: Dataset, transfer_syntax: UID = ExplicitVRLittleEndian, *, encode: bool = True
) -> bytes:
    """Write a dataset as a DICOM Part 10 file (preamble, file meta) in `transfer_syntax`.

    With `encode`, native pixel data is compressed for RLE / JPEG 2000 (in place); without
    it the pixel data is written as it stands (e.g. already encapsulated).
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    if encode and transfer_syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(transfer_syntax, generate_instance_uid=False)
    else:
        meta.TransferSyntaxUID = transfer_syntax
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def case_to_dicom(
    case: PhantomCase,
    *,
    night: date,
    index: int,
    seed: int,
    phi_sentinel: bool = False,
    transfer_syntax: str | None = None,
) -> bytes:
    """One NM Image Storage file holding the case's anterior view.

    UIDs derive from (seed, night, patient, visit, index), dates from `night`, so equal
    arguments give equal bytes. `transfer_syntax`: None (explicit VR little endian),
    implicit VR little endian, RLE Lossless or JPEG 2000 Lossless.
    """
    ts = UID(transfer_syntax or ExplicitVRLittleEndian)
    if ts not in SUPPORTED_TRANSFER_SYNTAXES:
        raise ValueError(f"unsupported transfer syntax {ts}")
    ctx = export_context(case, night=night, index=index, seed=seed)
    ds = nm_image(case, ctx, [case.image], ["anterior"], phi_sentinel=phi_sentinel)
    return to_bytes(ds, ts)


def case_to_multiview_dicom(
    case: PhantomCase, *, night: date, index: int, seed: int, phi_sentinel: bool = False
) -> bytes:
    """A 3-frame static NM object (anterior, LAO, RAO in a seeded order, so readers must use
    the Detector Information Sequence's View Code Sequence); the anterior frame is
    `case.image` exactly."""
    ctx = export_context(case, night=night, index=index, seed=seed)
    site = case.profile
    views = ["anterior", "LAO", "RAO"]
    order = [views[i] for i in ctx.rng.permutation(3)]
    frames = [
        case.image if v == "anterior" else acquire(oblique(case.anatomy, v), site, ctx.rng)
        for v in order
    ]
    return to_bytes(nm_image(case, ctx, frames, order, phi_sentinel=phi_sentinel))
