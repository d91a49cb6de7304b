"""Where the diagnosis sits in a simulated image: nodule, thyroid lobes, isthmus, salivary glands.

The simulator draws every organ as an ellipse (`Blob`) in millimetres at the object plane;
`image_regions` puts the same geometry on the image's pixel grid, so a heatmap can be scored
against the truth (`scintiflow.ml.evaluation.localisation`). Pixel coordinates are DICOM's:
(row, column) of the stored anterior frame, pixel centres at integers, (0, 0) the top-left
pixel. Masks are run-length encoded (`rle_encode`) so a night's sidecar stays small, and
they describe the anatomy (an organ's full support), not a threshold on the counts.

A sidecar line (`labels/<night>.regions.jsonl`, written by `write_night`) carries
the export key, the SHA-256 of the file's bytes, site and label, and `ImageRegions.to_json()`;
it holds no patient identifier.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scintiflow.sim._anatomy import Anatomy, Blob
from scintiflow.sim._render import _mask
from scintiflow.sim._sites import SiteProfile

REGIONS_FORMAT = 1
"""Version of the sidecar line's layout."""

THYROID_PARTS: tuple[str, ...] = ("right_lobe", "left_lobe", "isthmus", "pyramidal", "nodule")
"""Masks whose union is the thyroid (a pyramidal lobe or a nodule only where one was drawn; a
hot nodule's disc can reach just past its lobe's outline)."""

SALIVARY_PARTS: tuple[str, ...] = ("parotids", "submandibulars")
"""Masks whose union is the salivary glands (each holds both sides)."""

REGION_NAMES: tuple[str, ...] = (*THYROID_PARTS, *SALIVARY_PARTS)
"""Every mask a sidecar line may hold; absent ones (no pyramidal lobe, no nodule) are empty."""


def rle_encode(mask: np.ndarray) -> np.ndarray:
    """Run lengths of a boolean mask in row-major order, alternating, starting with False.

    `[3, 2, 5]` on a 10-pixel mask means 3 False, 2 True, 5 False; the lengths sum to the
    mask's size.
    """
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return np.zeros(0, dtype=np.int32)
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = np.diff(bounds)
    if flat[0]:
        runs = np.concatenate(([0], runs))
    return runs.astype(np.int32)


def rle_decode(runs: np.ndarray | list[int], shape: tuple[int, int]) -> np.ndarray:
    """The boolean mask of `shape` whose run lengths are `runs` (see `rle_encode`)."""
    r = np.asarray(runs, dtype=np.int64)
    size = int(shape[0]) * int(shape[1])
    if (r < 0).any() or int(r.sum()) != size:
        raise ValueError(f"run lengths sum to {int(r.sum())}, the mask has {size} pixels")
    values = np.arange(r.size) % 2 == 1
    return np.repeat(values, r).reshape(shape)


@dataclass(frozen=True, slots=True)
class NoduleRegion:
    """A tumour's nodule in pixel coordinates of the anterior frame."""

    kind: str  # "hot" or "cold"
    lobe: str  # patient side of the host lobe: "right" (image left) or "left" (image right)
    row: float
    col: float
    radius_px: float
    radius_mm: float  # at the object plane (see `ImageRegions.object_spacing_mm`)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "lobe": self.lobe,
            "row": self.row,
            "col": self.col,
            "radius_px": self.radius_px,
            "radius_mm": self.radius_mm,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NoduleRegion:
        return cls(
            str(data["kind"]),
            str(data["lobe"]),
            float(data["row"]),
            float(data["col"]),
            float(data["radius_px"]),
            float(data["radius_mm"]),
        )


@dataclass(frozen=True, eq=False)
class ImageRegions:
    """The diagnostic regions of one image: a nodule (tumours only) and run-length masks.

    `pixel_spacing_mm` is the header's Pixel Spacing (detector pixel); `object_spacing_mm`
    the pixel size at the gland (a pinhole magnifies), the unit of `radius_mm`.
    """

    rows: int
    cols: int
    pixel_spacing_mm: float
    object_spacing_mm: float
    nodule: NoduleRegion | None
    runs: Mapping[str, np.ndarray] = field(repr=False)
    view: str = "anterior"

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.cols

    def names(self) -> tuple[str, ...]:
        """The regions present in this image (non-empty masks), in `REGION_NAMES` order."""
        return tuple(n for n in REGION_NAMES if n in self.runs)

    def mask(self, name: str) -> np.ndarray:
        """One region's boolean mask (all False for a region this image lacks)."""
        if name not in REGION_NAMES:
            raise KeyError(f"unknown region {name!r}; known: {REGION_NAMES}")
        runs = self.runs.get(name)
        if runs is None:
            return np.zeros(self.shape, dtype=bool)
        return rle_decode(runs, self.shape)

    def union(self, names: tuple[str, ...]) -> np.ndarray:
        out = np.zeros(self.shape, dtype=bool)
        for n in names:
            out |= self.mask(n)
        return out

    def thyroid(self) -> np.ndarray:
        """Lobes, isthmus, pyramidal lobe and nodule."""
        return self.union(THYROID_PARTS)

    def salivary(self) -> np.ndarray:
        """Parotid and submandibular glands, both sides."""
        return self.union(SALIVARY_PARTS)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready geometry (no key, hash or label: the sidecar writer adds those)."""
        return {
            "format": REGIONS_FORMAT,
            "view": self.view,
            "rows": self.rows,
            "cols": self.cols,
            "pixel_spacing_mm": self.pixel_spacing_mm,
            "object_spacing_mm": self.object_spacing_mm,
            "nodule": None if self.nodule is None else self.nodule.to_json(),
            "masks": {n: [int(v) for v in self.runs[n]] for n in self.names()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageRegions:
        if int(data.get("format", 0)) != REGIONS_FORMAT:
            raise ValueError(f"unsupported regions format {data.get('format')!r}")
        rows, cols = int(data["rows"]), int(data["cols"])
        runs = {}
        for name, values in dict(data["masks"]).items():
            if name not in REGION_NAMES:
                raise ValueError(f"unknown region {name!r}")
            arr = np.asarray(values, dtype=np.int32)
            rle_decode(arr, (rows, cols))  # validates the lengths
            runs[name] = arr
        nod = data.get("nodule")
        return cls(
            rows=rows,
            cols=cols,
            pixel_spacing_mm=float(data["pixel_spacing_mm"]),
            object_spacing_mm=float(data["object_spacing_mm"]),
            nodule=None if nod is None else NoduleRegion.from_json(nod),
            runs=runs,
            view=str(data.get("view", "anterior")),
        )


def image_regions(an: Anatomy, site: SiteProfile) -> ImageRegions:
    """The regions of `an` on `site`'s pixel grid (the geometry `render_expected` draws)."""
    masks: dict[str, np.ndarray] = {
        "right_lobe": _mask(site, an.lobes[0]),
        "left_lobe": _mask(site, an.lobes[1]),
        "isthmus": _mask(site, an.isthmus),
    }
    if an.pyramidal is not None:
        masks["pyramidal"] = _mask(site, an.pyramidal)
    masks["parotids"] = _mask(site, an.parotids[0]) | _mask(site, an.parotids[1])
    masks["submandibulars"] = _mask(site, an.submandibulars[0]) | _mask(site, an.submandibulars[1])
    s = site.object_spacing_mm
    half = (site.matrix - 1) / 2.0
    nodule = None
    nod = an.nodule
    if nod is not None:
        masks["nodule"] = _mask(site, Blob(nod.cx, nod.cy, nod.radius_mm, nod.radius_mm))
        nodule = NoduleRegion(
            kind=nod.kind,
            lobe=nod.lobe,
            row=nod.cy / s + half,
            col=nod.cx / s + half,
            radius_px=nod.radius_mm / s,
            radius_mm=nod.radius_mm,
        )
    return ImageRegions(
        rows=site.matrix,
        cols=site.matrix,
        pixel_spacing_mm=site.pixel_spacing_mm,
        object_spacing_mm=s,
        nodule=nodule,
        runs={n: rle_encode(m) for n, m in masks.items() if m.any()},
    )


@dataclass(frozen=True, eq=False)
class RegionsEntry:
    """One sidecar line: which export it describes and its regions."""

    key: str
    sha256: str  # of the export file's bytes
    site: str
    label: str
    regions: ImageRegions

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "sha256": self.sha256,
            "site": self.site,
            "label": self.label,
            **self.regions.to_json(),
        }


def read_regions_jsonl(data: bytes) -> Iterator[RegionsEntry]:
    """The entries of a `labels/<night>.regions.jsonl` sidecar, in file order."""
    import json

    for line in data.decode("utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        yield RegionsEntry(
            key=str(row["key"]),
            sha256=str(row["sha256"]),
            site=str(row["site"]),
            label=str(row["label"]),
            regions=ImageRegions.from_json(row),
        )
