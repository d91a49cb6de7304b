"""The study protocol, end to end: data -> CV -> final fit -> evaluation -> registry -> gate.

    data = simulate_study_data(scale=0.1)                     # or load_study_data(...)
    outcome = run_study(data, store, archs=ARCHS, folds=5, train_config=TrainConfig(...))
    print(study_table(outcome.result)); print(outcome.version, outcome.decision.reason)

Protocol (after the published multicentre study the product follows):
1. Per architecture, patient-grouped stratified k-fold CV on the training set (fold metrics).
   Inside each fold an inner patient-grouped split of the fold's training part drives early
   stopping and temperature fitting, so the held-out fold is touched only for its metrics.
2. A final fit on the whole training set, again with an inner patient-grouped validation split
   (early stopping + temperature scaling).
3. Evaluation on the internal held-out set (training sites, other patients) and the external
   set (a site never trained on), with patient-grouped bootstrap CIs.
4. The best architecture (highest mean CV accuracy: the held-out sets do not pick it) is
   compared with the readers (exact McNemar), registered (weights, preprocessing, classes,
   temperature, metrics, card, lineage, training reference, report), and put through the
   promotion gate against the current champion re-scored on the SAME external set.

No patient identifier leaves this module: patients are carried as keyed hashes.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from scintiflow import CLASSES, __version__
from scintiflow.domain import hash_identifier, new_run_id, sha256_hex
from scintiflow.ml.preprocess import PreprocessConfig, normalise_counts, preprocess_batch
from scintiflow.ml.training import ProgressFn, TrainConfig, resolve_lr

if TYPE_CHECKING:
    from scintiflow.ml.evaluation import ArchResult, ClassificationMetrics, StudyResult
    from scintiflow.ml.readers import ReaderRead
    from scintiflow.ml.registry import GateDecision
    from scintiflow.storage import ObjectStore

LogFn = Callable[[str], None]

STUDY_SHAPE: dict[str, int] = {"train": 2067, "internal": 514, "external": 613}
"""Image counts of the published study: training and internal sets from the training
centres, the external set from another centre."""

INTERNAL_FRACTION = STUDY_SHAPE["internal"] / (STUDY_SHAPE["train"] + STUDY_SHAPE["internal"])


class StudyDataError(ValueError):
    """Study inputs are unusable; `reason` is a stable lower_snake code."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StudyImage:
    """One labelled image in memory. `group` is a keyed hash of the patient, never the ID."""

    key: str
    label: int
    group: str
    site: str
    pixels: np.ndarray = field(repr=False)  # (rows, cols) counts
    sha256: str
    pixel_spacing_mm: float | None = None


@dataclass(frozen=True)
class StudyData:
    """The three sets of a study plus provenance (hashes, skipped inputs)."""

    train: list[StudyImage]
    internal: list[StudyImage]
    external: list[StudyImage]
    labels_sha256: dict[str, str]
    source: dict[str, Any]
    skipped: dict[str, int] = field(default_factory=dict)  # reason code -> count

    def counts(self) -> dict[str, Any]:
        """Images per split, site and class (what the report's dataset table shows)."""
        out: dict[str, Any] = {}
        for name, part in (
            ("train", self.train),
            ("internal", self.internal),
            ("external", self.external),
        ):
            out[name] = {
                "n": len(part),
                "patients": len({im.group for im in part}),
                "sites": dict(sorted(Counter(im.site for im in part).items())),
                "classes": {c: sum(im.label == i for im in part) for i, c in enumerate(CLASSES)},
            }
        out["skipped"] = dict(self.skipped)
        return out


@dataclass(frozen=True)
class StudyOutcome:
    """What `run_study` did: the result, the registered version and the gate decision."""

    result: StudyResult
    version: str
    decision: GateDecision
    model_name: str
    report_keys: list[str]
    seconds: float
    throughput: dict[str, float]  # arch -> training images/s


# --------------------------------------------------------------------------------------------
# Data


def _group_hash(patient_id: str, key: bytes) -> str:
    return hash_identifier(patient_id, key)


def _patient_holdout(
    groups: Sequence[str], y: Sequence[int], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rest, holdout) indices: whole patients, about `fraction` of images, per class."""
    g = np.asarray(groups)
    yy = np.asarray(y)
    rng = np.random.default_rng(seed)
    hold = np.zeros(len(g), dtype=bool)
    # Stratify by the patient's class (all images of a patient share it).
    first_label = dict(zip(g[::-1].tolist(), yy[::-1].tolist(), strict=True))
    by_class: dict[int, list[str]] = {}
    for grp in sorted(first_label):
        by_class.setdefault(int(first_label[grp]), []).append(grp)
    sizes = Counter(g.tolist())
    for cls in sorted(by_class):
        pats = by_class[cls]
        rng.shuffle(pats)
        target = fraction * sum(sizes[p] for p in pats)
        taken = 0
        chosen: set[str] = set()
        for p in pats:
            if taken >= target - 0.5 * sizes[p]:
                break
            chosen.add(p)
            taken += sizes[p]
        hold |= np.isin(g, list(chosen))
    return np.flatnonzero(~hold), np.flatnonzero(hold)


def simulate_study_data(
    scale: float = 0.1,
    *,
    seed: int = 0,
    difficulty: float = 0.5,
    internal_sites: Sequence[str] = ("A", "B"),
    external_sites: Sequence[str] = ("C",),
    group_key: bytes = b"scintiflow-study",
) -> StudyData:
    """A multicentre dataset of the study's shape, scaled: train+internal from A+B, external C.

    The internal set is a patient-disjoint holdout from the training centres; the external
    cohort is drawn from other patients at a centre never trained on.
    """
    from scintiflow.sim import simulate_cases

    if scale <= 0:
        raise ValueError("scale must be > 0")
    n_ab = max(8, round((STUDY_SHAPE["train"] + STUDY_SHAPE["internal"]) * scale))
    n_c = max(4, round(STUDY_SHAPE["external"] * scale))

    def to_images(cases: Sequence[Any]) -> list[StudyImage]:
        out = []
        for c in cases:
            digest = sha256_hex(c.image.tobytes())
            out.append(
                StudyImage(
                    key=f"sim/site-{c.site}/{digest[:24]}",
                    label=CLASSES.index(c.label),
                    group=_group_hash(c.patient_id, group_key),
                    site=c.site,
                    pixels=c.image,
                    sha256=digest,
                    pixel_spacing_mm=c.profile.pixel_spacing_mm,
                )
            )
        return out

    ab = to_images(
        simulate_cases(n_ab, sites=tuple(internal_sites), seed=seed, difficulty=difficulty)
    )
    ext = to_images(
        simulate_cases(n_c, sites=tuple(external_sites), seed=seed + 1, difficulty=difficulty)
    )
    rest, hold = _patient_holdout(
        [im.group for im in ab], [im.label for im in ab], INTERNAL_FRACTION, seed
    )
    train = [ab[i] for i in rest]
    internal = [ab[i] for i in hold]

    def set_hash(part: Sequence[StudyImage]) -> str:
        return sha256_hex("\n".join(f"{im.key},{CLASSES[im.label]}" for im in part).encode())

    return StudyData(
        train=train,
        internal=internal,
        external=ext,
        labels_sha256={
            "train": set_hash(train),
            "internal": set_hash(internal),
            "external": set_hash(ext),
        },
        source={
            "kind": "simulated",
            "scale": scale,
            "seed": seed,
            "difficulty": difficulty,
            "internal_sites": list(internal_sites),
            "external_sites": list(external_sites),
        },
    )


@dataclass(frozen=True)
class LabelRow:
    """One row of a labels CSV (the patient ID is hashed on read)."""

    key: str
    label: int
    group: str
    site: str


def read_labels_csv(data: bytes, *, group_key: bytes) -> list[LabelRow]:
    """Parse `key,label,patient_id[,site]`; patient IDs are hashed at once and never kept."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise StudyDataError("labels CSV is not UTF-8 text", reason="not_utf8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in ("key", "label", "patient_id") if c not in header]
    if missing:
        raise StudyDataError(
            f"labels CSV lacks column(s) {', '.join(missing)} (needs key,label,patient_id)",
            reason="missing_column",
        )
    reader.fieldnames = header
    lookup = {c: i for i, c in enumerate(CLASSES)}
    rows: list[LabelRow] = []
    seen: set[str] = set()
    for line, row in enumerate(reader, start=2):
        key = (row.get("key") or "").strip()
        label = (row.get("label") or "").strip().lower()
        pid = (row.get("patient_id") or "").strip()
        if not key or not pid:
            raise StudyDataError(f"line {line}: empty key or patient_id", reason="empty_field")
        if label not in lookup:
            raise StudyDataError(f"line {line}: unknown label", reason="unknown_label")
        if key in seen:
            raise StudyDataError(f"line {line}: key {key!r} listed twice", reason="duplicate_key")
        seen.add(key)
        rows.append(
            LabelRow(
                key=key,
                label=lookup[label],
                group=_group_hash(pid, group_key),
                site=(row.get("site") or "").strip() or "unknown",
            )
        )
    return rows


def _decode_rows(
    store: ObjectStore,
    rows: Sequence[LabelRow],
    *,
    workers: int,
    preferred_view: str,
    group_key: bytes,
    skipped: Counter[str],
    log: LogFn | None,
) -> list[StudyImage]:
    """Decode the labelled keys; failures are skipped and counted by reason code."""
    from scintiflow.ingest.objects import decode_objects

    out: list[StudyImage] = []
    decoded = decode_objects(
        store,
        [r.key for r in rows],
        workers=workers,
        preferred_view=preferred_view,
        patient_hash_key=group_key,
    )
    for row, item in zip(rows, decoded, strict=True):
        if item.record is None or item.sha256 is None:
            skipped[item.reason or "unreadable"] += 1
            continue
        rec = item.record
        if rec.modality != "NM":
            skipped["not_nm_modality"] += 1
            continue
        out.append(
            StudyImage(
                key=row.key,
                label=row.label,
                group=row.group,
                site=row.site,
                pixels=rec.pixels,
                sha256=item.sha256,
                pixel_spacing_mm=None if rec.pixel_spacing_mm is None else rec.pixel_spacing_mm[0],
            )
        )
    if log is not None and skipped:
        log("skipped inputs: " + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())))
    return out


def read_url(url: str) -> bytes:
    """The bytes of one object named by a URL (`file://`, a path, or `s3://bucket/key`)."""
    from scintiflow.storage import open_store

    base, _, key = url.rstrip("/").rpartition("/")
    if not key:
        raise StudyDataError(f"{url!r} does not name an object", reason="bad_url")
    return open_store(base or ".").get(key)


def load_study_data(
    store: ObjectStore,
    labels: bytes,
    *,
    external_store: ObjectStore | None = None,
    external_labels: bytes | None = None,
    internal_fraction: float = INTERNAL_FRACTION,
    seed: int = 0,
    workers: int = 0,
    preferred_view: str = "anterior",
    group_key: bytes = b"scintiflow-default-phi-key",
    log: LogFn | None = None,
) -> StudyData:
    """Decode labelled exports into a study: a patient-disjoint internal holdout of the
    training labels, and an external set when external labels are given.

    Files that fail to decode are skipped and counted by reason code (`StudyData.skipped`).
    """
    skipped: Counter[str] = Counter()
    rows = read_labels_csv(labels, group_key=group_key)
    images = _decode_rows(
        store,
        rows,
        workers=workers,
        preferred_view=preferred_view,
        group_key=group_key,
        skipped=skipped,
        log=log,
    )
    if not images:
        raise StudyDataError("no labelled image could be decoded", reason="no_usable_images")
    rest, hold = _patient_holdout(
        [im.group for im in images], [im.label for im in images], internal_fraction, seed
    )
    external: list[StudyImage] = []
    hashes = {"train": sha256_hex(labels)}
    if external_labels is not None:
        ext_rows = read_labels_csv(external_labels, group_key=group_key)
        external = _decode_rows(
            external_store or store,
            ext_rows,
            workers=workers,
            preferred_view=preferred_view,
            group_key=group_key,
            skipped=skipped,
            log=log,
        )
        hashes["external"] = sha256_hex(external_labels)
        overlap = {im.group for im in external} & {im.group for im in images}
        if overlap:
            raise StudyDataError(
                f"{len(overlap)} patient(s) are in both the training and external labels",
                reason="patient_overlap",
            )
    return StudyData(
        train=[images[i] for i in rest],
        internal=[images[i] for i in hold],
        external=external,
        labels_sha256=hashes,
        source={"kind": "store", "internal_fraction": internal_fraction, "seed": seed},
        skipped=dict(skipped),
    )


# --------------------------------------------------------------------------------------------
# Protocol


def _arrays(part: Sequence[StudyImage]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    return (
        [im.pixels for im in part],
        np.array([im.label for im in part], dtype=np.int64),
        np.array([im.group for im in part]),
    )


def _inner_split(y: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) indices for early stopping: about 15 % of patients, stratified."""
    fit_idx, val_idx = _patient_holdout(groups.tolist(), y.tolist(), 0.15, seed)
    if val_idx.size == 0 or fit_idx.size == 0:
        raise StudyDataError("too few patients for an inner validation split", reason="too_small")
    return fit_idx, val_idx


@dataclass
class _Fitted:
    model: Any
    temperature: float
    seconds: float
    epochs_run: int
    images_per_s: float


def _fit_once(
    arch: str,
    images: list[np.ndarray],
    y: np.ndarray,
    groups: np.ndarray,
    *,
    fold: int | None,
    train_config: TrainConfig,
    preprocess_config: PreprocessConfig,
    weights: str,
    store: ObjectStore | None,
    progress: ProgressFn | None,
) -> _Fitted:
    import torch

    from scintiflow.ml.evaluation import fit_temperature
    from scintiflow.ml.models import create_model
    from scintiflow.ml.training import fit

    seed = train_config.seed + (0 if fold is None else 1000 * (fold + 1))
    fit_idx, val_idx = _inner_split(y, groups, seed)
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=len(CLASSES), weights=weights, store=store)
    res = fit(
        model,
        [images[i] for i in fit_idx],
        y[fit_idx],
        [images[i] for i in val_idx],
        y[val_idx],
        replace(train_config, seed=seed),
        preprocess_config=preprocess_config,
        progress=progress,
        arch=arch,
        fold=fold,
        num_classes=len(CLASSES),
    )
    return _Fitted(
        model=model,
        temperature=fit_temperature(res.val_logits, y[val_idx]),
        seconds=res.seconds,
        epochs_run=res.epochs_run,
        images_per_s=res.train_images_per_s,
    )


def _probs(fitted: _Fitted, x: np.ndarray, config: TrainConfig) -> np.ndarray:
    from scintiflow.ml.evaluation import softmax
    from scintiflow.ml.training import predict_logits, resolve_device

    logits = predict_logits(fitted.model, x, config.eval_batch_size, resolve_device(config.device))
    fitted.model.to("cpu")
    return softmax(logits, fitted.temperature)


def fit_fold(
    arch: str,
    images: list[np.ndarray],
    y: np.ndarray,
    groups: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    fold: int,
    train_config: TrainConfig,
    preprocess_config: PreprocessConfig,
    weights: str,
    store: ObjectStore | None,
    progress: ProgressFn | None,
) -> tuple[_Fitted, ClassificationMetrics]:
    """One CV fold: fit on `train_idx`, score the held-out `val_idx`."""
    from scintiflow.ml.evaluation import classification_metrics

    fitted = _fit_once(
        arch,
        [images[i] for i in train_idx],
        y[train_idx],
        groups[train_idx],
        fold=fold,
        train_config=train_config,
        preprocess_config=preprocess_config,
        weights=weights,
        store=store,
        progress=progress,
    )
    x_val = preprocess_batch([images[i] for i in val_idx], preprocess_config)
    return fitted, classification_metrics(y[val_idx], _probs(fitted, x_val, train_config))


def _evaluate_arch(
    arch: str,
    data: StudyData,
    *,
    folds: int,
    train_config: TrainConfig,
    preprocess_config: PreprocessConfig,
    weights: str,
    store: ObjectStore | None,
    held_out: dict[str, np.ndarray],
    n_boot: int,
    progress: ProgressFn | None,
    log: LogFn | None,
) -> tuple[ArchResult, _Fitted]:
    from scintiflow.ml.evaluation import (
        ArchResult,
        EvalSet,
        bootstrap_cis,
        classification_metrics,
        patient_grouped_folds,
        summarize_folds,
    )

    images, y, groups = _arrays(data.train)
    fold_metrics = []
    seconds = 0.0
    rates = []
    if folds >= 2:
        for k, (tr, va) in enumerate(
            patient_grouped_folds(y, groups, n_splits=folds, seed=train_config.seed)
        ):
            fitted, metrics = fit_fold(
                arch,
                images,
                y,
                groups,
                tr,
                va,
                fold=k,
                train_config=train_config,
                preprocess_config=preprocess_config,
                weights=weights,
                store=store,
                progress=progress,
            )
            seconds += fitted.seconds
            rates.append(fitted.images_per_s)
            fold_metrics.append(metrics)
            if log is not None:
                log(f"{arch} fold {k + 1}/{folds}: accuracy {fold_metrics[-1].accuracy:.3f}")
    final = _fit_once(
        arch,
        images,
        y,
        groups,
        fold=None,
        train_config=train_config,
        preprocess_config=preprocess_config,
        weights=weights,
        store=store,
        progress=progress,
    )
    seconds += final.seconds
    rates.append(final.images_per_s)
    sets: dict[str, Any] = {}
    eval_sets = []
    for name, part in (("internal", data.internal), ("external", data.external)):
        if not part:
            sets[name] = (None, {})
            continue
        _, yy, gg = _arrays(part)
        probs = _probs(final, held_out[name], train_config)
        sets[name] = (
            classification_metrics(yy, probs),
            bootstrap_cis(yy, probs, groups=gg, n_boot=n_boot, seed=train_config.seed),
        )
        eval_sets.append(EvalSet(name, [im.key for im in part], yy, probs, gg))
    result = ArchResult(
        arch=arch,
        folds=fold_metrics,
        cv_summary=summarize_folds(fold_metrics),
        internal=sets["internal"][0],
        internal_ci=sets["internal"][1],
        external=sets["external"][0],
        external_ci=sets["external"][1],
        temperature=final.temperature,
        train_seconds=seconds,
        epochs_run=final.epochs_run,
        eval_sets=eval_sets,
    )
    final.images_per_s = float(np.mean(rates)) if rates else 0.0
    return result, final


def train_record(cfg: TrainConfig, archs: Sequence[str]) -> dict[str, Any]:
    """`cfg` as stored in the card, with `lr` the rate each arch trained with."""
    return {**cfg.to_dict(), "lr": {a: resolve_lr(cfg, a) for a in archs}}


def _pick_best(results: Sequence[ArchResult]) -> ArchResult:
    """Highest mean CV accuracy (internal accuracy when no CV ran); ties: earlier arch."""

    def score(r: ArchResult) -> float:
        if r.cv_summary.get("accuracy"):
            return r.cv_summary["accuracy"][0]
        return r.internal.accuracy if r.internal is not None else float("-inf")

    return max(results, key=score)


def simulated_reader_reads(data: StudyData, seed: int = 0) -> list[ReaderRead]:
    """Demo reads (clearly labelled `simulated-...`) of the internal and external sets."""
    from scintiflow.ml.readers import SIMULATED_READERS, simulate_reads

    part = data.internal + data.external
    keys = [im.key for im in part]
    labels = [CLASSES[im.label] for im in part]
    reads: list[ReaderRead] = []
    for i, (reader_id, acc) in enumerate(sorted(SIMULATED_READERS.items())):
        reads += simulate_reads(
            keys, labels, reader_id=reader_id, per_class_accuracy=acc, seed=seed + i
        )
    return reads


def _compare(best: ArchResult, reads: Sequence[ReaderRead]) -> list[dict[str, Any]]:
    from scintiflow.ml.evaluation import compare_readers

    out: list[dict[str, Any]] = []
    for es in best.eval_sets:
        keyset = set(es.keys)
        mine = [r for r in reads if r.key in keyset]
        if not mine:
            continue
        for cmp in compare_readers(es.keys, es.y_true, es.probs, mine):
            out.append({"set": es.name, "arch": best.arch, **cmp.to_dict()})
    return out


def training_reference(
    part: Sequence[StudyImage], probs: np.ndarray | None, preprocess_config: PreprocessConfig
) -> dict[str, Any]:
    """Input and prediction statistics of the training data, for later drift checks."""
    counts = np.array([float(im.pixels.sum()) for im in part])
    matrices = Counter(f"{im.pixels.shape[0]}x{im.pixels.shape[1]}" for im in part)
    spacing = Counter(
        "unknown" if im.pixel_spacing_mm is None else f"{im.pixel_spacing_mm:.2f}" for im in part
    )
    edges = np.linspace(0.0, 1.0, 21)
    hist = np.zeros(20)
    for im in part:
        hist += np.histogram(normalise_counts(im.pixels, preprocess_config.clip_percentile), edges)[
            0
        ]
    ref: dict[str, Any] = {
        "n": len(part),
        "total_counts": {
            "mean": float(counts.mean()) if counts.size else None,
            "sd": float(counts.std()) if counts.size else None,
            "quantiles": {
                str(q): float(np.quantile(counts, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)
            }
            if counts.size
            else {},
        },
        "matrix": dict(matrices),
        "pixel_spacing_mm": dict(spacing),
        "intensity_histogram": {
            "edges": edges.tolist(),
            "density": (hist / max(1.0, hist.sum())).tolist(),
            "of": "counts / clip percentile, clipped to [0, 1]",
        },
        "label_mix": {
            c: float(np.mean([im.label == i for im in part])) if part else 0.0
            for i, c in enumerate(CLASSES)
        },
    }
    if probs is not None and len(probs):
        pred = probs.argmax(axis=1)
        ref["prediction_mix"] = {c: float(np.mean(pred == i)) for i, c in enumerate(CLASSES)}
        ref["mean_confidence"] = float(probs.max(axis=1).mean())
    return ref


def _metric_cell(m: Any, ci: Mapping[str, tuple[float, float]], name: str) -> str:
    if m is None:
        return "-"
    value = m.value(name)
    lo, hi = ci.get(name, (float("nan"), float("nan")))
    if np.isfinite(lo):
        return f"{value:.3f} ({lo:.3f}-{hi:.3f})"
    return f"{value:.3f}"


def study_table(result: StudyResult) -> str:
    """The study-style comparison table as markdown (arch x internal/external, with CIs)."""
    head = (
        "| arch | CV accuracy (mean ± sd) | internal accuracy (95% CI) | internal macro AUC "
        "| external accuracy (95% CI) | external sensitivity | external specificity "
        "| external macro AUC |"
    )
    lines = [head, "|" + "---|" * 8]
    for r in result.archs:
        cv = r.cv_summary.get("accuracy")
        cv_cell = f"{cv[0]:.3f} ± {cv[1]:.3f}" if cv else "-"
        star = " *" if r.arch == result.best_arch else ""
        lines.append(
            f"| {r.arch}{star} | {cv_cell} | {_metric_cell(r.internal, r.internal_ci, 'accuracy')}"
            f" | {_metric_cell(r.internal, r.internal_ci, 'macro_auc')}"
            f" | {_metric_cell(r.external, r.external_ci, 'accuracy')}"
            f" | {_metric_cell(r.external, r.external_ci, 'macro_sensitivity')}"
            f" | {_metric_cell(r.external, r.external_ci, 'macro_specificity')}"
            f" | {_metric_cell(r.external, r.external_ci, 'macro_auc')} |"
        )
    if result.readers:
        lines += ["", "| set | reader | n | reader accuracy | model accuracy | McNemar p |"]
        lines.append("|" + "---|" * 6)
        for rd in result.readers:
            p = rd["mcnemar"]["p_value"]
            lines.append(
                f"| {rd['set']} | {rd['reader_id']}{' (simulated)' if rd['simulated'] else ''}"
                f" | {rd['n']} | {rd['accuracy']:.3f} | {rd['model_accuracy']:.3f}"
                f" | {'-' if p is None else f'{p:.2g}'} |"
            )
    return "\n".join(lines)


def _champion_accuracy(
    store: ObjectStore,
    name: str,
    models_prefix: str,
    external: Sequence[StudyImage],
    device: str,
) -> tuple[str | None, float | None]:
    """The current champion re-scored on the candidate's external set (same cases)."""
    from scintiflow.ml.registry import champion_version, load_model
    from scintiflow.ml.training import predict_logits, resolve_device

    champ = champion_version(store, name, models_prefix)
    if champ is None or not external:
        return champ, None
    model, meta = load_model(store, name, champ, models_prefix)
    pcfg = PreprocessConfig.from_dict(meta.preprocess)
    _, y, _ = _arrays(external)
    x = preprocess_batch([im.pixels for im in external], pcfg)
    logits = predict_logits(model, x, 128, resolve_device(device))
    return champ, float((logits.argmax(axis=1) == y).mean())


def run_study(
    data: StudyData,
    store: ObjectStore,
    *,
    archs: Sequence[str],
    folds: int = 5,
    train_config: TrainConfig | None = None,
    preprocess_config: PreprocessConfig | None = None,
    weights: str = "none",
    reads: Sequence[ReaderRead] | None = None,
    model_name: str = "thyroid",
    models_prefix: str = "models",
    floor: float = 0.85,
    n_boot: int = 1000,
    weights_store: ObjectStore | None = None,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> StudyOutcome:
    """Run the whole protocol on `data` and register the best architecture in `store`."""
    from scintiflow.ml.models import get_spec, state_dict_bytes
    from scintiflow.ml.registry import apply_gate, promotion_decision, register_version

    started = time.perf_counter()
    cfg = train_config or TrainConfig()
    pcfg = preprocess_config or PreprocessConfig(image_size=cfg.image_size)
    for a in archs:
        get_spec(a)
    if not archs:
        raise ValueError("at least one architecture is needed")
    if not data.train:
        raise StudyDataError("the training set is empty", reason="too_small")
    held_out = {
        name: preprocess_batch([im.pixels for im in part], pcfg)
        for name, part in (("internal", data.internal), ("external", data.external))
        if part
    }
    results: list[ArchResult] = []
    fitted: dict[str, _Fitted] = {}
    for arch in archs:
        if log is not None:
            log(f"{arch}: {folds}-fold CV, then final fit on {len(data.train)} images")
        res, fin = _evaluate_arch(
            arch,
            data,
            folds=folds,
            train_config=cfg,
            preprocess_config=pcfg,
            weights=weights,
            store=weights_store,
            held_out=held_out,
            n_boot=n_boot,
            progress=progress,
            log=log,
        )
        results.append(res)
        fitted[arch] = fin
    best = _pick_best(results)
    readers = _compare(best, reads) if reads else []
    study_seconds = time.perf_counter() - started
    throughput = {a: f.images_per_s for a, f in fitted.items()}
    version = f"v{new_run_id()}"
    # The gate compares on the external set (the internal one when there is none), with the
    # champion re-scored on exactly those cases.
    gate_set = "external" if data.external else "internal"
    gate_part = data.external or data.internal
    champ, champ_acc = _champion_accuracy(store, model_name, models_prefix, gate_part, cfg.device)
    cand = best.external if gate_set == "external" else best.internal
    cand_acc = float("nan") if cand is None else cand.accuracy
    decision = promotion_decision(
        cand_acc,
        champ_acc,
        floor=floor,
        candidate_version=version,
        champion_version=champ,
        external_set=data.labels_sha256.get(gate_set, gate_set),
    )
    config = {
        "archs": list(archs),
        "folds": folds,
        "train": train_record(cfg, archs),
        "preprocess": pcfg.to_dict(),
        "weights": weights,
        "n_boot": n_boot,
        "source": data.source,
        "best_by": "mean CV accuracy",
        "seconds": study_seconds,
        "train_images_per_s": throughput,
        "code_version": __version__,
        "gate": decision.to_dict(),
    }
    result = _study_result(results, best.arch, readers, config, data.counts())
    best_fit = fitted[best.arch]
    internal_probs = next((e.probs for e in best.eval_sets if e.name == "internal"), None)
    extra = _report_files(result)
    extra["study.json"] = json.dumps(result.to_dict(), indent=2, sort_keys=True).encode()
    card, card_md = _model_card(result, best.arch, model_name, version, pcfg)
    lineage = {
        "labels_sha256": data.labels_sha256,
        "input_hashes": sorted(im.sha256 for im in data.train),
        "internal_hashes": sorted(im.sha256 for im in data.internal),
        "external_hashes": sorted(im.sha256 for im in data.external),
        "code_version": __version__,
        "source": data.source,
        "skipped_inputs": data.skipped,
    }
    metrics = {
        "arch": best.arch,
        "internal": None if best.internal is None else best.internal.to_dict(),
        "external": None if best.external is None else best.external.to_dict(),
        "best": best.to_dict(),
        "archs": {r.arch: r.to_dict() for r in results},
        "readers": result.to_dict()["readers"],
    }
    register_version(
        store,
        model_name,
        arch=best.arch,
        weights=state_dict_bytes(best_fit.model),
        preprocess=pcfg.to_dict(),
        classes=CLASSES,
        temperature=best_fit.temperature,
        metrics=metrics,
        card=card,
        card_md=card_md,
        lineage=lineage,
        training_reference=training_reference(data.train, internal_probs, pcfg),
        extra_files=extra,
        models_prefix=models_prefix,
        version=version,
    )
    decision = apply_gate(store, model_name, decision, models_prefix)
    base = f"{models_prefix}/{model_name}/{version}"
    return StudyOutcome(
        result=result,
        version=version,
        decision=decision,
        model_name=model_name,
        report_keys=[f"{base}/{k}" for k in sorted(extra)],
        seconds=time.perf_counter() - started,
        throughput=throughput,
    )


def _study_result(
    results: list[ArchResult],
    best: str,
    readers: list[dict[str, Any]],
    config: dict[str, Any],
    dataset: dict[str, Any],
) -> StudyResult:
    from scintiflow.ml.evaluation import StudyResult

    return StudyResult(
        archs=results, best_arch=best, readers=readers, config=config, dataset=dataset
    )


def _model_card(
    result: StudyResult, arch: str, name: str, version: str, pcfg: PreprocessConfig
) -> tuple[dict[str, Any], str]:
    """`card.json` and `card.md` of the registered architecture (from training_report)."""
    from scintiflow.ml.training_report import model_card

    return model_card(result, arch, name=name, version=version, preprocess=pcfg.to_dict())


def _report_files(result: StudyResult) -> dict[str, bytes]:
    """The training report's files (report.html, report.md, plots), from training_report."""
    from scintiflow.ml.training_report import render_training_report

    return dict(render_training_report(result))
