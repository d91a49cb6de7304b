"""The end of a run: pick the best architecture, compare it with the readers, register it, and
decide the promotion gate against the current champion re-scored on the same cases.

The best architecture has the highest mean CV accuracy (the held-out sets do not pick it).
A registered version holds weights, preprocessing, classes, temperature, metrics, card,
lineage, training reference and the training report (`scintiflow.ml.registry` layout).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from scintiflow import CLASSES, __version__
from scintiflow.ml.preprocess import PreprocessConfig, preprocess_batch
from scintiflow.ml.study.data import StudyData, StudyImage, study_arrays
from scintiflow.ml.study.reference import training_reference

if TYPE_CHECKING:
    from scintiflow.ml.evaluation import ArchResult, StudyResult
    from scintiflow.ml.readers import ReaderRead
    from scintiflow.ml.registry import GateDecision
    from scintiflow.ml.study.staging import StagingArea
    from scintiflow.storage import ObjectStore


def pick_best(results: Sequence[ArchResult]) -> ArchResult:
    """Highest mean CV accuracy (internal accuracy when no CV ran); ties: earlier arch."""

    def score(r: ArchResult) -> float:
        if r.cv_summary.get("accuracy"):
            return r.cv_summary["accuracy"][0]
        return r.internal.accuracy if r.internal is not None else float("-inf")

    return max(results, key=score)


def compare_with_readers(best: ArchResult, reads: Sequence[ReaderRead]) -> list[dict[str, Any]]:
    """Each reader against `best` on every held-out set the reader read (one row per set)."""
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


def champion_accuracy(
    store: ObjectStore,
    name: str,
    models_prefix: str,
    part: Sequence[StudyImage],
    device: str,
) -> tuple[str | None, float | None]:
    """The current champion re-scored on the candidate's gate set (same cases)."""
    from scintiflow.ml.registry import champion_version, load_model
    from scintiflow.ml.training import predict_logits, resolve_device

    champ = champion_version(store, name, models_prefix)
    if champ is None or not part:
        return champ, None
    model, meta = load_model(store, name, champ, models_prefix)
    pcfg = PreprocessConfig.from_dict(meta.preprocess)
    _, y, _ = study_arrays(part)
    x = preprocess_batch([im.pixels for im in part], pcfg)
    logits = predict_logits(model, x, 128, resolve_device(device))
    return champ, float((logits.argmax(axis=1) == y).mean())


def gate_decision(
    store: ObjectStore,
    data: StudyData,
    best: ArchResult,
    *,
    version: str,
    staging: StagingArea,
    device: str,
    floor: float,
) -> GateDecision:
    """The gate on the external set (the internal one when there is none), the champion
    re-scored on exactly those cases."""
    from scintiflow.ml.registry import promotion_decision

    gate_set = "external" if data.external else "internal"
    part = data.external or data.internal
    champ, champ_acc = champion_accuracy(
        store, staging.model_name, staging.models_prefix, part, device
    )
    cand = best.external if gate_set == "external" else best.internal
    return promotion_decision(
        float("nan") if cand is None else cand.accuracy,
        champ_acc,
        floor=floor,
        candidate_version=version,
        champion_version=champ,
        external_set=data.labels_sha256.get(gate_set, gate_set),
    )


def _lineage(data: StudyData) -> dict[str, Any]:
    return {
        "labels_sha256": data.labels_sha256,
        "input_hashes": sorted(im.sha256 for im in data.train),
        "internal_hashes": sorted(im.sha256 for im in data.internal),
        "external_hashes": sorted(im.sha256 for im in data.external),
        "code_version": __version__,
        "source": data.source,
        "skipped_inputs": data.skipped,
    }


def _metrics(result: StudyResult) -> dict[str, Any]:
    best = result.arch(result.best_arch)
    return {
        "arch": best.arch,
        "internal": None if best.internal is None else best.internal.to_dict(),
        "external": None if best.external is None else best.external.to_dict(),
        "best": best.to_dict(),
        "archs": {r.arch: r.to_dict() for r in result.archs},
        "readers": result.to_dict()["readers"],
    }


def register_candidate(
    store: ObjectStore,
    result: StudyResult,
    data: StudyData,
    *,
    weights: bytes,
    temperature: float,
    staging: StagingArea,
    version: str,
    preprocess: PreprocessConfig,
) -> list[str]:
    """Register `result`'s best architecture as `version`; the report files' keys back."""
    from scintiflow.ml.registry import register_version
    from scintiflow.ml.training_report import model_card, render_training_report

    best = result.arch(result.best_arch)
    extra = dict(render_training_report(result))
    extra["study.json"] = json.dumps(result.to_dict(), indent=2, sort_keys=True).encode()
    card, card_md = model_card(
        result, best.arch, name=staging.model_name, version=version, preprocess=preprocess.to_dict()
    )
    internal_probs = next((e.probs for e in best.eval_sets if e.name == "internal"), None)
    register_version(
        store,
        staging.model_name,
        arch=best.arch,
        weights=weights,
        preprocess=preprocess.to_dict(),
        classes=CLASSES,
        temperature=temperature,
        metrics=_metrics(result),
        card=card,
        card_md=card_md,
        lineage=_lineage(data),
        training_reference=training_reference(data.train, internal_probs, preprocess),
        extra_files=extra,
        models_prefix=staging.models_prefix,
        version=version,
    )
    base = staging.version_prefix(version)
    return [f"{base}/{k}" for k in sorted(extra)]
