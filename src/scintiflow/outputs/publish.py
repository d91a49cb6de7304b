"""Atomic publish of one nightly run: outputs, read-back, manifest last, then `latest.json`.

    results/<night>/<run_id>/predictions.csv|jsonl   this run's scored rows
    results/<night>/<run_id>/quarantined.jsonl       this run's quarantined inputs (codes, where)
    results/<night>/<run_id>/heatmaps/, checks/, report.html/.pdf, sc/ (the report hook)
    results/<night>/<run_id>/manifest.json           written LAST, with if_absent
    results/<night>/claims/<input set sha256>.json   one claim per distinct set of new inputs
    results/<night>/latest.json                      the newest complete run of the night

Readers trust only manifests: a run folder without `manifest.json` is incomplete and ignored.
Before the manifest is written every object of the run folder is read back and hashed; the
tables (and the report) must match the bytes that were written, and every heatmap a row names
must exist. The manifest covers the WHOLE night: inputs scored or quarantined by earlier runs
are carried forward by reference (their run id and manifest), never copied.

Two runs of the same night that processed the same new inputs race for one claim object
(`if_absent`): only the winner writes a manifest, so a set of inputs is published exactly
once and no row appears twice. A run with no new inputs claims nothing and writes only its
manifest (0 new, everything carried forward) and `latest.json`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scintiflow import CLASSES, __version__
from scintiflow.domain import sha256_hex
from scintiflow.outputs.ledger import Outcome
from scintiflow.storage import KeyExistsError, KeyNotFoundError, ObjectStore, StoreError
from scintiflow.storage.jsonio import jsonl_bytes, read_json_or_none
from scintiflow.storage.layout import CLAIMS_DIR, LATEST, MANIFEST, QUARANTINED_JSONL

MANIFEST_SCHEMA = "scintiflow.manifest/1"


class PublishError(StoreError):
    """A read-back did not match what was written, or the run's accounting does not add up."""

    reason = "publish_verify_failed"


class InjectedFaultError(RuntimeError):
    """Raised by the crash-injection hook between the outputs and the manifest (tests)."""


@dataclass(frozen=True, slots=True)
class QuarantinedInput:
    """One input of this run that ends quarantined."""

    key: str
    sha256: str | None
    codes: tuple[str, ...]
    location: str  # quarantine object (or reason file) key

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "sha256": self.sha256,
            "codes": list(self.codes),
            "location": self.location,
        }


@dataclass(frozen=True)
class PublishResult:
    """What `publish_run` did. `manifest_key` is None when another run won the claim."""

    run_prefix: str
    manifest_key: str | None
    latest_key: str | None
    manifest: dict[str, Any] | None
    superseded_by: str | None  # the run id holding the claim, when this run lost it
    new_objects: tuple[str, ...]  # objects of the run folder (before the manifest)


def run_prefix(night: str, run_id: str, results_prefix: str = "results") -> str:
    """`results/<night>/<run_id>`."""
    return f"{results_prefix.strip('/')}/{night}/{run_id}"


def latest_key(night: str, results_prefix: str = "results") -> str:
    """`results/<night>/latest.json`."""
    return f"{results_prefix.strip('/')}/{night}/{LATEST}"


def input_set_hash(hashes: Mapping[str, str | None]) -> str:
    """SHA-256 of the sorted (key, content hash) pairs: names a set of inputs."""
    body = "\n".join(f"{k}\t{hashes[k] or '-'}" for k in sorted(hashes))
    return sha256_hex(body.encode("utf-8"))


def _now() -> str:
    return f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"


def _verify_outputs(
    store: ObjectStore, prefix: str, expected: Mapping[str, str], needed: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Read back every object under the run folder; check known hashes and needed keys."""
    outputs: dict[str, dict[str, Any]] = {}
    for info in store.list(prefix + "/"):
        data = store.get(info.key)
        outputs[info.key] = {"sha256": sha256_hex(data), "size": len(data)}
    for key, digest in expected.items():
        got = outputs.get(key)
        if got is None or got["sha256"] != digest:
            raise PublishError(f"read-back of {key!r} does not match what was written")
    missing = [k for k in needed if k and k not in outputs]
    if missing:
        raise PublishError(f"{len(missing)} heatmap objects named by rows are missing")
    return dict(sorted(outputs.items()))


def publish_run(
    store: ObjectStore,
    *,
    night: str,
    run_id: str,
    rows: Sequence[Mapping[str, Any]],
    quarantined: Sequence[QuarantinedInput],
    carried: Mapping[str, Outcome],
    hashes: Mapping[str, str | None],
    model: Mapping[str, Any],
    engine: str,
    results_prefix: str = "results",
    timings: Mapping[str, float] | None = None,
    drift: Mapping[str, Any] | None = None,
    checks: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    render_report: Callable[[ObjectStore, str, dict[str, Any]], str | None] | None = None,
    fail_before_manifest: bool = False,
) -> PublishResult:
    """Publish one run (see the module docstring for the order of writes).

    `rows`: this run's prediction rows (`PREDICTION_COLUMNS` dicts); `quarantined`: this
    run's quarantined inputs; `carried`: input key -> outcome of an earlier complete run;
    `hashes`: input key -> SHA-256 for EVERY input of the night (the accounting:
    scored + quarantined must equal it, else `PublishError`). `render_report(store, prefix,
    manifest_draft)` may write a report into the run folder and return its key.
    `fail_before_manifest` raises `InjectedFaultError` after the outputs are verified and before
    the claim and manifest (crash injection for tests).
    """
    from scintiflow.inference.score import PREDICTION_COLUMNS, predictions_csv, predictions_jsonl

    started = time.perf_counter()
    prefix = run_prefix(night, run_id, results_prefix)
    scored = {str(r["key"]): r for r in rows}
    quar = {q.key: q for q in quarantined}
    own = set(scored) | set(quar)
    if (
        len(scored) != len(rows)
        or set(scored) & set(quar)
        or own & set(carried)
        or own | set(carried) != set(hashes)
    ):
        raise PublishError(
            f"accounting does not hold for night {night} run {run_id}: "
            f"{len(rows)} scored + {len(quarantined)} quarantined + {len(carried)} carried "
            f"!= {len(hashes)} inputs"
        )
    expected: dict[str, str] = {}
    written: dict[str, bytes] = {}
    if own:
        ordered = sorted(rows, key=lambda r: str(r["key"]))
        cols = list(PREDICTION_COLUMNS)
        from scintiflow.inference.score import PredictionRow

        objs = [PredictionRow(**{c: r[c] for c in cols}) for r in ordered]
        written[f"{prefix}/predictions.csv"] = predictions_csv(objs)
        written[f"{prefix}/predictions.jsonl"] = predictions_jsonl(objs)
        written[f"{prefix}/{QUARANTINED_JSONL}"] = jsonl_bytes(
            [q.to_dict() for q in sorted(quarantined, key=lambda q: q.key)]
        )
    for key, data in written.items():
        store.put(key, data)
        expected[key] = sha256_hex(data)

    inputs = []
    for key in sorted(hashes):
        if key in scored:
            entry = {
                "status": "scored",
                "run_id": run_id,
                "label": scored[key]["predicted_label"],
            }
        elif key in quar:
            entry = {"status": "quarantined", "run_id": run_id, "codes": list(quar[key].codes)}
        else:
            o = carried[key]
            entry = {"status": o.status, "run_id": o.run_id}
            if o.status == "scored":
                entry["label"] = o.label
            else:
                entry["codes"] = list(o.codes)
        inputs.append({"key": key, "sha256": hashes[key], **entry})
    class_counts = Counter(i["label"] for i in inputs if i["status"] == "scored")
    reason_counts = Counter(c for i in inputs if i["status"] == "quarantined" for c in i["codes"])
    n_scored = sum(i["status"] == "scored" for i in inputs)
    n_quar = sum(i["status"] == "quarantined" for i in inputs)
    carried_refs: dict[str, dict[str, Any]] = {}
    for key, o in sorted(carried.items()):
        ref = carried_refs.setdefault(o.manifest, {"run_id": o.run_id, "manifest": o.manifest})
        ref.setdefault("keys", []).append(key)
    new_hashes = {k: hashes[k] for k in sorted(own)}
    set_hash = input_set_hash(new_hashes) if own else None
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "complete": True,
        "night": night,
        "run_id": run_id,
        "created_at": _now(),
        "code_version": __version__,
        "model": dict(model),
        "engine": engine,
        "new_input_set": set_hash,
        "counts": {
            "inputs": len(hashes),
            "scored": n_scored,
            "quarantined": n_quar,
            "new": len(own),
            "scored_new": len(scored),
            "quarantined_new": len(quar),
            "carried_forward": len(carried),
            "low_confidence_new": sum(bool(r.get("low_confidence")) for r in rows),
        },
        "class_counts": {c: class_counts.get(c, 0) for c in CLASSES},
        "reason_counts": dict(sorted(reason_counts.items())),
        "inputs": inputs,
        "carried_forward": list(carried_refs.values()),
        "predictions": (
            {"csv": f"{prefix}/predictions.csv", "jsonl": f"{prefix}/predictions.jsonl"}
            if own
            else None
        ),
        "quarantined": f"{prefix}/{QUARANTINED_JSONL}" if own else None,
        "checks": dict(checks) if checks else None,
        "drift": dict(drift) if drift else None,
        "report": None,
        "timings_s": dict(timings or {}),
        **dict(extra or {}),
    }
    if own and render_report is not None:
        report = render_report(store, prefix, manifest)
        if report is not None:
            manifest["report"] = report
            expected[report] = sha256_hex(store.get(report))
    needed = [k for r in rows for k in (r.get("heatmap_key"), r.get("overlay_key")) if k]
    outputs = _verify_outputs(store, prefix, expected, needed) if own else {}
    manifest["outputs"] = outputs
    if fail_before_manifest:
        raise InjectedFaultError(f"injected fault before the manifest of run {run_id}")

    if set_hash is not None:
        claim_key = f"{results_prefix.strip('/')}/{night}/{CLAIMS_DIR}/{set_hash}.json"
        claim = {"run_id": run_id, "manifest": f"{prefix}/{MANIFEST}", "claimed_at": _now()}
        try:
            store.put(claim_key, json.dumps(claim, sort_keys=True).encode(), if_absent=True)
        except KeyExistsError:
            holder = read_json_or_none(store, claim_key) or {}
            return PublishResult(prefix, None, None, None, str(holder.get("run_id")), ())
        manifest["claim"] = claim_key
    manifest["timings_s"]["publish"] = round(time.perf_counter() - started, 3)
    manifest_key = f"{prefix}/{MANIFEST}"
    store.put(
        manifest_key,
        (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode(),
        if_absent=True,
    )
    lkey = update_latest(store, night, run_id, manifest_key, results_prefix)
    return PublishResult(prefix, manifest_key, lkey, manifest, None, tuple(outputs))


def update_latest(
    store: ObjectStore, night: str, run_id: str, manifest_key: str, results_prefix: str = "results"
) -> str:
    """Point `latest.json` at this run unless a newer complete run is already there.

    Run ids sort by time, so "newer" is a string comparison; a concurrent writer may win the
    last-write race, which is harmless: every manifest covers the whole night.
    """
    key = latest_key(night, results_prefix)
    current = read_json_or_none(store, key)
    if current is not None and str(current.get("run_id", "")) > run_id:
        return key
    doc = {"night": night, "run_id": run_id, "manifest": manifest_key, "updated_at": _now()}
    store.put(key, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    return key


def read_latest(store: ObjectStore, night: str, results_prefix: str = "results") -> dict[str, Any]:
    """The manifest `latest.json` points at (raises `KeyNotFoundError` when none)."""
    pointer = read_json_or_none(store, latest_key(night, results_prefix))
    if pointer is None:
        raise KeyNotFoundError(f"no complete run for night {night}")
    doc: dict[str, Any] = json.loads(store.get(str(pointer["manifest"])))
    return doc


def complete_manifests(
    store: ObjectStore, night: str, results_prefix: str = "results"
) -> list[dict[str, Any]]:
    """Every complete manifest of a night (run folders without one are ignored), by run id."""
    base = f"{results_prefix.strip('/')}/{night}/"
    out = []
    for info in store.list(base):
        parts = info.key[len(base) :].split("/")
        if len(parts) == 2 and parts[1] == MANIFEST:
            out.append(json.loads(store.get(info.key)))
    return sorted(out, key=lambda m: str(m["run_id"]))


def carried_rows(
    store: ObjectStore, manifest: Mapping[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """(earlier run id, prediction row) for every row the manifest carries forward by reference."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for ref in manifest.get("carried_forward") or []:
        keys = set(ref["keys"])
        earlier = json.loads(store.get(str(ref["manifest"])))
        if earlier.get("predictions"):
            rows += [
                (str(ref["run_id"]), r)
                for r in _read_jsonl(store, str(earlier["predictions"]["jsonl"]))
                if r["key"] in keys
            ]
    return rows


def night_rows(store: ObjectStore, manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The whole night's prediction rows: this run's plus those carried forward by reference."""
    rows: list[dict[str, Any]] = []
    if manifest.get("predictions"):
        rows += _read_jsonl(store, str(manifest["predictions"]["jsonl"]))
    rows += [r for _, r in carried_rows(store, manifest)]
    return sorted(rows, key=lambda r: str(r["key"]))


def _read_jsonl(store: ObjectStore, key: str) -> list[dict[str, Any]]:
    text = store.get(key).decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def verify_manifest(store: ObjectStore, manifest: Mapping[str, Any]) -> list[str]:
    """Problems found re-hashing a manifest's outputs (empty list: all present and intact)."""
    problems = []
    for key, meta in (manifest.get("outputs") or {}).items():
        try:
            data = store.get(key)
        except KeyNotFoundError:
            problems.append(f"missing: {key}")
            continue
        if sha256_hex(data) != meta["sha256"]:
            problems.append(f"changed: {key}")
    return problems
