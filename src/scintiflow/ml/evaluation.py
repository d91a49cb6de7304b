"""Metrics, cross-validation folds, calibration and the reader comparison.

Everything here is plain numpy/scipy on arrays already in memory (no I/O), so training,
the study protocol and the report share one definition of every number.

Conventions: `y_true` holds class indices into `classes` (strings are accepted too and mapped);
`probs` is `(n, K)` with rows summing to one. Undefined values (a sensitivity for a class with
no positive case, an AUC for a class absent from `y_true`) are NaN, never a silent 0, and every
macro average is taken over the classes where the value is defined.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scintiflow import CLASSES
from scintiflow.ml.readers import ReaderRead

PER_CLASS_STATS: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "f1", "auc")
"""The per-class statistics of `ClassificationMetrics.per_class`, in display order."""

MACRO_STATS: tuple[str, ...] = ("macro_sensitivity", "macro_specificity", "macro_f1")

DEFAULT_CI_METRICS: tuple[str, ...] = (
    "accuracy",
    "macro_sensitivity",
    "macro_specificity",
    "macro_auc",
)
"""The bootstrap CIs the study-style table shows (see `bootstrap_cis`)."""


# --------------------------------------------------------------------------------------------
# JSON helpers (NaN is not JSON: it travels as null)


def _num(value: float) -> float | None:
    value = float(value)
    return None if not math.isfinite(value) else value


def _from_num(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def json_safe(obj: Any) -> Any:
    """`obj` with numpy scalars/arrays made plain, tuples made lists and NaN/inf made None."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _num(float(obj))
    return obj


# --------------------------------------------------------------------------------------------
# Point metrics


@dataclass(frozen=True)
class ClassificationMetrics:
    """Metrics of one prediction set (a fold, the internal or the external set).

    `per_class[c]` holds sensitivity, specificity, ppv, npv, f1 and one-vs-rest auc of class
    `c`; `confusion[i][j]` counts true class i predicted as j (classes in `per_class` order).
    `macro_auc` averages the defined per-class AUCs. For label-only predictions (human
    readers) AUC and ECE are NaN: they need probabilities.
    """

    n: int
    accuracy: float
    per_class: dict[str, dict[str, float]]
    macro_auc: float
    confusion: list[list[int]]
    ece: float

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.per_class)

    def macro(self, stat: str) -> float:
        """Mean of a per-class statistic over the classes where it is defined (NaN if none)."""
        values = [v[stat] for v in self.per_class.values() if math.isfinite(v[stat])]
        return float(np.mean(values)) if values else float("nan")

    def value(self, name: str) -> float:
        """A metric by name: `accuracy`, `macro_auc`, `ece`, `macro_<stat>`, `<stat>:<class>`."""
        return _named_value(self, name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": _num(self.accuracy),
            "per_class": {c: {k: _num(v) for k, v in s.items()} for c, s in self.per_class.items()},
            "macro_auc": _num(self.macro_auc),
            "confusion": [[int(x) for x in row] for row in self.confusion],
            "ece": _num(self.ece),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassificationMetrics:
        return cls(
            n=int(data["n"]),
            accuracy=_from_num(data["accuracy"]),
            per_class={
                str(c): {str(k): _from_num(v) for k, v in s.items()}
                for c, s in data["per_class"].items()
            },
            macro_auc=_from_num(data["macro_auc"]),
            confusion=[[int(x) for x in row] for row in data["confusion"]],
            ece=_from_num(data["ece"]),
        )


def _named_value(m: ClassificationMetrics, name: str) -> float:
    if name == "accuracy":
        return m.accuracy
    if name == "macro_auc":
        return m.macro_auc
    if name == "ece":
        return m.ece
    if name.startswith("macro_") and name[6:] in PER_CLASS_STATS:
        return m.macro(name[6:])
    stat, sep, cls = name.partition(":")
    if sep and stat in PER_CLASS_STATS and cls in m.per_class:
        return m.per_class[cls][stat]
    raise ValueError(f"unknown metric {name!r}")


def _as_indices(y: np.ndarray | Sequence[Any], classes: Sequence[str]) -> np.ndarray:
    """Class indices from indices or class names; rejects anything out of range."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError("labels must be a 1-D array")
    if arr.dtype.kind in "USO":
        lookup = {c: i for i, c in enumerate(classes)}
        try:
            arr = np.array([lookup[str(v)] for v in arr], dtype=np.int64)
        except KeyError as exc:
            raise ValueError(f"unknown class label {exc.args[0]!r}") from None
    if arr.dtype.kind not in "iu":
        if arr.size and not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError("labels must be class indices or class names")
        arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= len(classes)):
        raise ValueError(f"class index out of range 0..{len(classes) - 1}")
    return arr.astype(np.int64)


def _as_probs(probs: np.ndarray, n: int, k: int) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (n, k):
        raise ValueError(f"probs must have shape ({n}, {k}), got {p.shape}")
    return p


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def _auc_binary(pos: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank statistic (ties count one half), NaN if one-sided."""
    from scipy.stats import rankdata

    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def _per_class_from_confusion(cm: np.ndarray) -> list[dict[str, float]]:
    n = cm.sum()
    out = []
    for i in range(cm.shape[0]):
        tp = cm[i, i]
        fn = cm[i].sum() - tp
        fp = cm[:, i].sum() - tp
        tn = n - tp - fn - fp
        out.append(
            {
                "sensitivity": _ratio(tp, tp + fn),
                "specificity": _ratio(tn, tn + fp),
                "ppv": _ratio(tp, tp + fp),
                "npv": _ratio(tn, tn + fn),
                "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            }
        )
    return out


def expected_calibration_error(
    y_true: np.ndarray | Sequence[Any], probs: np.ndarray, n_bins: int = 15
) -> float:
    """Top-label ECE: sum over equal-width confidence bins of |accuracy - confidence| x share.

    Bins are right-closed, `(i/n_bins, (i+1)/n_bins]` (the first also holds 0), as in Guo et
    al. 2017. It measures whether "90 % confident" means right 90 % of the time.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if y.dtype.kind in "USO":
        y = _as_indices(y, CLASSES[: p.shape[1]])
    if y.size == 0:
        return float("nan")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(total)


def _metrics_from_parts(
    y: np.ndarray, pred: np.ndarray, probs: np.ndarray | None, classes: Sequence[str]
) -> ClassificationMetrics:
    k = len(classes)
    cm = _confusion(y, pred, k)
    stats = _per_class_from_confusion(cm)
    for i, s in enumerate(stats):
        s["auc"] = _auc_binary(y == i, probs[:, i]) if probs is not None else float("nan")
    aucs = [s["auc"] for s in stats if math.isfinite(s["auc"])]
    return ClassificationMetrics(
        n=int(y.size),
        accuracy=float((y == pred).mean()) if y.size else float("nan"),
        per_class=dict(zip(classes, stats, strict=True)),
        macro_auc=float(np.mean(aucs)) if aucs else float("nan"),
        confusion=cm.tolist(),
        ece=expected_calibration_error(y, probs) if probs is not None else float("nan"),
    )


def classification_metrics(
    y_true: np.ndarray | Sequence[Any], probs: np.ndarray, classes: Sequence[str] = CLASSES
) -> ClassificationMetrics:
    """All metrics of one probability set; prediction = argmax.

    A class absent from `y_true` gets NaN sensitivity and AUC; `macro_auc` then averages the
    classes that are present (sklearn would raise instead).
    """
    y = _as_indices(y_true, classes)
    p = _as_probs(probs, y.size, len(classes))
    return _metrics_from_parts(y, p.argmax(axis=1), p, classes)


def label_metrics(
    y_true: np.ndarray | Sequence[Any],
    y_pred: np.ndarray | Sequence[Any],
    classes: Sequence[str] = CLASSES,
) -> ClassificationMetrics:
    """Metrics of hard labels (human readers): AUC and ECE are NaN, everything else as usual."""
    y = _as_indices(y_true, classes)
    pred = _as_indices(y_pred, classes)
    if pred.size != y.size:
        raise ValueError("y_true and y_pred differ in length")
    return _metrics_from_parts(y, pred, None, classes)


# --------------------------------------------------------------------------------------------
# Bootstrap confidence intervals


def _resample_indices(
    rng: np.random.Generator, n: int, groups: np.ndarray | None
) -> Iterator[np.ndarray]:
    if groups is None:
        while True:
            yield rng.integers(0, n, size=n)
    uniq, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=uniq.size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    members = [order[s : s + c] for s, c in zip(starts, counts, strict=True)]
    while True:
        picked = rng.integers(0, uniq.size, size=uniq.size)
        yield np.concatenate([members[g] for g in picked])


def bootstrap_cis(
    y_true: np.ndarray | Sequence[Any],
    probs: np.ndarray,
    *,
    metrics: Sequence[str] = DEFAULT_CI_METRICS,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: np.ndarray | Sequence[Any] | None = None,
    classes: Sequence[str] = CLASSES,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs of several metrics from the same resamples.

    With `groups` (patient ids or hashes) whole patients are resampled (cluster bootstrap):
    images of one patient are correlated, so resampling images would make the CI too narrow.
    Resamples where a metric is undefined (e.g. a class drawn zero times) are skipped for
    that metric; if none is left the CI is (NaN, NaN).
    """
    y = _as_indices(y_true, classes)
    p = _as_probs(probs, y.size, len(classes))
    if y.size == 0:
        return {m: (float("nan"), float("nan")) for m in metrics}
    g = None if groups is None else np.asarray(groups)
    if g is not None and g.shape != y.shape:
        raise ValueError("groups must have one entry per case")
    needs_probs = any("auc" in m or m == "ece" for m in metrics)
    rng = np.random.default_rng(seed)
    draws = {m: np.empty(n_boot) for m in metrics}
    sampler = _resample_indices(rng, y.size, g)
    pred = p.argmax(axis=1)
    for b in range(n_boot):
        idx = next(sampler)
        m = _metrics_from_parts(y[idx], pred[idx], p[idx] if needs_probs else None, classes)
        for name in metrics:
            draws[name][b] = _named_value(m, name)
    out: dict[str, tuple[float, float]] = {}
    for name, all_values in draws.items():
        values = all_values[np.isfinite(all_values)]
        if values.size == 0:
            out[name] = (float("nan"), float("nan"))
        else:
            lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
            out[name] = (float(lo), float(hi))
    return out


def bootstrap_ci(
    y_true: np.ndarray | Sequence[Any],
    probs: np.ndarray,
    *,
    metric: str = "accuracy",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: np.ndarray | Sequence[Any] | None = None,
    classes: Sequence[str] = CLASSES,
) -> tuple[float, float]:
    """Percentile bootstrap CI of one metric (names as `ClassificationMetrics.value`)."""
    return bootstrap_cis(
        y_true,
        probs,
        metrics=[metric],
        n_boot=n_boot,
        alpha=alpha,
        seed=seed,
        groups=groups,
        classes=classes,
    )[metric]


# --------------------------------------------------------------------------------------------
# Cross-validation


def summary_metric_names(classes: Sequence[str]) -> list[str]:
    """The metric names `summarize_folds` reports, in display order."""
    names = ["accuracy", "macro_auc", "ece", *MACRO_STATS]
    for stat in ("sensitivity", "specificity", "f1", "auc"):
        names += [f"{stat}:{c}" for c in classes]
    return names


def summarize_folds(folds: Sequence[ClassificationMetrics]) -> dict[str, tuple[float, float]]:
    """Mean and sample sd (ddof=1; 0 for a single fold) of each metric over folds.

    NaN folds (a class absent from a fold) are left out of that metric's mean.
    """
    if not folds:
        return {}
    out: dict[str, tuple[float, float]] = {}
    for name in summary_metric_names(folds[0].classes):
        values = np.array([f.value(name) for f in folds], dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            out[name] = (float("nan"), float("nan"))
            continue
        sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
        out[name] = (float(values.mean()), sd)
    return out


def patient_grouped_folds(
    y: np.ndarray | Sequence[Any],
    groups: np.ndarray | Sequence[Any],
    n_splits: int = 5,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val) index pairs from StratifiedGroupKFold: no patient in two folds.

    The guarantees are checked, not assumed: every index is in exactly one validation fold and
    no group appears in two validation folds (a `RuntimeError` otherwise).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y_arr = np.asarray(y)
    g = np.asarray(groups)
    if y_arr.shape[0] != g.shape[0]:
        raise ValueError("y and groups differ in length")
    n_groups = np.unique(g).size
    if n_groups < n_splits:
        raise ValueError(f"{n_groups} patients cannot fill {n_splits} folds")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = [
        (np.asarray(tr, dtype=np.int64), np.asarray(va, dtype=np.int64))
        for tr, va in splitter.split(np.zeros(len(y_arr)), y_arr, g)
    ]
    seen = np.zeros(len(y_arr), dtype=np.int64)
    owner: dict[Any, int] = {}
    for i, (tr, va) in enumerate(folds):
        seen[va] += 1
        if np.intersect1d(g[tr], g[va]).size:
            raise RuntimeError("a patient is in both the training and validation part of a fold")
        for grp in np.unique(g[va]):
            if owner.setdefault(grp.item(), i) != i:
                raise RuntimeError("a patient appears in two validation folds")
    if not np.all(seen == 1):
        raise RuntimeError("validation folds do not cover every case exactly once")
    return folds


# --------------------------------------------------------------------------------------------
# Calibration


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature`, numerically stable."""
    from scipy.special import softmax as _softmax

    return np.asarray(_softmax(np.asarray(logits, dtype=np.float64) / float(temperature), axis=1))


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    from scipy.special import log_softmax

    logp = log_softmax(logits / temperature, axis=1)
    return float(-logp[np.arange(y.size), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray | Sequence[Any]) -> float:
    """The temperature T in [0.05, 20] minimising the NLL of softmax(logits / T) on `y`.

    Fitted on validation data (Guo et al. 2017): it changes confidence, never the argmax.
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    yi = _as_indices(y, [str(i) for i in range(z.shape[1])]) if z.ndim == 2 else None
    if yi is None or yi.size == 0 or yi.size != z.shape[0]:
        raise ValueError("fit_temperature needs (n, K) logits and n labels, n > 0")
    res = minimize_scalar(
        lambda log_t: _nll(z, yi, math.exp(log_t)),
        bounds=(math.log(0.05), math.log(20.0)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(res.x))


def negative_log_likelihood(
    logits: np.ndarray, y: np.ndarray | Sequence[Any], temperature: float = 1.0
) -> float:
    """Mean NLL of softmax(logits / temperature) on class indices `y`."""
    z = np.asarray(logits, dtype=np.float64)
    return _nll(z, _as_indices(y, [str(i) for i in range(z.shape[1])]), temperature)


# --------------------------------------------------------------------------------------------
# Study results


@dataclass(frozen=True)
class EvalSet:
    """Held-out predictions kept for plots and CIs: `internal` or `external`."""

    name: str
    keys: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    groups: np.ndarray | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": len(self.keys),
            "n_groups": None if self.groups is None else int(np.unique(self.groups).size),
        }


def _ci_dict(cis: Mapping[str, tuple[float, float]]) -> dict[str, list[float | None]]:
    return {k: [_num(lo), _num(hi)] for k, (lo, hi) in cis.items()}


@dataclass(frozen=True)
class ArchResult:
    """One architecture's run through the protocol: CV folds, internal and external sets."""

    arch: str
    folds: list[ClassificationMetrics]
    cv_summary: dict[str, tuple[float, float]]
    internal: ClassificationMetrics | None
    internal_ci: dict[str, tuple[float, float]]
    external: ClassificationMetrics | None
    external_ci: dict[str, tuple[float, float]]
    temperature: float
    train_seconds: float
    epochs_run: int
    eval_sets: list[EvalSet] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; the held-out arrays are summarized (name, n), not embedded."""
        return {
            "arch": self.arch,
            "folds": [f.to_dict() for f in self.folds],
            "cv_summary": _ci_dict(self.cv_summary),
            "internal": None if self.internal is None else self.internal.to_dict(),
            "internal_ci": _ci_dict(self.internal_ci),
            "external": None if self.external is None else self.external.to_dict(),
            "external_ci": _ci_dict(self.external_ci),
            "temperature": _num(self.temperature),
            "train_seconds": _num(self.train_seconds),
            "epochs_run": int(self.epochs_run),
            "eval_sets": [e.summary() for e in self.eval_sets],
        }


@dataclass(frozen=True)
class StudyResult:
    """Every architecture's result, the chosen one, reader comparisons and provenance."""

    archs: list[ArchResult]
    best_arch: str
    readers: list[dict[str, Any]]
    config: dict[str, Any]
    dataset: dict[str, Any]

    def arch(self, name: str) -> ArchResult:
        for a in self.archs:
            if a.arch == name:
                return a
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "archs": [a.to_dict() for a in self.archs],
            "best_arch": self.best_arch,
            "readers": json_safe(self.readers),
            "config": json_safe(self.config),
            "dataset": json_safe(self.dataset),
        }


# --------------------------------------------------------------------------------------------
# Reader comparison


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test: b = A right & B wrong, c = A wrong & B right, n = cases compared."""

    b: int
    c: int
    p_value: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"b": self.b, "c": self.c, "p_value": _num(self.p_value), "n": self.n}


def mcnemar_exact(
    y_true: np.ndarray | Sequence[Any],
    pred_a: np.ndarray | Sequence[Any],
    pred_b: np.ndarray | Sequence[Any],
) -> McNemarResult:
    """Exact (binomial) two-sided McNemar test on paired predictions of the same cases.

    Only the discordant pairs count: under H0 each is equally likely to favour A or B.
    With no discordant pair the p-value is 1.
    """
    from scipy.stats import binomtest

    y = np.asarray(y_true)
    a = np.asarray(pred_a)
    b_ = np.asarray(pred_b)
    if not (y.shape == a.shape == b_.shape) or y.ndim != 1:
        raise ValueError("y_true, pred_a and pred_b must be 1-D and of equal length")
    right_a = a == y
    right_b = b_ == y
    b = int(np.sum(right_a & ~right_b))
    c = int(np.sum(~right_a & right_b))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return McNemarResult(b=b, c=c, p_value=min(1.0, p), n=int(y.size))


def is_simulated_reader(reader_id: str) -> bool:
    """Simulated readers are labelled by their id (see `scintiflow.ml.readers.simulate_reads`)."""
    return reader_id.startswith("simulated-")


@dataclass(frozen=True)
class ReaderComparison:
    """One reader against the model on the cases the reader read.

    `mcnemar` has the model as A and the reader as B: b counts cases only the model got
    right. `ignored` counts this reader's reads of keys outside the evaluated set (or
    repeated reads of one key, of which the first counts).
    """

    reader_id: str
    n: int
    reader_metrics: ClassificationMetrics
    model_accuracy: float
    mcnemar: McNemarResult
    simulated: bool
    ignored: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "reader_id": self.reader_id,
            "n": self.n,
            "simulated": self.simulated,
            "ignored": self.ignored,
            "accuracy": _num(self.reader_metrics.accuracy),
            "model_accuracy": _num(self.model_accuracy),
            "reader_metrics": self.reader_metrics.to_dict(),
            "mcnemar": self.mcnemar.to_dict(),
        }


def compare_readers(
    keys: Sequence[str],
    y_true: np.ndarray | Sequence[Any],
    model_pred: np.ndarray | Sequence[Any],
    reads: Sequence[ReaderRead],
    classes: Sequence[str] = CLASSES,
) -> list[ReaderComparison]:
    """Per reader (in first-seen order): metrics, model accuracy and exact McNemar, paired.

    Only cases both the model and the reader read count. `model_pred` holds class indices
    (or `(n, K)` probabilities, argmax taken).
    """
    y = _as_indices(y_true, classes)
    mp = np.asarray(model_pred)
    pred = mp.argmax(axis=1) if mp.ndim == 2 else _as_indices(mp, classes)
    if not (len(keys) == y.size == pred.size):
        raise ValueError("keys, y_true and model_pred differ in length")
    index = {k: i for i, k in enumerate(keys)}
    lookup = {c: i for i, c in enumerate(classes)}
    by_reader: dict[str, dict[int, int]] = {}
    ignored: dict[str, int] = {}
    for r in reads:
        rows = by_reader.setdefault(r.reader_id, {})
        ignored.setdefault(r.reader_id, 0)
        i = index.get(r.key)
        if i is None or i in rows or r.label not in lookup:
            ignored[r.reader_id] += 1
            continue
        rows[i] = lookup[r.label]
    out = []
    for reader_id, rows in by_reader.items():
        idx = np.fromiter(rows.keys(), dtype=np.int64, count=len(rows))
        rpred = np.fromiter(rows.values(), dtype=np.int64, count=len(rows))
        yt, mpred = y[idx], pred[idx]
        out.append(
            ReaderComparison(
                reader_id=reader_id,
                n=int(idx.size),
                reader_metrics=label_metrics(yt, rpred, classes),
                model_accuracy=float((mpred == yt).mean()) if idx.size else float("nan"),
                mcnemar=mcnemar_exact(yt, mpred, rpred),
                simulated=is_simulated_reader(reader_id),
                ignored=ignored[reader_id],
            )
        )
    return out
