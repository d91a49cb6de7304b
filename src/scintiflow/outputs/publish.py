"""Atomic publish of one nightly run: tables, verification, manifest last, then `latest.json`.

    draft = prepare_run(store, ...)          # accounting, tables, the manifest's draft
    ...                                      # the report step reads the draft
    published = finish_run(store, draft, report_key=..., report_outputs=...)  # claim, manifest
    complete_run(store, published.manifest_key)   # latest.json, ledger, index (outputs.runs)

    results/<night>/<run_id>/predictions.csv|jsonl   this run's scored rows
    results/<night>/<run_id>/quarantined.jsonl       this run's quarantined inputs (codes, where)
    results/<night>/<run_id>/heatmaps/, thumbs/, sc/, checks/, report.html/.pdf   earlier steps
    results/<night>/<run_id>/manifest.json           written with if_absent, after the claim
    results/<night>/claims/<set>/<gen>.json          one claim per distinct set of new inputs
    results/<night>/latest.json                      the newest run of the night, its status

Readers trust only manifests: a run folder without `manifest.json` is incomplete and ignored.
Before the manifest is written the run folder is listed once: every object the steps wrote
must be there with the size its writer returned, and every object a row names must have been
written. The manifest's `outputs` are the writers' hashes (nothing is read back);
`verify_manifest` re-hashes them on demand. The manifest covers the WHOLE night: inputs
scored or quarantined by earlier runs are carried forward by reference (their run id and
manifest), never copied.

Two runs of the same night that processed the same new inputs race for one claim object
(`if_absent`, `outputs.runs.claim_inputs`): only the winner writes a manifest, so a set of
inputs is published exactly once and no row appears twice; a claim whose holder died before
its manifest is taken over once its lease runs out. A run with no new scored or quarantined
inputs claims nothing and writes only its manifest (everything carried forward).

Inputs the store did not give (`storage_errors`) are listed as `storage_error` with their
code, never quarantined or ledgered; such a manifest has `status: partial`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scintiflow import CLASSES, __version__
from scintiflow.domain import sha256_hex, utc_now_text
from scintiflow.outputs.ledger import Outcome
from scintiflow.outputs.runs import claim_inputs, latest_key, still_holds
from scintiflow.storage import KeyExistsError, KeyNotFoundError, ObjectStore, StoreError
from scintiflow.storage.jsonio import jsonl_bytes, put_bytes, read_json_or_none
from scintiflow.storage.layout import (
    MANIFEST,
    PREDICTIONS_CSV,
    PREDICTIONS_JSONL,
    QUARANTINED_JSONL,
)

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
    holder_manifest: str | None = None  # the holder's manifest, when this run lost the claim

    @property
    def to_complete(self) -> str | None:
        """The manifest whose completion follows: this run's, or the claim holder's."""
        return self.manifest_key or self.holder_manifest

    @property
    def status(self) -> str | None:
        """`complete` | `partial` of the manifest written (None when superseded)."""
        return None if self.manifest is None else str(self.manifest.get("status", "complete"))


def run_prefix(night: str, run_id: str, results_prefix: str = "results") -> str:
    """`results/<night>/<run_id>`."""
    return f"{results_prefix.strip('/')}/{night}/{run_id}"


def input_set_hash(hashes: Mapping[str, str | None]) -> str:
    """SHA-256 of the sorted (key, content hash) pairs: names a set of inputs."""
    body = "\n".join(f"{k}\t{hashes[k] or '-'}" for k in sorted(hashes))
    return sha256_hex(body.encode("utf-8"))


def _verify_listed(
    store: ObjectStore,
    prefix: str,
    expected: Mapping[str, Mapping[str, Any]],
    needed: Sequence[str],
) -> None:
    """Every written object is listed under the run folder with the size its writer returned,
    and every object a row names was written: checked by one listing, nothing is read back."""
    listed = {info.key: info.size for info in store.list(prefix + "/")}
    for key, meta in expected.items():
        if not key.startswith(prefix + "/"):
            continue
        size = meta.get("size")
        if key not in listed or (size is not None and listed[key] != int(size)):
            raise PublishError(f"{key!r} is not in the run folder as it was written")
    missing = [k for k in needed if k and k not in expected]
    if missing:
        raise PublishError(f"{len(missing)} objects named by rows are missing")


@dataclass
class RunDraft:
    """A run whose tables are written and whose manifest is drafted (not yet published).

    The report step reads `manifest` (counts, inputs, model, ...); `expected` holds every
    object of the run with the hash and size its writer returned.
    """

    night: str
    run_id: str
    prefix: str
    results_prefix: str
    manifest: dict[str, Any]
    expected: dict[str, dict[str, Any]]
    needed: list[str]
    started: float


_ROW_OUTPUTS = (
    "heatmap_key",
    "overlay_key",
    "scan_thumbnail_key",
    "overlay_thumbnail_key",
    "sc_key",
)


def _check_accounting(
    night: str,
    run_id: str,
    rows: Sequence[Mapping[str, Any]],
    quarantined: Sequence[QuarantinedInput],
    carried: Mapping[str, Outcome],
    hashes: Mapping[str, str | None],
    storage_errors: Mapping[str, str],
) -> None:
    scored = {str(r["key"]) for r in rows}
    quar = {q.key for q in quarantined}
    unread = set(storage_errors)
    own = scored | quar
    if (
        len(scored) != len(rows)
        or scored & quar
        or (own | unread) & set(carried)
        or unread & own
        or own | set(carried) != set(hashes)
    ):
        raise PublishError(
            f"accounting does not hold for night {night} run {run_id}: "
            f"{len(rows)} scored + {len(quarantined)} quarantined + {len(carried)} carried "
            f"+ {len(unread)} not read != {len(hashes) + len(unread)} inputs"
        )


def _write_tables(
    store: ObjectStore,
    prefix: str,
    rows: Sequence[Mapping[str, Any]],
    quarantined: Sequence[QuarantinedInput],
) -> dict[str, dict[str, Any]]:
    from scintiflow.inference.score import (
        PREDICTION_COLUMNS,
        PredictionRow,
        predictions_csv,
        predictions_jsonl,
    )

    ordered = sorted(rows, key=lambda r: str(r["key"]))
    objs = [PredictionRow(**{c: r[c] for c in PREDICTION_COLUMNS if c in r}) for r in ordered]
    tables = {
        f"{prefix}/{PREDICTIONS_CSV}": predictions_csv(objs),
        f"{prefix}/{PREDICTIONS_JSONL}": predictions_jsonl(objs),
        f"{prefix}/{QUARANTINED_JSONL}": jsonl_bytes(
            [q.to_dict() for q in sorted(quarantined, key=lambda q: q.key)]
        ),
    }
    written = [put_bytes(store, k, v) for k, v in tables.items()]
    return {w.key: {"sha256": w.sha256, "size": w.size} for w in written}


def _inputs(
    run_id: str,
    rows: Sequence[Mapping[str, Any]],
    quarantined: Sequence[QuarantinedInput],
    carried: Mapping[str, Outcome],
    hashes: Mapping[str, str | None],
    storage_errors: Mapping[str, str],
    fingerprints: Mapping[str, str | None],
) -> list[dict[str, Any]]:
    """The manifest's `inputs`: every input of the night, with where its result lives (this
    run's own inputs also carry their listing fingerprint, for the ledger's index)."""
    scored = {str(r["key"]): r for r in rows}
    quar = {q.key: q for q in quarantined}
    inputs = []
    for key in sorted({*hashes, *storage_errors}):
        if key in storage_errors:
            inputs.append(
                {
                    "key": key,
                    "sha256": None,
                    "status": "storage_error",
                    "run_id": run_id,
                    "reason": storage_errors[key],
                }
            )
            continue
        if key in scored:
            entry = {"status": "scored", "run_id": run_id, "label": scored[key]["predicted_label"]}
        elif key in quar:
            entry = {"status": "quarantined", "run_id": run_id, "codes": list(quar[key].codes)}
        else:
            o = carried[key]
            entry = {"status": o.status, "run_id": o.run_id}
            if o.status == "scored":
                entry["label"] = o.label
            else:
                entry["codes"] = list(o.codes)
        if key in scored or key in quar:
            entry["fingerprint"] = fingerprints.get(key)
        inputs.append({"key": key, "sha256": hashes[key], **entry})
    return inputs


def _carried_refs(carried: Mapping[str, Outcome]) -> list[dict[str, Any]]:
    refs: dict[str, dict[str, Any]] = {}
    for key, o in sorted(carried.items()):
        ref = refs.setdefault(o.manifest, {"run_id": o.run_id, "manifest": o.manifest})
        ref.setdefault("keys", []).append(key)
    return list(refs.values())


def prepare_run(
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
    outputs: Mapping[str, Mapping[str, Any]] | None = None,
    superseded: Sequence[str] = (),
    timings: Mapping[str, float] | None = None,
    drift: Mapping[str, Any] | None = None,
    checks: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    storage_errors: Mapping[str, str] | None = None,
    fingerprints: Mapping[str, str | None] | None = None,
    withdrawn: Sequence[Mapping[str, Any]] = (),
    runs_without_manifest: Sequence[Mapping[str, Any]] = (),
) -> RunDraft:
    """Check the accounting, write the run's tables and draft its manifest.

    `rows`: this run's prediction rows; `quarantined`: this run's quarantined inputs;
    `carried`: input key -> outcome of an earlier complete run; `hashes`: input key ->
    SHA-256 for EVERY input of the night (scored + quarantined + carried must equal it, else
    `PublishError`); `outputs`: key -> {sha256, size} of the objects the earlier steps wrote
    into the run folder (their writers' hashes); `superseded`: outputs not covered (the
    duplicates' outputs); `storage_errors`: key -> code of the inputs not read (the manifest
    is then `partial`); `fingerprints`: key -> listing fingerprint; `withdrawn`: inputs of the
    previous manifest no longer listed; `runs_without_manifest`: earlier runs of the night
    that stopped before publishing (their folders are explained here).
    """
    started = time.perf_counter()
    unread = dict(storage_errors or {})
    _check_accounting(night, run_id, rows, quarantined, carried, hashes, unread)
    prefix = run_prefix(night, run_id, results_prefix)
    own = {str(r["key"]) for r in rows} | {q.key for q in quarantined}
    expected = {k: dict(v) for k, v in (outputs or {}).items()}
    if own:
        expected.update(_write_tables(store, prefix, rows, quarantined))
    inputs = _inputs(run_id, rows, quarantined, carried, hashes, unread, fingerprints or {})
    class_counts = Counter(i["label"] for i in inputs if i["status"] == "scored")
    reason_counts = Counter(c for i in inputs if i["status"] == "quarantined" for c in i["codes"])
    set_hash = input_set_hash({k: hashes[k] for k in sorted(own)}) if own else None
    status = "partial" if unread else "complete"
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "status": status,
        "complete": status == "complete",
        "night": night,
        "run_id": run_id,
        "created_at": utc_now_text(),
        "code_version": __version__,
        "model": dict(model),
        "engine": engine,
        "new_input_set": set_hash,
        "counts": {
            "inputs": len(hashes) + len(unread),
            "storage_errors": len(unread),
            "withdrawn": len(withdrawn),
            "scored": sum(i["status"] == "scored" for i in inputs),
            "quarantined": sum(i["status"] == "quarantined" for i in inputs),
            "new": len(own),
            "scored_new": len(rows),
            "quarantined_new": len(quarantined),
            "carried_forward": len(carried),
            "low_confidence_new": sum(bool(r.get("low_confidence")) for r in rows),
        },
        "class_counts": {c: class_counts.get(c, 0) for c in CLASSES},
        "reason_counts": dict(sorted(reason_counts.items())),
        "inputs": inputs,
        "storage_errors": dict(sorted(unread.items())),
        "withdrawn": [dict(w) for w in withdrawn],
        "runs_without_manifest": [dict(r) for r in runs_without_manifest],
        "carried_forward": _carried_refs(carried),
        "predictions": (
            {"csv": f"{prefix}/{PREDICTIONS_CSV}", "jsonl": f"{prefix}/{PREDICTIONS_JSONL}"}
            if own
            else None
        ),
        "quarantined": f"{prefix}/{QUARANTINED_JSONL}" if own else None,
        "checks": dict(checks) if checks else None,
        "drift": dict(drift) if drift else None,
        "report": None,
        "report_pdf_error": None,
        "report_pdf_studies": 0,
        "superseded": sorted(superseded),
        "timings_s": dict(timings or {}),
        **dict(extra or {}),
    }
    needed = [str(r[c]) for r in rows for c in _ROW_OUTPUTS if r.get(c)]
    return RunDraft(night, run_id, prefix, results_prefix, manifest, expected, needed, started)


def finish_run(
    store: ObjectStore,
    draft: RunDraft,
    *,
    report_key: str | None = None,
    report_outputs: Mapping[str, Mapping[str, Any]] | None = None,
    report_pdf_error: str | None = None,
    report_pdf_studies: int = 0,
    fail_before_manifest: bool = False,
    lease_s: float = 120.0,
) -> PublishResult:
    """Verify by listing, claim the new input set, write the manifest (if_absent).

    `latest.json` and the ledger come after, in `outputs.runs.complete_run`: every one of
    those writes can be redone from the manifest. `report_outputs`: key -> {sha256, size} of
    what the report step wrote; `report_pdf_error`: its reason code when the PDF was not
    written (the manifest says so; the HTML is there either way); `report_pdf_studies`: the
    worklist rows the PDF lists (a large night's PDF lists the first ones). `lease_s`: how long the
    claim stays this run's before another run may take it over. `fail_before_manifest`
    raises `InjectedFaultError` after verification, before the claim (crash injection).
    """
    manifest = dict(draft.manifest)
    expected = {**draft.expected, **{k: dict(v) for k, v in (report_outputs or {}).items()}}
    own = manifest["new_input_set"] is not None
    if own:
        _verify_listed(store, draft.prefix, expected, draft.needed)
    manifest["report"] = report_key
    manifest["report_pdf_error"] = report_pdf_error
    manifest["report_pdf_studies"] = report_pdf_studies
    manifest["outputs"] = dict(sorted(expected.items())) if own else {}
    if fail_before_manifest:
        raise InjectedFaultError(f"injected fault before the manifest of run {draft.run_id}")
    night, run_id, prefix = draft.night, draft.run_id, draft.prefix
    manifest_key = f"{prefix}/{MANIFEST}"
    lkey = latest_key(night, draft.results_prefix)
    if own:
        won = claim_inputs(
            store,
            night,
            str(manifest["new_input_set"]),
            run_id,
            lease_s=lease_s,
            results_prefix=draft.results_prefix,
        )
        if (
            not won.won
            or won.claim is None
            or not still_holds(store, won.claim, night, draft.results_prefix)
        ):
            holder = won.holder
            return PublishResult(
                prefix,
                None,
                None,
                None,
                None if holder is None else holder.run_id,
                (),
                None if holder is None else holder.manifest,
            )
        manifest["claim"] = won.claim.key
        manifest["took_over_from"] = won.claim.took_over_from
    manifest["timings_s"] = {
        **manifest["timings_s"],
        "publish": round(time.perf_counter() - draft.started, 3),
    }
    body = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    try:
        store.put(manifest_key, body, if_absent=True)
    except KeyExistsError:  # a retried publish of this run: the manifest it wrote stands
        manifest = json.loads(store.get(manifest_key))
    return PublishResult(prefix, manifest_key, lkey, manifest, None, tuple(manifest["outputs"]))


def publish_run(
    store: ObjectStore,
    *,
    fail_before_manifest: bool = False,
    lease_s: float = 120.0,
    state_prefix: str = "state",
    **kwargs: Any,
) -> PublishResult:
    """`prepare_run`, `finish_run`, then `complete_run` (a run without a report step: tests,
    tools). A run that lost the claim completes the holder's run instead."""
    from scintiflow.outputs.runs import complete_run, register_run

    register_run(store, kwargs["night"], kwargs["run_id"], kwargs.get("results_prefix", "results"))
    draft = prepare_run(store, **kwargs)
    published = finish_run(store, draft, fail_before_manifest=fail_before_manifest, lease_s=lease_s)
    done = published.to_complete
    if done is not None and store.exists(done):
        complete_run(store, done, state_prefix=state_prefix, results_prefix=draft.results_prefix)
    return published


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
