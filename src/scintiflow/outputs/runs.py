"""The publish protocol's state: the run registry, input-set claims with leases, completion.

    results/<night>/runs/<run_id>.json              {"state": "started"|"done"|"abandoned", ...}
    results/<night>/claims/<set>/<generation>.json  who publishes one set of new inputs
    results/<night>/<run_id>/manifest.json          the run's result (prepare_run / finish_run)
    results/<night>/latest.json                     the newest run of the night, with its status
    state/ledger/..., state/ledger-index/...        written only after the manifest

A run registers itself before it writes anything else. Every later step is idempotent and can
be redone from what is in the store, so a run killed after any single write is finished by
the next one (`complete_unfinished`, called when a night begins):

- a registered run WITH a manifest: `complete_run` writes `latest.json`, its ledger and index
  entries (all derived from the manifest alone) and marks the run done;
- a registered run WITHOUT a manifest: nothing of it is trusted; the next run's manifest lists
  it under `runs_without_manifest` (so its folder is explained) and, once that manifest exists,
  the record is marked `abandoned`.

A claim carries a lease. A run that finds a claim whose holder has a manifest lost the race
fairly (it completes the holder and publishes nothing); a claim older than its lease whose
holder has no manifest is stale, and the next generation is written with `if_absent`, so one
run takes it over. docs/reliability.md has the states and what the next run does in each.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scintiflow.domain import sha256_hex, utc_now_text
from scintiflow.storage import KeyExistsError, ObjectStore
from scintiflow.storage.jsonio import put_json, read_json, read_json_or_none
from scintiflow.storage.layout import MANIFEST, Layout

log = logging.getLogger(__name__)

RUN_SCHEMA = "scintiflow.run/1"
CLAIM_SCHEMA = "scintiflow.claim/1"


def _layout(results_prefix: str) -> Layout:
    return Layout(results=results_prefix.strip("/"))


# ---------------------------------------------------------------------------------------
# The run registry


def register_run(
    store: ObjectStore, night: str, run_id: str, results_prefix: str = "results"
) -> str:
    """Write the run's record (state `started`) before anything else of the run."""
    key = _layout(results_prefix).run_record(night, run_id)
    doc = {"schema": RUN_SCHEMA, "night": night, "run_id": run_id, "state": "started"}
    with contextlib.suppress(KeyExistsError):  # a retried task: the record is already there
        put_json(store, key, {**doc, "started_at": utc_now_text()}, if_absent=True)
    return key


def registered_runs(
    store: ObjectStore, night: str, results_prefix: str = "results"
) -> list[dict[str, Any]]:
    """Every run record of the night, by run id."""
    prefix = _layout(results_prefix).runs_prefix(night)
    docs = [read_json_or_none(store, info.key) for info in store.list(prefix)]
    return sorted((d for d in docs if isinstance(d, dict)), key=lambda d: str(d["run_id"]))


def _mark(
    store: ObjectStore,
    night: str,
    run_id: str,
    state: str,
    results_prefix: str,
    **fields: Any,
) -> None:
    key = _layout(results_prefix).run_record(night, run_id)
    doc = read_json_or_none(store, key) or {"schema": RUN_SCHEMA, "night": night, "run_id": run_id}
    if doc.get("state") == state:
        return
    put_json(
        store,
        key,
        {**doc, **fields, "state": state, f"{state}_at": utc_now_text()},
        if_absent=False,
    )


def manifest_key_of(night: str, run_id: str, results_prefix: str = "results") -> str:
    return _layout(results_prefix).run_file(night, run_id, MANIFEST)


# ---------------------------------------------------------------------------------------
# Claims


@dataclass(frozen=True)
class Claim:
    """One generation of the claim on a set of new inputs."""

    key: str
    input_set: str
    generation: int
    run_id: str
    manifest: str
    claimed_at: float  # epoch seconds of the writer's clock
    lease_s: float
    took_over_from: str | None = None

    @classmethod
    def from_doc(cls, key: str, doc: Mapping[str, Any]) -> Claim:
        return cls(
            key=key,
            input_set=str(doc["input_set"]),
            generation=int(doc["generation"]),
            run_id=str(doc["run_id"]),
            manifest=str(doc["manifest"]),
            claimed_at=float(doc["claimed_at"]),
            lease_s=float(doc["lease_s"]),
            took_over_from=doc.get("took_over_from"),
        )


@dataclass(frozen=True)
class ClaimOutcome:
    """`won`: this run holds `claim`; else `holder` published these inputs (its manifest
    exists) or holds a live claim this run stopped waiting for."""

    won: bool
    claim: Claim | None
    holder: Claim | None = None


def current_claim(
    store: ObjectStore, night: str, input_set: str, results_prefix: str = "results"
) -> Claim | None:
    """The newest generation of the claim on `input_set`, or None."""
    base = _layout(results_prefix).claim_set_prefix(night, input_set)
    newest = None
    for info in store.list(base):
        newest = info.key  # keys list in order; generations are zero-padded
    if newest is None:
        return None
    doc = read_json_or_none(store, newest)
    return Claim.from_doc(newest, doc) if isinstance(doc, dict) else None


def claim_inputs(
    store: ObjectStore,
    night: str,
    input_set: str,
    run_id: str,
    *,
    lease_s: float,
    results_prefix: str = "results",
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = 1.0,
) -> ClaimOutcome:
    """Claim the right to publish `input_set`: write generation 0, or take over a stale one.

    A live claim (inside its lease, no manifest yet) is waited for until its holder
    publishes (this run lost) or the lease runs out (this run takes over).
    """
    layout = _layout(results_prefix)
    manifest = manifest_key_of(night, run_id, results_prefix)
    while True:
        held = current_claim(store, night, input_set, results_prefix)
        if held is not None and held.run_id == run_id:
            return ClaimOutcome(True, held)  # a retried publish of this run
        if held is not None and store.exists(held.manifest):
            return ClaimOutcome(False, None, held)
        if held is not None and clock() - held.claimed_at < held.lease_s:
            sleep(min(poll_s, max(0.0, held.lease_s - (clock() - held.claimed_at))))
            continue
        generation = 0 if held is None else held.generation + 1
        key = layout.claim_generation(night, input_set, generation)
        doc: dict[str, Any] = {
            "schema": CLAIM_SCHEMA,
            "input_set": input_set,
            "generation": generation,
            "run_id": run_id,
            "manifest": manifest,
            "claimed_at": clock(),
            "lease_s": float(lease_s),
            "took_over_from": None if held is None else held.run_id,
        }
        try:
            put_json(store, key, doc, if_absent=True)
        except KeyExistsError:
            continue  # another run wrote this generation first: look again
        if held is not None:
            log.warning(
                "night %s: run %s took over the stale claim of run %s", night, run_id, held.run_id
            )
        return ClaimOutcome(True, Claim.from_doc(key, doc))


def still_holds(
    store: ObjectStore, claim: Claim, night: str, results_prefix: str = "results"
) -> bool:
    """Whether no newer generation of `claim` exists (checked just before the manifest)."""
    newest = current_claim(store, night, claim.input_set, results_prefix)
    return newest is not None and newest.key == claim.key


# ---------------------------------------------------------------------------------------
# Completion: latest.json, the ledger and the index, from the manifest alone


def latest_key(night: str, results_prefix: str = "results") -> str:
    return _layout(results_prefix).latest(night)


def update_latest(
    store: ObjectStore,
    night: str,
    run_id: str,
    manifest_key: str,
    results_prefix: str = "results",
    *,
    status: str = "complete",
) -> str:
    """Point `latest.json` at this run unless a newer run is already there.

    Run ids sort by time, so "newer" is a string comparison; every manifest covers the whole
    night, so a concurrent writer winning the last-write race is harmless.
    """
    key = latest_key(night, results_prefix)
    current = read_json_or_none(store, key)
    if current is not None and str(current.get("run_id", "")) > run_id:
        return key
    if current is not None and current.get("run_id") == run_id:
        return key  # already written (a resumed completion)
    doc = {
        "night": night,
        "run_id": run_id,
        "manifest": manifest_key,
        "status": status,
        "updated_at": utc_now_text(),
    }
    put_json(store, key, doc, if_absent=False)
    return key


def ledger_id(key: str, sha256: str | None, fingerprint: str | None) -> str | None:
    """The ledger's id of an input: its content hash, or for an input the store would not give
    as bytes (a symlink, an invalid key) a hash of its key and listing fingerprint, so it is
    carried forward by the index like any other input. None when it has neither."""
    if sha256:
        return sha256
    if fingerprint:
        return sha256_hex(f"unread\0{key}\0{fingerprint}".encode())
    return None


def ledger_items(
    manifest: Mapping[str, Any], manifest_key: str
) -> list[tuple[str, str, str | None, Any]]:
    """(key, ledger id, fingerprint, Outcome) for the manifest's own scored and quarantined
    inputs. Storage errors are never ledgered (the next run retries them)."""
    from scintiflow.outputs.ledger import Outcome

    night, run_id, mkey = str(manifest["night"]), str(manifest["run_id"]), manifest_key
    items = []
    for inp in manifest["inputs"]:
        if inp.get("run_id") != run_id or inp["status"] not in ("scored", "quarantined"):
            continue
        fp = inp.get("fingerprint")
        lid = ledger_id(str(inp["key"]), inp.get("sha256"), fp)
        if lid is None:
            continue
        outcome = Outcome(
            str(inp["status"]),
            night,
            run_id,
            mkey,
            tuple(inp.get("codes") or ()),
            inp.get("label"),
        )
        items.append((str(inp["key"]), lid, fp, outcome))
    return items


def complete_run(
    store: ObjectStore,
    manifest_key: str,
    *,
    state_prefix: str = "state",
    results_prefix: str = "results",
) -> dict[str, Any]:
    """Finish a run whose manifest exists: `latest.json`, ledger entries, index entries, the
    runs it explained marked abandoned, its record marked done. Idempotent: call it again after
    a crash at any point and it writes what is missing."""
    from scintiflow.outputs.ledger import record, record_index

    manifest: dict[str, Any] = read_json(store, manifest_key)
    night, run_id = str(manifest["night"]), str(manifest["run_id"])
    status = str(manifest.get("status") or "complete")
    update_latest(store, night, run_id, manifest_key, results_prefix, status=status)
    items = ledger_items(manifest, manifest_key)
    version = str(manifest["model"]["version"])
    record(store, [(k, lid, o) for k, lid, _, o in items], version, state_prefix=state_prefix)
    record_index(store, [(k, fp, lid) for k, lid, fp, _ in items], state_prefix=state_prefix)
    for orphan in manifest.get("runs_without_manifest") or []:
        _mark(store, night, str(orphan["run_id"]), "abandoned", results_prefix, noted_in=run_id)
    _mark(store, night, run_id, "done", results_prefix, manifest=manifest_key, status=status)
    return manifest


@dataclass(frozen=True)
class Unfinished:
    """What `complete_unfinished` found: runs it completed, runs with no manifest."""

    completed: tuple[str, ...]
    without_manifest: tuple[dict[str, Any], ...]


def complete_unfinished(
    store: ObjectStore,
    night: str,
    *,
    exclude: Iterable[str] = (),
    state_prefix: str = "state",
    results_prefix: str = "results",
) -> Unfinished:
    """Complete every registered run of the night that has a manifest but is not done; list
    the ones without a manifest (a run that died before publishing, or one still running)."""
    skip = set(exclude)
    completed, orphans = [], []
    for doc in registered_runs(store, night, results_prefix):
        run_id = str(doc["run_id"])
        if run_id in skip or doc.get("state") in ("done", "abandoned"):
            continue
        mkey = manifest_key_of(night, run_id, results_prefix)
        if store.exists(mkey):
            complete_run(store, mkey, state_prefix=state_prefix, results_prefix=results_prefix)
            completed.append(run_id)
            log.warning("night %s: completed run %s (it stopped after its manifest)", night, run_id)
        else:
            orphans.append({"run_id": run_id, "started_at": doc.get("started_at")})
    return Unfinished(tuple(completed), tuple(orphans))


__all__: Sequence[str] = (
    "Claim",
    "ClaimOutcome",
    "Unfinished",
    "claim_inputs",
    "complete_run",
    "complete_unfinished",
    "current_claim",
    "ledger_id",
    "ledger_items",
    "register_run",
    "registered_runs",
    "still_holds",
    "update_latest",
)
