"""The study protocol cut into fan-out pieces, for the retrain flow (no Prefect here).

    data = RetrainData(data_url, labels_url, external_url, external_labels_url, readers_url)
    folds = [fit_fold(data, arch, k, n_folds, cfg) for arch in archs for k in range(n_folds)]
    finals = [final_fit(data, arch, [f for f in folds if f.arch == arch], cfg) for arch in archs]
    outcome = conclude(data, finals, registry, cfg, floor=0.85)    # register + gate

Each (arch, fold) fit takes only URLs, names and numbers and returns a small record (fold
metrics), so it can run as its own task on another worker. Data are decoded once per process
(memoised by URL and the labels' SHA-256). `final_fit` keeps the fitted model in the process
that ran it until `conclude` registers the best one: final fits and `conclude` run in one
process (the flow's). Same maths as `study.run_study`, which runs these steps in one call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from scintiflow.domain import sha256_hex

if TYPE_CHECKING:
    from scintiflow.ml.evaluation import ArchResult, ClassificationMetrics
    from scintiflow.ml.readers import ReaderRead
    from scintiflow.ml.study import StudyData
    from scintiflow.ml.training import TrainConfig

LogFn = Callable[[str], None]


@dataclass(frozen=True)
class RetrainData:
    """Where the labelled data live (URLs only: a safe task parameter)."""

    data: str
    labels: str
    external_data: str | None = None
    external_labels: str | None = None
    readers: str | None = None
    seed: int = 0


_DATA: dict[tuple[Any, ...], StudyData] = {}
_FINALS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def load_data(spec: RetrainData) -> StudyData:
    """The study data behind `spec`, decoded once per process (keyed by the labels' hashes)."""
    from scintiflow.ml.study import load_study_data, read_url
    from scintiflow.pipeline.night import store_for
    from scintiflow.settings import get_settings

    labels = read_url(spec.labels)
    ext_labels = read_url(spec.external_labels) if spec.external_labels else None
    memo = (spec, sha256_hex(labels), sha256_hex(ext_labels or b""))
    with _LOCK:
        if memo not in _DATA:
            settings = get_settings()
            _DATA[memo] = load_study_data(
                store_for(spec.data),
                labels,
                external_store=store_for(spec.external_data) if spec.external_data else None,
                external_labels=ext_labels,
                seed=spec.seed,
                workers=settings.decode_workers,
                preferred_view=settings.preferred_view,
                group_key=settings.phi_hash_key.get_secret_value().encode(),
            )
        return _DATA[memo]


def reader_reads(spec: RetrainData) -> list[ReaderRead] | None:
    """The readers CSV, when one is given."""
    from scintiflow.ml.readers import read_readers_csv
    from scintiflow.ml.study import read_url

    return read_readers_csv(read_url(spec.readers)) if spec.readers else None


@dataclass(frozen=True)
class FoldFit:
    """One (arch, fold) fit: its held-out fold metrics and how long it took."""

    arch: str
    fold: int
    metrics: ClassificationMetrics
    seconds: float
    images_per_s: float


def _pcfg(cfg: TrainConfig) -> Any:
    from scintiflow.ml.preprocess import PreprocessConfig

    return PreprocessConfig(image_size=cfg.image_size)


def fit_fold(
    spec: RetrainData,
    arch: str,
    fold: int,
    folds: int,
    cfg: TrainConfig,
    *,
    weights: str = "none",
    weights_store: str | None = None,
) -> FoldFit:
    """Fit `arch` on all CV folds but `fold` and score the held-out fold."""
    from scintiflow.ml.evaluation import patient_grouped_folds
    from scintiflow.ml.study import _arrays
    from scintiflow.ml.study import fit_fold as fit_study_fold
    from scintiflow.pipeline.night import store_for

    data = load_data(spec)
    images, y, groups = _arrays(data.train)
    tr, va = patient_grouped_folds(y, groups, n_splits=folds, seed=cfg.seed)[fold]
    fitted, metrics = fit_study_fold(
        arch,
        images,
        y,
        groups,
        tr,
        va,
        fold=fold,
        train_config=cfg,
        preprocess_config=_pcfg(cfg),
        weights=weights,
        store=store_for(weights_store) if weights_store else None,
        progress=None,
    )
    return FoldFit(arch, fold, metrics, fitted.seconds, fitted.images_per_s)


@dataclass(frozen=True)
class FinalFit:
    """An architecture's final fit, evaluated; the model stays in this process."""

    arch: str
    result: ArchResult
    token: str  # looks the fitted model up in this process


def final_fit(
    spec: RetrainData,
    arch: str,
    fold_fits: Sequence[FoldFit],
    cfg: TrainConfig,
    *,
    weights: str = "none",
    weights_store: str | None = None,
    n_boot: int = 1000,
) -> FinalFit:
    """Fit `arch` on the whole training set, evaluate internal/external, attach CV metrics."""
    from scintiflow.ml.evaluation import summarize_folds
    from scintiflow.ml.preprocess import preprocess_batch
    from scintiflow.ml.study import _evaluate_arch
    from scintiflow.pipeline.night import store_for

    data = load_data(spec)
    pcfg = _pcfg(cfg)
    held_out = {
        name: preprocess_batch([im.pixels for im in part], pcfg)
        for name, part in (("internal", data.internal), ("external", data.external))
        if part
    }
    result, fitted = _evaluate_arch(
        arch,
        data,
        folds=0,
        train_config=cfg,
        preprocess_config=pcfg,
        weights=weights,
        store=store_for(weights_store) if weights_store else None,
        held_out=held_out,
        n_boot=n_boot,
        progress=None,
        log=None,
    )
    ordered = sorted(fold_fits, key=lambda f: f.fold)
    metrics = [f.metrics for f in ordered]
    result = replace(
        result,
        folds=metrics,
        cv_summary=summarize_folds(metrics),
        train_seconds=result.train_seconds + sum(f.seconds for f in ordered),
    )
    token = f"{arch}-{time.time_ns()}"
    with _LOCK:
        _FINALS[(token, arch)] = fitted
    return FinalFit(arch, result, token)


@dataclass(frozen=True)
class RetrainOutcome:
    """What the retrain registered and what the gate decided (small, JSON-ready)."""

    version: str
    best_arch: str
    decision: dict[str, Any]
    table: str
    report: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "best_arch": self.best_arch,
            "decision": self.decision,
            "table": self.table,
            "report": self.report,
            "seconds": self.seconds,
        }


def conclude(
    spec: RetrainData,
    finals: Sequence[FinalFit],
    registry: str,
    cfg: TrainConfig,
    *,
    folds: int,
    weights: str = "none",
    model_name: str = "thyroid",
    floor: float = 0.85,
    n_boot: int = 1000,
    started: float | None = None,
) -> RetrainOutcome:
    """Pick the best architecture (mean CV accuracy), compare readers, register, apply the gate.

    The same steps and files as the end of `study.run_study`.
    """
    import json

    from scintiflow import CLASSES, __version__
    from scintiflow.domain import new_run_id
    from scintiflow.ml.models import state_dict_bytes
    from scintiflow.ml.registry import apply_gate, promotion_decision, register_version
    from scintiflow.ml.study import (
        _champion_accuracy,
        _compare,
        _model_card,
        _pick_best,
        _report_files,
        _study_result,
        study_table,
        train_record,
        training_reference,
    )
    from scintiflow.pipeline.night import store_for
    from scintiflow.settings import get_settings

    t0 = started if started is not None else time.perf_counter()
    data = load_data(spec)
    store = store_for(registry)
    models_prefix = get_settings().prefixes.models
    results = [f.result for f in finals]
    best = _pick_best(results)
    fin = next(f for f in finals if f.arch == best.arch)
    with _LOCK:
        fitted = _FINALS.pop((fin.token, fin.arch))
    reads = reader_reads(spec)
    readers = _compare(best, reads) if reads else []
    version = f"v{new_run_id()}"
    gate_set = "external" if data.external else "internal"
    gate_part = data.external or data.internal
    champ, champ_acc = _champion_accuracy(store, model_name, models_prefix, gate_part, cfg.device)
    cand = best.external if gate_set == "external" else best.internal
    decision = promotion_decision(
        float("nan") if cand is None else cand.accuracy,
        champ_acc,
        floor=floor,
        candidate_version=version,
        champion_version=champ,
        external_set=data.labels_sha256.get(gate_set, gate_set),
    )
    pcfg = _pcfg(cfg)
    config = {
        "archs": [f.arch for f in finals],
        "folds": folds,
        "train": train_record(cfg, [f.arch for f in finals]),
        "preprocess": pcfg.to_dict(),
        "weights": weights,
        "n_boot": n_boot,
        "source": data.source,
        "best_by": "mean CV accuracy",
        "seconds": time.perf_counter() - t0,
        "code_version": __version__,
        "gate": decision.to_dict(),
        "orchestration": "retrain flow: (arch, fold) fits as separate task runs",
    }
    result = _study_result(results, best.arch, readers, config, data.counts())
    extra = _report_files(result)
    extra["study.json"] = json.dumps(result.to_dict(), indent=2, sort_keys=True).encode()
    card, card_md = _model_card(result, best.arch, model_name, version, pcfg)
    internal_probs = next((e.probs for e in best.eval_sets if e.name == "internal"), None)
    register_version(
        store,
        model_name,
        arch=best.arch,
        weights=state_dict_bytes(fitted.model),
        preprocess=pcfg.to_dict(),
        classes=CLASSES,
        temperature=fitted.temperature,
        metrics={
            "arch": best.arch,
            "internal": None if best.internal is None else best.internal.to_dict(),
            "external": None if best.external is None else best.external.to_dict(),
            "best": best.to_dict(),
            "archs": {r.arch: r.to_dict() for r in results},
            "readers": result.to_dict()["readers"],
        },
        card=card,
        card_md=card_md,
        lineage={
            "labels_sha256": data.labels_sha256,
            "input_hashes": sorted(im.sha256 for im in data.train),
            "internal_hashes": sorted(im.sha256 for im in data.internal),
            "external_hashes": sorted(im.sha256 for im in data.external),
            "code_version": __version__,
            "source": data.source,
            "skipped_inputs": data.skipped,
        },
        training_reference=training_reference(data.train, internal_probs, pcfg),
        extra_files=extra,
        models_prefix=models_prefix,
        version=version,
    )
    decision = apply_gate(store, model_name, decision, models_prefix)
    with _LOCK:  # the other architectures' models are no longer needed
        for f in finals:
            _FINALS.pop((f.token, f.arch), None)
    base = f"{models_prefix}/{model_name}/{version}"
    return RetrainOutcome(
        version=version,
        best_arch=best.arch,
        decision=decision.to_dict(),
        table=study_table(result),
        report=store.url_for(f"{base}/report.html"),
        seconds=time.perf_counter() - t0,
    )
