"""Every threshold of the data checks, in one place."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from scintiflow.checks.reasons import NM_IMAGE_STORAGE, NM_IMAGE_STORAGE_RETIRED

# ---------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True, slots=True)
class CheckThresholds:
    """Every threshold of the suite, in one place (documented in the README).

    Defaults fit planar anterior pinhole thyroid views (Tc-99m or I-123): square 64-512
    matrices, 0.5-3 mm pixels, a field of view up to 400 mm, 50k-400k counts per view.
    """

    accepted_modalities: tuple[str, ...] = ("NM",)
    accepted_sop_classes: tuple[str, ...] = (NM_IMAGE_STORAGE, NM_IMAGE_STORAGE_RETIRED)
    # geometry (reject `wrong_geometry`)
    require_square_matrix: bool = True
    min_matrix: int = 64
    max_matrix: int = 512
    max_field_of_view_mm: float = 400.0  # largest of rows x row spacing, cols x col spacing
    # counts (reject `empty_image`, `blank_image`; warn `low_counts`, `saturated_pixels`)
    min_total_counts: float = 1_000.0  # fewer: empty
    max_zero_fraction: float = 0.98  # more pixels at zero: blank
    min_count_cv: float = 0.1  # std/mean of the pixels below this: flat, blank
    low_total_counts: float = 40_000.0  # fewer: warn low_counts
    max_saturated_fraction: float = 0.01  # share of pixels at the image maximum
    # pixel spacing (warn `unusual_pixel_spacing`)
    min_pixel_spacing_mm: float = 0.5
    max_pixel_spacing_mm: float = 3.0
    max_pixel_aspect_deviation: float = 0.05  # |row/col spacing - 1|
    # display and view (warn)
    accepted_photometric: tuple[str, ...] = ("MONOCHROME2",)
    preferred_view: str = "anterior"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def fingerprint(self) -> str:
        """Short hash of the thresholds, recorded with every result."""
        text = json.dumps(self.as_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]
