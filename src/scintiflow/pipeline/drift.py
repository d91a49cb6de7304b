"""Input and prediction drift of a night against the model version's training reference.

The reference (`training_reference.json`, written with every model version by the study)
holds total-count quantiles, matrix and pixel-spacing mixes, a 20-bin histogram of normalised
intensities and the prediction mix on the internal set. A night is summarised the same way
(`night_statistics`) and compared feature by feature (`compare`):

- total counts: PSI over the six bins cut by the reference's 5/25/50/75/95 % quantiles, and a
  KS distance (largest gap between the night's empirical CDF and the reference quantiles);
- matrix, pixel spacing, prediction mix: PSI over categories;
- intensity histogram: PSI over the 20 bins.

PSI = sum (p - q) ln(p / q) with both shares floored at `epsilon`. Conventional reading:
< 0.1 stable, 0.1-0.25 moderate, > 0.25 drift. All thresholds live in `DriftThresholds`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DRIFT_SCHEMA = "scintiflow.pipeline.drift/1"
HIST_EDGES = np.linspace(0.0, 1.0, 21)


@dataclass(frozen=True)
class DriftThresholds:
    """Every drift threshold in one place (recorded in each drift report)."""

    psi_warn: float = 0.1  # moderate shift: reported, not flagged
    psi_drift: float = 0.25  # a feature with PSI above this is flagged as drift
    ks_drift: float = 0.2  # KS distance on total counts above this is flagged
    min_images: int = 20  # fewer new images: statistics reported, nothing flagged
    sample: int = 256  # at most this many images are decoded for the histogram
    epsilon: float = 1e-4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImageStats:
    """What drift needs from one decoded image (no pixels kept beyond the histogram)."""

    total_counts: float
    matrix: str  # "128x128"
    spacing: str  # "1.80" or "unknown"
    histogram: tuple[float, ...]  # 20 bin counts of normalised intensities


def image_stats(
    pixels: np.ndarray, pixel_spacing_mm: tuple[float, float] | None, clip_percentile: float
) -> ImageStats:
    """The drift summary of one count image (the same normalisation as the reference)."""
    from scintiflow.ml.preprocess import normalise_counts

    hist = np.histogram(normalise_counts(pixels, clip_percentile), HIST_EDGES)[0]
    return ImageStats(
        total_counts=float(pixels.sum()),
        matrix=f"{pixels.shape[0]}x{pixels.shape[1]}",
        spacing="unknown" if pixel_spacing_mm is None else f"{pixel_spacing_mm[0]:.2f}",
        histogram=tuple(float(x) for x in hist),
    )


def night_statistics(
    stats: Sequence[ImageStats], predicted: Iterable[str], classes: Sequence[str]
) -> dict[str, Any]:
    """Summary of a night's images and predictions, in the reference's shape."""
    counts = np.array([s.total_counts for s in stats], dtype=np.float64)
    hist = np.sum([s.histogram for s in stats], axis=0) if stats else np.zeros(20)
    pred = Counter(predicted)
    n_pred = sum(pred.values())
    return {
        "n": len(stats),
        "total_counts": counts.tolist(),
        "matrix": dict(Counter(s.matrix for s in stats)),
        "pixel_spacing_mm": dict(Counter(s.spacing for s in stats)),
        "intensity_histogram": (hist / max(1.0, float(hist.sum()))).tolist(),
        "prediction_mix": {c: (pred.get(c, 0) / n_pred if n_pred else 0.0) for c in classes},
        "n_predictions": n_pred,
    }


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = 1e-4) -> float:
    """Population stability index of two distributions over the same bins."""
    p = np.maximum(np.asarray(actual, dtype=np.float64), epsilon)
    q = np.maximum(np.asarray(expected, dtype=np.float64), epsilon)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum((p - q) * np.log(p / q)))


def _shares(counts: Mapping[str, float], cats: Sequence[str]) -> list[float]:
    total = float(sum(counts.values())) or 1.0
    return [float(counts.get(c, 0.0)) / total for c in cats]


def _categorical(ref: Mapping[str, float], cur: Mapping[str, float], eps: float) -> float:
    cats = sorted(set(ref) | set(cur))
    return psi(_shares(ref, cats), _shares(cur, cats), eps)


def _counts_drift(ref: Mapping[str, Any], values: Sequence[float], eps: float) -> dict[str, float]:
    quantiles = {float(q): float(v) for q, v in (ref.get("quantiles") or {}).items()}
    if not quantiles or not values:
        return {}
    qs = sorted(quantiles)
    cuts = [quantiles[q] for q in qs]
    expected = np.diff([0.0, *qs, 1.0])
    x = np.asarray(values, dtype=np.float64)
    actual = np.bincount(np.searchsorted(cuts, x, side="right"), minlength=len(cuts) + 1)
    ecdf = [float(np.mean(x <= c)) for c in cuts]
    return {
        "psi": psi(expected.tolist(), (actual / actual.sum()).tolist(), eps),
        "ks": max(abs(e - q) for e, q in zip(ecdf, qs, strict=True)),
    }


def compare(
    reference: Mapping[str, Any],
    night: Mapping[str, Any],
    thresholds: DriftThresholds | None = None,
) -> dict[str, Any]:
    """Per-feature PSI/KS against the reference; `drift` is True when any feature is flagged.

    Below `min_images` new images the statistics are reported with `status` `too_few_images`
    and nothing is flagged (a handful of late exports says nothing about a population).
    """
    t = thresholds or DriftThresholds()
    features: dict[str, dict[str, Any]] = {}

    def add(name: str, metric: str, value: float, limit: float) -> None:
        if math.isfinite(value):
            features.setdefault(name, {})[metric] = round(value, 4)
            flagged = value > limit
            features[name]["drift"] = bool(features[name].get("drift") or flagged)
            features[name].setdefault("thresholds", {})[metric] = limit

    counts = _counts_drift(reference.get("total_counts") or {}, night["total_counts"], t.epsilon)
    if counts:
        add("total_counts", "psi", counts["psi"], t.psi_drift)
        add("total_counts", "ks", counts["ks"], t.ks_drift)
    for name in ("matrix", "pixel_spacing_mm"):
        if reference.get(name) and night.get(name):
            add(name, "psi", _categorical(reference[name], night[name], t.epsilon), t.psi_drift)
    ref_hist = (reference.get("intensity_histogram") or {}).get("density")
    if ref_hist and night.get("n"):
        add(
            "intensity_histogram",
            "psi",
            psi(ref_hist, night["intensity_histogram"], t.epsilon),
            t.psi_drift,
        )
    if reference.get("prediction_mix") and night.get("n_predictions"):
        add(
            "prediction_mix",
            "psi",
            _categorical(reference["prediction_mix"], night["prediction_mix"], t.epsilon),
            t.psi_drift,
        )
    enough = int(night.get("n") or 0) >= t.min_images
    if not enough:
        for f in features.values():
            f["drift"] = False
    drifted = sorted(k for k, f in features.items() if f.get("drift"))
    return {
        "schema": DRIFT_SCHEMA,
        "status": ("drift" if drifted else "ok") if enough else "too_few_images",
        "drift": bool(drifted),
        "drifted_features": drifted,
        "n_images": int(night.get("n") or 0),
        "n_predictions": int(night.get("n_predictions") or 0),
        "features": features,
        "thresholds": t.to_dict(),
        "night": {
            "matrix": night.get("matrix"),
            "pixel_spacing_mm": night.get("pixel_spacing_mm"),
            "prediction_mix": night.get("prediction_mix"),
            "total_counts_median": (
                float(np.median(night["total_counts"])) if night.get("total_counts") else None
            ),
        },
    }


def sample_keys(keys: Sequence[str], hashes: Mapping[str, str | None], n: int) -> list[str]:
    """A deterministic sample of at most `n` keys (lowest content hashes): the same night
    always gives the same sample, whatever order the keys come in."""
    return sorted(keys, key=lambda k: (hashes.get(k) or "", k))[: max(0, n)]


def decode_stats(
    store: Any,
    keys: Sequence[str],
    clip_percentile: float,
    *,
    workers: int = 0,
    preferred_view: str = "anterior",
    patient_hash_key: bytes,
) -> list[ImageStats]:
    """Decode `keys` (thread pool) and summarise each; undecodable ones are skipped."""
    import os

    from scintiflow.ingest.objects import decode_objects

    out = []
    for obj in decode_objects(
        store,
        keys,
        workers=workers or os.cpu_count() or 1,
        preferred_view=preferred_view,
        patient_hash_key=patient_hash_key,
    ):
        if obj.record is not None:
            out.append(image_stats(obj.record.pixels, obj.record.pixel_spacing_mm, clip_percentile))
    return out


def drift_table(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per feature (for artifacts and the CLI)."""
    rows = []
    for name, f in sorted((report.get("features") or {}).items()):
        rows.append(
            {
                "feature": name,
                "psi": f.get("psi"),
                "ks": f.get("ks"),
                "drift": bool(f.get("drift")),
            }
        )
    return rows


def rows_drift(
    reference: Mapping[str, Any],
    classes: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    hashes: Mapping[str, str | None],
    stats_of: Callable[[list[str]], list[ImageStats]],
) -> dict[str, Any]:
    """Drift of scored rows against the training reference: image statistics of the
    deterministic sample (`sample_keys`; `stats_of(sample)` supplies them) and the
    prediction mix of every row."""
    t = DriftThresholds()
    sample = sample_keys([str(r["key"]) for r in rows], hashes, t.sample)
    predicted = [str(r["predicted_label"]) for r in rows]
    report = compare(reference, night_statistics(stats_of(sample), predicted, classes), t)
    report["sampled"] = len(sample)
    return report


def drift_of_published(
    source: Any,
    reference: Mapping[str, Any],
    classes: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    hashes: Mapping[str, str | None],
    *,
    clip_percentile: float,
    preferred_view: str,
    patient_hash_key: bytes,
) -> dict[str, Any]:
    """Drift of a published night (`scintiflow drift`): the flow's sample rule, with the
    sampled images decoded again from the exports (the shards' features are not kept after
    a run)."""
    return rows_drift(
        reference,
        classes,
        rows,
        hashes,
        lambda sample: decode_stats(
            source,
            sample,
            clip_percentile,
            preferred_view=preferred_view,
            patient_hash_key=patient_hash_key,
        ),
    )
