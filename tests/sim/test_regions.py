"""Region ground truth: the sidecar's masks and nodules sit where the simulator drew them."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from scintiflow import CLASSES
from scintiflow.domain import sha256_hex
from scintiflow.sim import (
    REGION_NAMES,
    SITES,
    ImageRegions,
    PhantomCase,
    read_regions_jsonl,
    render_expected,
    rle_decode,
    rle_encode,
    simulate_cases,
    write_night,
)

NIGHT = date(2024, 5, 1)


class DictStore:
    """The one method write_night needs, recording puts."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = data


@pytest.fixture(scope="module")
def tumours() -> list[PhantomCase]:
    """Tumour cases from every site (hot and cold nodules), low difficulty and harder."""
    out: list[PhantomCase] = []
    for seed, sites in ((1, ("A", "B")), (2, ("C",))):
        out += simulate_cases(
            24, sites=sites, seed=seed, class_weights={"thyroid_tumor": 1.0}, difficulty=0.5
        )
    return out


def test_run_lengths_round_trip() -> None:
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (3, 7), (16, 16)):
        for density in (0.0, 0.3, 1.0):
            mask = rng.uniform(size=shape) < density
            runs = rle_encode(mask)
            assert int(runs.sum()) == mask.size
            np.testing.assert_array_equal(rle_decode(runs, shape), mask)
    assert rle_encode(np.array([[True, True, False]])).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="run lengths sum to"):
        rle_decode([1, 2], (2, 2))


def test_nodule_region_holds_the_nodules_extreme_in_a_noise_free_render(
    tumours: list[PhantomCase],
) -> None:
    """Rendered with and without its nodule, the change peaks inside the nodule's region."""
    kinds = set()
    for case in tumours:
        regions = case.regions()
        nod = regions.nodule
        assert nod is not None
        assert case.anatomy.nodule is not None
        kinds.add(nod.kind)
        site = case.profile
        with_nod = render_expected(case.anatomy, site)
        without = render_expected(replace(case.anatomy, nodule=None), site)
        diff = with_nod - without  # same total counts: only the nodule's effect remains
        mask = regions.mask("nodule")
        assert mask.any()
        if nod.kind == "hot":
            # a hot nodule's count maximum within the host lobe
            host = regions.mask("right_lobe" if nod.lobe == "right" else "left_lobe")
            where = np.unravel_index(int(np.argmax(np.where(host, with_nod, -np.inf))), mask.shape)
            assert mask[where], "hot: the lobe's count maximum lies in the nodule"
            extreme = np.unravel_index(int(np.argmax(diff)), mask.shape)
        else:
            extreme = np.unravel_index(int(np.argmin(diff)), mask.shape)
        assert mask[extreme], f"{nod.kind} nodule's extreme lies outside its region"
        # the centre and radius describe the same disc as the mask
        rows, cols = np.nonzero(mask)
        assert abs(rows.mean() - nod.row) < 1.0
        assert abs(cols.mean() - nod.col) < 1.0
        dist = np.hypot(rows - nod.row, cols - nod.col)
        assert dist.max() <= nod.radius_px + 1e-9
        assert nod.radius_px == pytest.approx(nod.radius_mm / site.object_spacing_mm)
        assert (nod.row, nod.col) == pytest.approx(case.nodule_center_px)
    assert kinds == {"hot", "cold"}


def test_masks_cover_the_organs_they_name() -> None:
    """Each organ's activity, drawn alone, falls inside its mask (geometry, not thresholds)."""
    from scintiflow.sim._render import render_thyroid

    cases = simulate_cases(16, sites=("A", "C"), seed=4)
    assert {c.label for c in cases} == set(CLASSES)
    for case in cases:
        regions = case.regions()
        assert regions.shape == case.image.shape
        assert regions.pixel_spacing_mm == case.profile.pixel_spacing_mm
        assert {"right_lobe", "left_lobe", "isthmus", "parotids", "submandibulars"} <= set(
            regions.names()
        )
        assert ("nodule" in regions.names()) == (case.label == "thyroid_tumor")
        assert ("pyramidal" in regions.names()) == (case.anatomy.pyramidal is not None)
        thy = render_thyroid(case.anatomy, case.profile)
        thyroid = regions.thyroid()
        assert thy[thyroid].sum() >= 0.999 * thy.sum()
        # organs may touch in projection (an upper pole and a submandibular gland), barely
        assert (thyroid & regions.salivary()).sum() < 0.02 * thyroid.sum()
        # the patient's right lobe is on the image's left
        r_cols = np.nonzero(regions.mask("right_lobe"))[1]
        l_cols = np.nonzero(regions.mask("left_lobe"))[1]
        assert r_cols.mean() < l_cols.mean()
        # salivary glands lie above (smaller row) the thyroid
        assert np.nonzero(regions.mask("parotids"))[0].mean() < np.nonzero(thyroid)[0].mean()


def test_regions_json_round_trip() -> None:
    case = simulate_cases(6, seed=5, class_weights={"thyroid_tumor": 1.0})[0]
    regions = case.regions()
    text = json.dumps(regions.to_json())
    back = ImageRegions.from_json(json.loads(text))
    assert back.nodule == regions.nodule
    for name in REGION_NAMES:
        np.testing.assert_array_equal(back.mask(name), regions.mask(name))
    with pytest.raises(KeyError):
        regions.mask("spleen")


def test_write_night_writes_a_regions_sidecar_aligned_with_the_images() -> None:
    from scintiflow.ingest.dicom import decode_dicom

    store = DictStore()
    summary = write_night(
        store,
        night=NIGHT,
        n=12,
        sites=("A", "C"),
        seed=3,
        bad_fraction=0.2,
        multiview_fraction=0.3,
        compressed_fraction=0.3,
    )
    assert summary.regions_key == "labels/2024-05-01.regions.jsonl"
    labels = list(csv.DictReader(io.StringIO(store.objects[summary.labels_key].decode())))
    raw = store.objects[summary.regions_key]
    entries = list(read_regions_jsonl(raw))
    assert [e.key for e in entries] == [r["key"] for r in labels]  # one line per good file
    assert len(raw) < 6_000 * len(entries)  # small: a few kB per image
    for row in labels:  # no patient identifier anywhere in the sidecar
        assert row["patient_id"].encode() not in raw
    for entry, row in zip(entries, labels, strict=True):
        data = store.objects[entry.key]
        assert entry.sha256 == sha256_hex(data)
        assert (entry.site, entry.label) == (row["site"], row["label"])
        record = decode_dicom(data, patient_hash_key=b"regions-test")
        regions = entry.regions
        assert record.pixels.shape == regions.shape
        assert record.pixel_spacing_mm == (regions.pixel_spacing_mm,) * 2
        assert regions.object_spacing_mm == pytest.approx(SITES[entry.site].object_spacing_mm)
        assert (regions.nodule is not None) == (entry.label == "thyroid_tumor")
        # the thyroid mask holds the bulk of the gland's counts for every class but thyroiditis
        if entry.label in ("normal", "graves"):
            px = record.pixels
            assert px[regions.thyroid()].mean() > 2.0 * px[~regions.thyroid()].mean()


def test_simulated_study_images_carry_their_regions() -> None:
    from scintiflow.ml.study import simulate_study_data

    data = simulate_study_data(0.005, seed=2)
    images = data.train + data.internal + data.external
    assert images
    for im in images:
        regions = im.regions
        assert regions is not None
        assert regions.shape == im.pixels.shape
        assert regions.pixel_spacing_mm == im.pixel_spacing_mm
        assert (regions.nodule is not None) == (CLASSES[im.label] == "thyroid_tumor")
        assert regions.thyroid().any()
        assert regions.salivary().any()


def test_study_data_from_exports_attaches_regions_whose_hash_matches(tmp_path: Path) -> None:
    from scintiflow.ml.study import load_study_data
    from scintiflow.storage import LocalStore

    store = LocalStore(tmp_path)
    summary = write_night(store, night=NIGHT, n=10, sites=("A",), seed=8)
    lines = store.get(summary.regions_key).decode().splitlines()
    stale = json.loads(lines[0])
    stale["sha256"] = "0" * 64  # a line written for other bytes than the stored file
    sidecar = "\n".join([json.dumps(stale), *lines[1:]]).encode()
    data = load_study_data(store, store.get(summary.labels_key), group_key=b"k", regions=[sidecar])
    images = {im.key: im for im in data.train + data.internal}
    assert len(images) == 10
    assert images[stale["key"]].regions is None
    written = {e.key: e.regions for e in read_regions_jsonl(store.get(summary.regions_key))}
    for key, im in images.items():
        if key == stale["key"]:
            continue
        assert im.regions is not None
        np.testing.assert_array_equal(im.regions.thyroid(), written[key].thyroid())
        assert im.regions.nodule == written[key].nodule
