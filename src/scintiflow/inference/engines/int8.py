"""INT8 per model version: build the graph, prove it gives the same answers, gate its use.

    calib = calibration_set(data.train, pcfg)                  # stratified by class and site
    proof = prove_int8(store, "thyroid", version, calibration=calib,
                       eval_sets={"internal": (x_int, y_int), "external": (x_ext, y_ext)})
    proof.allowed, proof.reason                                # e.g. True, "passed"

`prove_int8` writes, in the version folder and each once (`if_absent`; a version is
immutable, so the proof is a NEW object beside the card, never an edit of it):

    model.int8.onnx         the INT8 graph (`quantize.quantize_int8`)
    int8-calibration.npy    the calibration inputs (TensorRT INT8 calibrates on the same set)
    int8.json               the proof, written LAST: the marker engine selection reads

The rule (`INT8_RULE`): INT8 is used for a version only if, on EVERY evaluation set given
(internal and external), int8-vs-fp32 top-1 agreement >= 0.99 and accuracy drops by no more
than 0.5 points. Otherwise the version scores in fp32 and `int8.json` says why.

The proof also records the CPU's int8 instruction class (`int8_isa`): integer kernels differ
between CPUs with and without VNNI (without it, u8s8 products can saturate), so `--engine
auto` uses INT8 only on a CPU of the class the proof was made on.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from scintiflow.inference.engines import EngineError, ScoringModel, load_scoring_model
from scintiflow.inference.engines.agreement import (
    INT8_RULE,
    Int8Rule,
    SetComparison,
    compare_outputs,
    int8_verdict,
)
from scintiflow.inference.engines.calibration import CalibrationSet, calibration_set
from scintiflow.inference.engines.quantize import QuantOptions
from scintiflow.storage import ObjectStore

log = logging.getLogger(__name__)

INT8_GRAPH = "model.int8.onnx"
INT8_CALIBRATION = "int8-calibration.npy"
INT8_PROOF = "int8.json"
PROOF_SCHEMA = 1


# --------------------------------------------------------------------------------------------
# The CPU's int8 instruction class


def int8_isa() -> str:
    """`amx`, `vnni`, `avx2` or `other` (x86 from /proc/cpuinfo); `arm-dot` / `arm` on ARM."""
    machine = platform.machine().lower()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if machine in ("aarch64", "arm64"):
        return "arm-dot" if "asimddp" in flags else "arm"
    if "amx_int8" in flags:
        return "amx"
    if flags & {"avx512_vnni", "avx_vnni"}:
        return "vnni"
    if "avx2" in flags:
        return "avx2"
    return "other"


# --------------------------------------------------------------------------------------------
# The proof in the version folder


@dataclass(frozen=True)
class Int8Proof:
    """`int8.json` of a version: the verdict, the figures per set, how the graph was built."""

    allowed: bool
    reason: str
    why: str
    sets: dict[str, dict[str, Any]]
    graph: dict[str, Any]
    calibration: dict[str, Any]
    machine: dict[str, Any]
    rule: dict[str, float]
    created_at: str
    schema: int = PROOF_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Int8Proof:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def read_int8_proof(sm: ScoringModel) -> Int8Proof | None:
    """The version's `int8.json`, or None (no store, or never proven)."""
    from scintiflow.storage import KeyNotFoundError

    prefix = sm.version_prefix
    if prefix is None or sm.store is None:
        return None
    try:
        data = sm.store.get(f"{prefix}/{INT8_PROOF}")
    except KeyNotFoundError:
        return None
    return Int8Proof.from_dict(json.loads(data))


def int8_permission(sm: ScoringModel) -> tuple[bool, str]:
    """(may `auto` score this version in INT8 on this CPU, why) from its `int8.json`."""
    proof = read_int8_proof(sm)
    if proof is None:
        return False, "no INT8 proof for this version (int8.json absent)"
    if not proof.allowed:
        return False, f"INT8 proof failed ({proof.reason}): {proof.why}"
    here, there = int8_isa(), str(proof.machine.get("int8_isa", ""))
    if here != there:
        return False, f"INT8 was proven on a {there} CPU; this one is {here}"
    return True, f"INT8 proven for this version: {proof.why}"


def model_int8_onnx(sm: ScoringModel) -> bytes:
    """The version's stored INT8 graph, checked against the SHA-256 in its proof.

    Never built here: building needs the calibration set, which only the registration step
    has (`prove_int8`). `EngineError(int8_not_allowed)` without a proof or graph.
    """
    from scintiflow.storage import KeyNotFoundError

    proof = read_int8_proof(sm)
    missing = EngineError(
        f"version {sm.version or '?'} has no INT8 graph (run prove_int8 at registration)",
        reason="int8_not_allowed",
    )
    if proof is None or sm.store is None or not proof.graph.get("sha256"):
        raise missing
    try:
        data = sm.store.get(f"{sm.version_prefix}/{INT8_GRAPH}")
    except KeyNotFoundError:
        raise missing from None
    if _sha256(data) != proof.graph["sha256"]:
        raise EngineError(
            f"{INT8_GRAPH} of {sm.version} does not match the SHA-256 in {INT8_PROOF}",
            reason="int8_not_allowed",
        )
    return data


def int8_calibration(sm: ScoringModel) -> np.ndarray:
    """The stored calibration inputs (N, 1, S, S) of a proven version (for TensorRT INT8)."""
    from scintiflow.storage import KeyNotFoundError

    prefix = sm.version_prefix
    if prefix is None or sm.store is None:
        raise EngineError("no registry: no calibration set", reason="int8_not_allowed")
    try:
        data = sm.store.get(f"{prefix}/{INT8_CALIBRATION}")
    except KeyNotFoundError:
        raise EngineError(
            f"version {sm.version} has no {INT8_CALIBRATION} (run prove_int8 at registration)",
            reason="int8_not_allowed",
        ) from None
    return np.asarray(np.load(io.BytesIO(data), allow_pickle=False), dtype=np.float32)


def _score_all(engine: Any, x: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray | None]:
    probs, cams = [], []
    for i in range(0, len(x), batch):
        p, c = engine.run(x[i : i + batch])
        probs.append(p)
        if c is not None:
            cams.append(c)
    return np.concatenate(probs), (np.concatenate(cams) if cams else None)


def evaluate_int8(
    sm: ScoringModel,
    int8_graph: bytes,
    eval_sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    threads: int | None = None,
    batch: int = 32,
) -> tuple[list[SetComparison], dict[str, float]]:
    """Score every set with the fp32 and the INT8 graph; comparisons and img/s of each."""
    from scintiflow.inference.engines.export import model_onnx
    from scintiflow.inference.engines.ort_engine import OrtEngine

    fp32 = OrtEngine(sm, threads=threads, onnx_bytes=model_onnx(sm))
    int8 = OrtEngine(sm, threads=threads, onnx_bytes=int8_graph, precision="int8")
    out, seconds, images = [], {"fp32": 0.0, "int8": 0.0}, 0
    for name, (x, y) in eval_sets.items():
        if len(x) == 0:
            continue
        t0 = time.perf_counter()
        ref = _score_all(fp32, x, batch)
        t1 = time.perf_counter()
        got = _score_all(int8, x, batch)
        seconds["fp32"] += t1 - t0
        seconds["int8"] += time.perf_counter() - t1
        images += len(x)
        out.append(compare_outputs(name, np.asarray(y), ref, got))
    speed = {k: (images / s if s > 0 else 0.0) for k, s in seconds.items()}
    return out, speed


def prove_int8(
    store: ObjectStore,
    name: str,
    version: str,
    *,
    calibration: CalibrationSet,
    eval_sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    models_prefix: str = "models",
    options: QuantOptions | None = None,
    rule: Int8Rule = INT8_RULE,
    threads: int | None = None,
) -> Int8Proof:
    """Build, evaluate and record the INT8 graph of a registered version (see module doc).

    `eval_sets` maps a set name (`internal`, `external`) to (x, y): inputs preprocessed with
    the version's `PreprocessConfig`, (N, 1, S, S) float32, and class indices. Idempotent:
    when `int8.json` exists it is returned unchanged; a graph left by a crashed earlier call
    is evaluated as stored, never rewritten. A quantisation or evaluation error is recorded
    as a failed proof (`quantization_failed`, `evaluation_failed`): the version then scores
    in fp32 (store errors propagate). Reason codes of a proof: those two, and
    `agreement.int8_verdict`'s.
    """
    from scintiflow.inference.engines.export import model_onnx
    from scintiflow.inference.engines.quantize import quantize_int8
    from scintiflow.storage import KeyExistsError, StoreError

    opts = options or QuantOptions()
    sm = load_scoring_model(store, name, version, models_prefix)
    existing = read_int8_proof(sm)
    if existing is not None:
        return existing
    prefix = sm.version_prefix
    assert prefix is not None  # loaded from a store with a name and version
    x_cal = np.ascontiguousarray(calibration.x, dtype=np.float32)
    fp32 = model_onnx(sm)
    graph: dict[str, Any] = {"file": INT8_GRAPH, "options": opts.to_dict()}
    graph["fp32_sha256"] = _sha256(fp32)
    sets: list[SetComparison] = []
    speed: dict[str, float] = {}
    try:
        data = sm.cached(INT8_GRAPH, lambda: quantize_int8(fp32, x_cal, opts))
    except StoreError:
        raise
    except Exception as exc:  # the quantiser raises many types; record why, score fp32
        allowed, reason, why = False, "quantization_failed", _failure("quantisation", exc)
    else:
        graph.update(sha256=_sha256(data), size=len(data))
        sm.cached(INT8_CALIBRATION, lambda: _npy(x_cal))
        try:
            sets, speed = evaluate_int8(sm, data, eval_sets, threads=threads)
        except StoreError:
            raise
        except Exception as exc:  # e.g. ORT cannot run the graph: record why, score fp32
            allowed, reason, why = False, "evaluation_failed", _failure("evaluation", exc)
        else:
            allowed, reason, why = int8_verdict(sets, rule)
    proof = _proof_record(allowed, reason, why, sets, graph, calibration, speed, rule, threads)
    body = (json.dumps(proof.to_dict(), indent=2, sort_keys=True) + "\n").encode()
    try:
        store.put(f"{prefix}/{INT8_PROOF}", body, if_absent=True)
    except KeyExistsError:  # a concurrent prover won: its proof stands
        again = read_int8_proof(sm)
        assert again is not None
        return again
    log.info("int8 proof of %s %s: %s (%s)", name, version, reason, why)
    return proof


def _failure(step: str, exc: Exception) -> str:
    return f"{step} failed: {type(exc).__name__}: {exc}"[:500]


def _proof_record(
    allowed: bool,
    reason: str,
    why: str,
    sets: Sequence[SetComparison],
    graph: dict[str, Any],
    calibration: CalibrationSet,
    speed: Mapping[str, float],
    rule: Int8Rule,
    threads: int | None,
) -> Int8Proof:
    import onnxruntime

    from scintiflow.ml.training import available_cores

    return Int8Proof(
        allowed=allowed,
        reason=reason,
        why=why,
        sets={s.name: s.to_dict() for s in sets},
        graph=graph,
        calibration={
            "n": len(calibration.keys),
            "keys": list(calibration.keys),
            "strata": dict(calibration.strata),
            "seed": calibration.seed,
            "file": INT8_CALIBRATION if "sha256" in graph else None,
        },
        machine={
            "int8_isa": int8_isa(),
            "machine": platform.machine(),
            "onnxruntime": onnxruntime.__version__,
            "threads": threads or available_cores(),
            "eval_images_per_s": dict(speed),
        },
        rule=asdict(rule),
        created_at=f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}",
    )


def proof_markdown(proof: Int8Proof) -> str:
    """The proof as a short markdown section (for reports and card readers)."""
    verdict = "INT8 allowed" if proof.allowed else "scores in fp32"
    lines = [
        f"**INT8: {verdict}** ({proof.reason}): {proof.why}",
        "",
        "| set | n | top-1 agreement | accuracy fp32 | accuracy int8 | max prob diff "
        "| CAM Pearson median | CAM Pearson p5 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in proof.sets.items():
        med, p5 = s.get("cam_pearson_median"), s.get("cam_pearson_p5")
        lines.append(
            f"| {name} | {s['n']} | {s['agreement']:.4f} | {s['accuracy_fp32']:.4f} "
            f"| {s['accuracy_int8']:.4f} | {s['max_prob_diff']:.4f} "
            f"| {'-' if med is None else f'{med:.5f}'} | {'-' if p5 is None else f'{p5:.5f}'} |"
        )
    cal = proof.calibration
    lines += ["", f"Calibration: {cal['n']} training images, strata {cal['strata']}."]
    return "\n".join(lines) + "\n"


__all__ = [
    "INT8_CALIBRATION",
    "INT8_GRAPH",
    "INT8_PROOF",
    "INT8_RULE",
    "CalibrationSet",
    "Int8Proof",
    "Int8Rule",
    "SetComparison",
    "calibration_set",
    "compare_outputs",
    "evaluate_int8",
    "int8_calibration",
    "int8_isa",
    "int8_permission",
    "int8_verdict",
    "model_int8_onnx",
    "prove_int8",
    "read_int8_proof",
]
