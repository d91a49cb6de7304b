"""Count image -> model tensor, and the training augmentation that acts on counts.

The `PreprocessConfig` is saved with every model version and read back by every engine, so
inference can never silently preprocess differently from training (docs/training.md,
"Preprocessing").

Normalisation is robust to the total count: a scan with 50k counts and one with 400k counts
of the same gland look the same after it. Each image is divided by its own
`clip_percentile`-th percentile and clipped to [0, 1] (a hot spot or a marker above the
percentile saturates instead of darkening the rest), resized to `image_size` (antialiased
bilinear), then standardised with `mean`/`std`. The defaults are the ImageNet grey-level
statistics (the mean of the RGB means/stds), which suit both random init and ImageNet weights
whose first conv was summed to one channel (`scintiflow.ml.models`).

Channels: one. Models take (B, 1, H, W); see `scintiflow.ml.models` for why that is equivalent
to repeating the image to three channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

PREPROCESS_VERSION = 1


@dataclass(frozen=True)
class PreprocessConfig:
    """How counts become a model input; travels with the model version."""

    image_size: int = 224
    clip_percentile: float = 99.5
    channels: int = 1  # models take one channel (first conv adapted; see scintiflow.ml.models)
    mean: float = 0.449
    std: float = 0.226
    interpolation: str = "bilinear"  # antialiased when shrinking
    version: int = PREPROCESS_VERSION

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError("image_size must be >= 16")
        if not 50.0 <= self.clip_percentile <= 100.0:
            raise ValueError("clip_percentile must be in [50, 100]")
        if self.channels != 1:
            raise ValueError("only single-channel input is supported (channels=1)")
        if self.std <= 0:
            raise ValueError("std must be > 0")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError("interpolation must be 'bilinear' or 'bicubic'")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored as `preprocess.json` in a model version)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessConfig:
        """Inverse of `to_dict`; unknown keys are an error (a newer format)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocess config keys: {sorted(unknown)}")
        version = int(data.get("version", PREPROCESS_VERSION))
        if version > PREPROCESS_VERSION:
            raise ValueError(f"preprocess config version {version} is newer than this code")
        return cls(**dict(data))


def percentile(values: np.ndarray, q: float) -> float:
    """`np.percentile(values, q)` (linear), exactly, for a float32 image, in one partition.

    NumPy partitions at four positions (the two neighbours plus both ends, for NaN); on count
    images, full of ties, that took 0.64 ms for a 256 x 256 scan against 0.09 ms for one
    position, and every scored image needs this two or three times (input normalisation,
    overlay window, thumbnail). The neighbour above is the minimum of the partition's upper
    side, and the interpolation is NumPy's own (`_lerp`: from the nearer end, in float32).
    Anything else (other dtypes, NaN, fewer than two values) goes to NumPy.
    """
    flat = np.asarray(values).ravel()
    if flat.dtype != np.float32 or flat.size < 2 or np.isnan(flat).any():
        return float(np.percentile(flat, q))
    n = flat.size
    virtual = (n - 1) * (q / 100)
    below = min(max(int(np.floor(virtual)), 0), n - 1)
    part = np.partition(flat, below)
    lo = part[below]
    hi = part[below + 1 :].min() if below + 1 < n else lo
    gamma = virtual - below
    diff = hi - lo
    if gamma >= 0.5:
        return float(hi - diff * np.float32(1 - gamma))
    return float(lo + diff * np.float32(gamma))


def normalise_counts(pixels: np.ndarray, clip_percentile: float) -> np.ndarray:
    """Counts scaled to [0, 1] by the image's own percentile (float32, same shape)."""
    img = np.asarray(pixels, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D count image, got shape {img.shape}")
    top = percentile(img, clip_percentile) if img.size else 0.0
    if not np.isfinite(top) or top <= 0.0:
        top = float(img.max()) if img.size else 0.0
    if top <= 0.0:
        return np.zeros_like(img)
    return np.clip(img / top, 0.0, 1.0)


def _resize(batch: torch.Tensor, size: int, interpolation: str) -> torch.Tensor:
    """(B, 1, h, w) -> (B, 1, size, size)."""
    from torch.nn import functional

    if batch.shape[-2:] == (size, size):
        return batch
    shrink = batch.shape[-1] > size or batch.shape[-2] > size
    return functional.interpolate(
        batch, size=(size, size), mode=interpolation, align_corners=False, antialias=shrink
    )


def preprocess(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """One count image (rows, cols) -> model input (1, S, S) float32."""
    return preprocess_batch([pixels], config)[0]


def preprocess_batch(images: Sequence[np.ndarray], config: PreprocessConfig) -> np.ndarray:
    """Count images of any sizes -> (N, 1, S, S) float32, resized in same-shape groups."""
    import torch

    size = config.image_size
    out = np.empty((len(images), 1, size, size), dtype=np.float32)
    groups: dict[tuple[int, ...], list[int]] = {}
    normed = [normalise_counts(img, config.clip_percentile) for img in images]
    for i, img in enumerate(normed):
        groups.setdefault(img.shape, []).append(i)
    for idx in groups.values():
        stack = torch.from_numpy(np.stack([normed[i] for i in idx])[:, None])  # (b, 1, h, w)
        out[idx] = _resize(stack, size, config.interpolation).numpy()
    out -= config.mean
    out /= config.std
    return out


@dataclass(frozen=True)
class Augment:
    """Training augmentation, applied per image with its own seeded random stream.

    - Poisson thinning: each count is kept with probability p (a binomial draw), which is
      exactly what a shorter acquisition of the same patient produces; total counts scale by p.
      Applied to raw counts BEFORE normalisation, with probability `thin_probability`.
    - Intensity scaling of the normalised image (contrast / percentile jitter).
    - Small rotation, translation and isotropic scale (positioning differences).
    - Left-right flip. Safe here: no class depends on the side (a nodule in the left or right
      lobe is the same `thyroid_tumor` label; Graves', thyroiditis and normal are bilateral),
      anterior views of the neck are near-symmetric, and burned-in side markers are rejected
      by the data checks. Up-down flips are never used (the salivary glands sit above the
      thyroid; that anatomy is part of the signal).
    """

    thin_probability: float = 0.5
    thin_range: tuple[float, float] = (0.35, 1.0)
    intensity_range: tuple[float, float] = (0.85, 1.15)
    rotation_deg: float = 10.0
    translate: float = 0.06  # fraction of the image size
    scale_range: tuple[float, float] = (0.9, 1.1)
    flip: bool = True

    def thin(self, counts: np.ndarray, keep: float, rng: np.random.Generator) -> np.ndarray:
        """Binomial thinning: each detected count survives with probability `keep`."""
        if not 0.0 <= keep <= 1.0:
            raise ValueError("keep must be in [0, 1]")
        n = np.rint(np.clip(np.asarray(counts, dtype=np.float64), 0, None)).astype(np.int64)
        return rng.binomial(n, keep).astype(np.float32)

    def __call__(
        self, counts: np.ndarray, config: PreprocessConfig, rng: np.random.Generator
    ) -> np.ndarray:
        """One raw count image -> one augmented model input (1, S, S) float32."""
        import torch
        from torch.nn import functional

        img = np.asarray(counts)
        if rng.uniform() < self.thin_probability:
            img = self.thin(img, float(rng.uniform(*self.thin_range)), rng)
        x = normalise_counts(img, config.clip_percentile)
        x = x * float(rng.uniform(*self.intensity_range))
        t = _resize(
            torch.from_numpy(np.ascontiguousarray(x))[None, None],
            config.image_size,
            config.interpolation,
        )  # (1, 1, S, S)
        angle = np.deg2rad(float(rng.uniform(-self.rotation_deg, self.rotation_deg)))
        scale = float(rng.uniform(*self.scale_range))
        tx, ty = (float(v) for v in rng.uniform(-self.translate, self.translate, size=2) * 2)
        flip = -1.0 if (self.flip and rng.uniform() < 0.5) else 1.0
        cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
        theta = torch.tensor([[[cos * flip, -sin, tx], [sin * flip, cos, ty]]], dtype=torch.float32)
        grid = functional.affine_grid(theta, list(t.shape), align_corners=False)
        # Outside the field of view: zero counts (the background after normalisation).
        t = functional.grid_sample(
            t, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        out = t[0].numpy()
        out -= config.mean
        out /= config.std
        return out.astype(np.float32, copy=False)
