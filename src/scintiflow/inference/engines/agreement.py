"""int8 vs fp32 on an evaluation set, and the rule that decides whether INT8 may be used.

The rule (`INT8_RULE`): on EVERY evaluation set (internal and external), int8/fp32 top-1
agreement >= 0.99 and accuracy lower by no more than 0.5 points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Int8Rule:
    """When INT8 may replace fp32 for a version (checked on every evaluation set)."""

    min_agreement: float = 0.99
    max_accuracy_drop: float = 0.005  # 0.5 accuracy points


INT8_RULE = Int8Rule()


@dataclass(frozen=True)
class SetComparison:
    """int8 vs fp32 on one evaluation set (probabilities temperature-scaled as scored)."""

    name: str
    n: int
    agreement: float  # top-1 agreement
    accuracy_fp32: float
    accuracy_int8: float
    max_prob_diff: float  # max |p_int8 - p_fp32| over images and classes
    cam_pearson_median: float | None  # per image, map of the fp32-predicted class
    cam_pearson_p5: float | None
    cam_images: int  # images with a CAM comparison (0 without in-graph CAM)

    @property
    def accuracy_drop(self) -> float:
        return self.accuracy_fp32 - self.accuracy_int8

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["accuracy_drop"] = self.accuracy_drop
        return out


def cam_pearson(reference: np.ndarray, other: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per-image Pearson correlation of the raw (h, w) maps of class `classes[i]`.

    Two constant maps (e.g. both all zero after the ReLU) count as 1.0 when equal, else 0.0;
    one constant map against a varying one counts 0.0.
    """
    idx = np.arange(len(classes))
    a = reference[idx, classes].reshape(len(classes), -1).astype(np.float64)
    b = other[idx, classes].reshape(len(classes), -1).astype(np.float64)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    tiny = 1e-12
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / (na * nb)
    flat_a, flat_b = na <= tiny, nb <= tiny
    r = np.where(flat_a | flat_b, 0.0, r)
    both = flat_a & flat_b
    same = np.isclose(
        reference[idx, classes].reshape(len(classes), -1),
        other[idx, classes].reshape(len(classes), -1),
        atol=1e-6,
    ).all(axis=1)
    return np.where(both, np.where(same, 1.0, 0.0), r)


def compare_outputs(
    name: str,
    y: np.ndarray,
    fp32: tuple[np.ndarray, np.ndarray | None],
    int8: tuple[np.ndarray, np.ndarray | None],
) -> SetComparison:
    """Agreement, accuracies, max probability difference and CAM correlation of one set."""
    (p32, c32), (p8, c8) = fp32, int8
    y = np.asarray(y)
    if len(y) == 0 or p32.shape != p8.shape or len(y) != len(p32):
        raise ValueError("fp32 and int8 outputs must cover the same non-empty set")
    top32, top8 = p32.argmax(1), p8.argmax(1)
    median = p5 = None
    n_cam = 0
    if c32 is not None and c8 is not None:
        r = cam_pearson(c32, c8, top32)
        n_cam = len(r)
        median, p5 = float(np.median(r)), float(np.percentile(r, 5))
    return SetComparison(
        name=name,
        n=len(y),
        agreement=float((top32 == top8).mean()),
        accuracy_fp32=float((top32 == y).mean()),
        accuracy_int8=float((top8 == y).mean()),
        max_prob_diff=float(np.abs(p8 - p32).max()),
        cam_pearson_median=median,
        cam_pearson_p5=p5,
        cam_images=n_cam,
    )


def int8_verdict(
    sets: Sequence[SetComparison], rule: Int8Rule = INT8_RULE
) -> tuple[bool, str, str]:
    """(allowed, reason code, why) under `rule`; codes `passed`, `agreement_below_rule`,
    `accuracy_drop_above_rule`, `no_evaluation_set`."""
    if not sets:
        return False, "no_evaluation_set", "no evaluation set was given: nothing proves INT8"
    for s in sets:
        if s.agreement < rule.min_agreement:
            return (
                False,
                "agreement_below_rule",
                f"{s.name}: int8/fp32 top-1 agreement {s.agreement:.4f} < "
                f"{rule.min_agreement:.2f} ({s.n} images)",
            )
    for s in sets:
        if s.accuracy_drop > rule.max_accuracy_drop + 1e-12:
            return (
                False,
                "accuracy_drop_above_rule",
                f"{s.name}: accuracy {s.accuracy_fp32:.4f} (fp32) -> {s.accuracy_int8:.4f} "
                f"(int8), a drop of {100 * s.accuracy_drop:.2f} points > "
                f"{100 * rule.max_accuracy_drop:.1f}",
            )
    names = ", ".join(s.name for s in sets)
    return True, "passed", f"agreement >= {rule.min_agreement:.2f} and accuracy kept on {names}"
