"""The thyroid scintigraphy simulator (demo data, tests, benchmarks, training studies).

No public thyroid scintigraphy dataset exists, so everything downstream stands on this:
anterior pinhole Tc-99m / I-123 count images of four classes (`scintiflow.CLASSES`) from
several site profiles, written as DICOM NM files, plus nights of exports mixed with the
broken and foreign files real export folders hold.

    cases = simulate_cases(200, sites=("A", "B"), seed=1)          # labelled images
    data = case_to_dicom(cases[0], night=date(2024, 5, 1), index=0, seed=1)
    summary = write_night(store, night=date(2024, 5, 1), n=100, bad_fraction=0.1)
    regions = cases[0].regions()                                    # nodule, lobes, glands
"""

from scintiflow.sim._anatomy import Anatomy, Blob, Nodule
from scintiflow.sim._cases import PhantomCase, simulate_case, simulate_cases
from scintiflow.sim._faults import FAULT_KINDS, fault_file
from scintiflow.sim._montage import colourise, render_montage
from scintiflow.sim._night import (
    ENCODINGS,
    NightSummary,
    PutStore,
    SimulatedFile,
    bad_file_count,
    generate_night,
    write_night,
)
from scintiflow.sim._nm import (
    NM_IMAGE_STORAGE,
    PHI_SENTINELS,
    SENTINEL_ACCESSION,
    SENTINEL_ADDRESS,
    SENTINEL_BIRTH_DATE,
    SENTINEL_PATIENT_ID,
    SENTINEL_PATIENT_NAME,
    case_to_dicom,
    case_to_multiview_dicom,
)
from scintiflow.sim._regions import (
    REGION_NAMES,
    SALIVARY_PARTS,
    THYROID_PARTS,
    ImageRegions,
    NoduleRegion,
    RegionsEntry,
    image_regions,
    read_regions_jsonl,
    rle_decode,
    rle_encode,
)
from scintiflow.sim._render import region_masks, render_expected
from scintiflow.sim._sites import SITES, SiteProfile

__all__ = [
    "ENCODINGS",
    "FAULT_KINDS",
    "NM_IMAGE_STORAGE",
    "PHI_SENTINELS",
    "REGION_NAMES",
    "SALIVARY_PARTS",
    "SENTINEL_ACCESSION",
    "SENTINEL_ADDRESS",
    "SENTINEL_BIRTH_DATE",
    "SENTINEL_PATIENT_ID",
    "SENTINEL_PATIENT_NAME",
    "SITES",
    "THYROID_PARTS",
    "Anatomy",
    "Blob",
    "ImageRegions",
    "NightSummary",
    "Nodule",
    "NoduleRegion",
    "PhantomCase",
    "PutStore",
    "RegionsEntry",
    "SimulatedFile",
    "SiteProfile",
    "bad_file_count",
    "case_to_dicom",
    "case_to_multiview_dicom",
    "colourise",
    "fault_file",
    "generate_night",
    "image_regions",
    "read_regions_jsonl",
    "region_masks",
    "render_expected",
    "render_montage",
    "rle_decode",
    "rle_encode",
    "simulate_case",
    "simulate_cases",
    "write_night",
]
