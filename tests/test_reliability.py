"""[F8] A night that always recovers: a kill after every write of the publish protocol, storage
errors that are not data errors, a missing source, symlinks, withdrawn inputs.

The kill tests drive the publish step in a subprocess (`tests/kill_publish.py`): the shards
and the merge of run r1 are done once here and pickled; the subprocess continues r1's
publish on a fresh copy of the store and is SIGKILLed right after write N, for every N the
uninterrupted publish makes (enumerated by recording its writes, not sampled). Then the next
run r2 (the plain loop, the same steps the flow wires) runs on what is left, and a run r3
after it. Compared with an uninterrupted r1 + r2: the same inputs with the same statuses,
content hashes, labels, codes and probabilities; and in every case no input's row in two
manifests, every run folder explained, every run record `done` or `abandoned`, r3 carrying
every input forward.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from test_flows import register_random_champion

from scintiflow import CLASSES
from scintiflow.domain import new_run_id
from scintiflow.outputs.publish import complete_manifests, night_rows, read_latest
from scintiflow.pipeline import night as steps
from scintiflow.pipeline.model import ModelRef, resolve_model
from scintiflow.pipeline.night import NightConfig, night_loop
from scintiflow.sim import write_night
from scintiflow.storage import LocalStore, ObjectInfo, StoreError

NIGHT = date(2026, 11, 27)
N = str(NIGHT)
HASH_KEY = b"test-phi-key"
DRIVER = Path(__file__).with_name("kill_publish.py")
R1 = "20261127T020000Z-00dead"
# a short lease so the next run takes over a dead run's claim after about a second
CFG = NightConfig(lease_s=1.0, read_retries=1, retry_delay_s=0.05, workers=2)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Prepared:
    root: Path  # the store after r1's shards and merge (copied per trial)
    prep: Path  # r1's merge and the rest of what its publish step needs, pickled
    ref: ModelRef


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    root = tmp_path_factory.mktemp("kill-base") / "bucket"
    store = LocalStore(root)
    register_random_champion(store)
    write_night(store, night=NIGHT, n=4, sites=("A",), seed=21, bad_fraction=0.25)
    ref = resolve_model(store.url, "thyroid", "champion", "onnxruntime", models_prefix="models")
    begun = steps.begin_night(store, store, N, R1, CFG)
    listing = steps.list_inputs(store, N, CFG)
    carried, known = steps.carried_forward(store, listing, ref, CFG)
    (spec,) = steps.shard_specs(CFG, N, R1, 1, 8)
    results = [steps.run_shard(store, store, list(listing), spec, ref, HASH_KEY)]
    merged = steps.merge_night(store, store, results, CFG, N, R1, ref)
    steps.account(listing, merged, carried)
    assert merged.rows
    assert merged.quarantined
    prep = root.parent / "r1.pkl"
    state = {
        "night": N,
        "run_id": R1,
        "merged": merged,
        "carried": carried,
        "known": known,
        "ref": ref,
        "cfg": CFG,
        "listing": listing,
        "begun": begun,
    }
    prep.write_bytes(pickle.dumps(state))
    return Prepared(root, prep, ref)


def _publish_r1(p: Prepared, root: Path, **flags: Any) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(DRIVER), "publish", str(root), str(p.prep)]
    for name, value in flags.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def _next_run(p: Prepared, store: LocalStore, browser: str | None = None) -> dict[str, Any]:
    published = night_loop(
        N, store, store, p.ref, cfg=CFG, hash_key=HASH_KEY, run_id=new_run_id(), browser=browser
    )
    assert published.manifest is not None
    return published.manifest


def _outcome(store: LocalStore) -> dict[str, Any]:
    """The night as a reader sees it: per input its status, hash, label, codes, probabilities."""
    latest = read_latest(store, N)
    rows = {r["key"]: r for r in night_rows(store, latest)}
    out: dict[str, Any] = {"status": latest["status"]}
    for i in latest["inputs"]:
        row = rows.get(i["key"])
        probs = None if row is None else tuple(round(float(row[f"p_{c}"]), 6) for c in CLASSES)
        out[i["key"]] = (
            i["status"],
            i["sha256"],
            i.get("label"),
            tuple(i.get("codes") or ()),
            probs,
        )
    return out


def _assert_consistent(store: LocalStore) -> None:
    """No input published twice, every run folder explained, every run record settled."""
    manifests = complete_manifests(store, N)
    own: Counter[str] = Counter()
    for m in manifests:
        own.update(
            i["key"]
            for i in m["inputs"]
            if i.get("run_id") == m["run_id"] and i["status"] in ("scored", "quarantined")
        )
        if m["predictions"]:
            keys = [json.loads(x)["key"] for x in store.get(m["predictions"]["jsonl"]).splitlines()]
            assert len(keys) == len(set(keys))
    assert all(n == 1 for n in own.values()), own  # no input's result in two manifests
    with_manifest = {m["run_id"] for m in manifests}
    explained = with_manifest | {
        r["run_id"] for m in manifests for r in m.get("runs_without_manifest") or []
    }
    base = f"results/{N}/"
    folders = {
        info.key[len(base) :].split("/")[0]
        for info in store.list(base)
        if info.key[len(base) :].count("/") >= 1
    } - {"runs", "claims"}
    assert folders <= explained, folders - explained
    records = [json.loads(store.get(i.key)) for i in store.list(f"{base}runs/")]
    assert {r["run_id"] for r in records} >= folders
    assert all(r["state"] in ("done", "abandoned") for r in records), records
    assert {r["run_id"] for r in records if r["state"] == "abandoned"} <= explained - with_manifest
    pointer = json.loads(store.get(f"{base}latest.json"))
    assert pointer["run_id"] == max(with_manifest)
    assert pointer["status"] == "complete"


@pytest.fixture(scope="module")
def reference(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """r1 published without interruption (its writes recorded), then r2."""
    root = tmp_path_factory.mktemp("kill-ref") / "bucket"
    shutil.copytree(prepared.root, root)
    record = root.parent / "writes.txt"
    done = _publish_r1(prepared, root, record=record)
    assert done.returncode == 0, done.stderr[-3000:]
    writes = record.read_text().splitlines()
    store = LocalStore(root)
    second = _next_run(prepared, store)
    assert second["counts"]["new"] == 0
    return writes, _outcome(store)


def test_the_publish_step_writes_every_boundary_of_the_protocol(
    prepared: Prepared, reference: Any
) -> None:
    writes, _ = reference
    names = [w.rsplit("/", 1)[-1] for w in writes]
    assert writes[0].endswith("predictions.csv")
    assert sum(1 for w in writes if "/claims/" in w) == 1
    assert names.count("report.html") == 1  # streamed from a file (put_file): a write too
    assert names.count("manifest.json") == 1
    assert names.count("latest.json") == 1
    first_state = next(i for i, w in enumerate(writes) if w.startswith("state/"))
    assert names.index("manifest.json") < names.index("latest.json") < first_state
    inputs = len(_exports(LocalStore(prepared.root)))
    assert sum(w.startswith("state/ledger/") for w in writes) == inputs  # one per input
    assert sum(w.startswith("state/ledger-index/") for w in writes) == inputs
    assert writes[-1] == f"results/{N}/runs/{R1}.json"  # marked done last


def test_a_kill_after_any_write_of_publish_is_recovered_by_the_next_run(
    prepared: Prepared, reference: Any, tmp_path: Path
) -> None:
    writes, expected = reference
    survived = []
    for n in range(len(writes) + 1):  # 0: before its first publish write; last: after its last
        root = tmp_path / f"kill-{n:02d}"
        shutil.copytree(prepared.root, root)
        if n:
            killed = _publish_r1(prepared, root, kill_after=n)
            assert killed.returncode == -signal.SIGKILL, (n, killed.stderr[-2000:])
        store = LocalStore(root)
        _next_run(prepared, store)
        assert _outcome(store) == expected, f"killed after write {n}: {writes[n - 1] if n else '-'}"
        third = _next_run(prepared, store)
        assert third["counts"]["new"] == 0, n
        _assert_consistent(store)
        survived.append(n)
        shutil.rmtree(root)
    assert survived == list(range(len(writes) + 1))


def test_a_kill_of_the_nightly_cli_after_its_manifest_is_finished_by_the_next_run(
    prefect_api: None, night_store: LocalStore, tmp_path: Path
) -> None:
    """Defect 2, through the whole flow: the CLI process is SIGKILLed right after its manifest
    (before latest.json and the ledger); the next flow run completes it and scores nothing."""
    import os

    from flows.nightly import nightly

    root = str(night_store.root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_LOGGING_LEVEL": "WARNING"}
    args = [sys.executable, str(DRIVER), "flow", root, "--kill-on", "manifest.json", "--"]
    args += ["nightly", "--source", root, "--night", N, "--engine", "onnxruntime"]
    log = tmp_path / "cli.log"
    with log.open("wb") as out:  # a file, not a pipe: the server child would hold a pipe open
        proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=out, stderr=out)
        try:
            proc.wait(timeout=300)
        finally:  # the CLI's own Prefect server must not outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    (killed,) = complete_manifests(night_store, N)
    assert not night_store.exists(f"results/{N}/latest.json")
    assert list(night_store.list("state/ledger/")) == []

    state = nightly(night=N, source=night_store.url, engine="onnxruntime", return_state=True)
    summary = state.result()
    assert summary["completed_earlier_runs"] == [killed["run_id"]]
    assert summary["new"] == 0
    assert summary["carried_forward"] == killed["counts"]["inputs"]
    _assert_consistent(night_store)


# ---------------------------------------------------------------------------------------
# Storage errors, missing sources, symlinks, withdrawn inputs (plain loop)


@pytest.fixture
def night_store(prepared: Prepared, tmp_path: Path) -> LocalStore:
    """A store with the registry and the 4-input night, nothing published."""
    root = tmp_path / "bucket"
    shutil.copytree(prepared.root, root, ignore=shutil.ignore_patterns("results", "quarantine"))
    shutil.rmtree(root / "state", ignore_errors=True)
    return LocalStore(root)


class FlakyStore(LocalStore):
    """A real folder store whose `get` of chosen keys fails with a storage error."""

    def __init__(self, root: Path, failing: set[str], times: int = 10**9) -> None:
        super().__init__(root)
        self.failing, self.left = failing, dict.fromkeys(failing, times)

    def get(self, key: str, *, if_match: str = "") -> bytes:
        if key in self.failing and self.left[key] > 0:
            self.left[key] -= 1
            raise StoreError(f"injected S3 outage reading {key}", reason="s3_error")
        return super().get(key, if_match=if_match)


def _exports(store: LocalStore) -> list[str]:
    return sorted(i.key for i in store.list(f"exports/{N}/"))


def test_an_outage_during_scoring_ends_the_night_partial_and_the_next_run_completes_it(
    prepared: Prepared, night_store: LocalStore
) -> None:
    """Defects 4 and 6: unreadable scans are not quarantined; the night is partial."""
    keys = _exports(night_store)
    flaky = FlakyStore(night_store.root, {keys[0], keys[1]})
    run = night_loop(N, flaky, flaky, prepared.ref, cfg=CFG, hash_key=HASH_KEY, browser=None)
    m = run.manifest
    assert m is not None
    assert m["status"] == "partial"
    assert m["complete"] is False
    assert m["storage_errors"] == {keys[0]: "s3_error", keys[1]: "s3_error"}
    by_key = {i["key"]: i for i in m["inputs"]}
    assert {by_key[k]["status"] for k in keys[:2]} == {"storage_error"}
    assert m["counts"]["inputs"] == len(keys)
    assert list(night_store.list(f"quarantine/{N}/unreadable/")) == []
    assert json.loads(night_store.get(f"results/{N}/latest.json"))["status"] == "partial"
    with pytest.raises(steps.NightPartialError, match="2 inputs not read"):
        steps.raise_if_partial(run)
    # the next run retries exactly those two, and the night is complete
    again = _next_run(prepared, night_store)
    assert again["status"] == "complete"
    assert again["counts"]["new"] == 2
    assert again["counts"]["scored"] + again["counts"]["quarantined"] == len(keys)
    _assert_consistent(night_store)


def test_a_short_outage_is_ridden_out_by_the_shard_retries(
    prepared: Prepared, night_store: LocalStore
) -> None:
    keys = _exports(night_store)
    flaky = FlakyStore(night_store.root, {keys[0]}, times=1)  # fails once, then reads
    run = night_loop(N, flaky, flaky, prepared.ref, cfg=CFG, hash_key=HASH_KEY, browser=None)
    assert run.manifest is not None
    assert run.manifest["status"] == "complete"
    assert flaky.left[keys[0]] == 0


def test_a_failed_shard_lists_its_inputs_and_the_rest_is_published(
    prepared: Prepared, night_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard that fails as a whole ends `shard_failed`; the other shards' inputs publish."""
    real = steps.run_shard

    def second_shard_dies(*args: Any, **kwargs: Any) -> Any:
        if args[3].index == 1:
            raise ConnectionResetError("worker lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(steps, "run_shard", second_shard_dies)
    keys = _exports(night_store)
    run = night_loop(
        N,
        night_store,
        night_store,
        prepared.ref,
        cfg=CFG,
        hash_key=HASH_KEY,
        browser=None,
        shard_size=2,
    )
    m = run.manifest
    assert m is not None
    assert m["status"] == "partial"
    assert m["storage_errors"] == dict.fromkeys(keys[2:4], "shard_failed")
    assert m["counts"]["new"] == len(keys) - 2
    monkeypatch.setattr(steps, "run_shard", real)
    assert _next_run(prepared, night_store)["status"] == "complete"


def test_a_missing_source_is_an_error_before_anything_is_written(
    prepared: Prepared, tmp_path: Path
) -> None:
    """Defect 5: no folders are created under the missing path, no manifest."""
    dest = LocalStore(tmp_path / "dest")
    missing = LocalStore(tmp_path / "no-such-exports")
    with pytest.raises(StoreError) as err:
        night_loop(N, missing, dest, prepared.ref, cfg=CFG, hash_key=HASH_KEY, browser=None)
    assert err.value.reason == "missing_source"
    assert err.value.permanent
    assert not (tmp_path / "no-such-exports").exists()
    assert list(dest.list("")) == []


def test_an_empty_night_is_published_complete_with_zero_inputs(
    prepared: Prepared, night_store: LocalStore, caplog: pytest.LogCaptureFixture
) -> None:
    other = "2026-11-28"
    run = night_loop(
        other, night_store, night_store, prepared.ref, cfg=CFG, hash_key=HASH_KEY, browser=None
    )
    assert run.manifest is not None
    assert run.manifest["status"] == "complete"
    assert run.manifest["counts"]["inputs"] == 0
    assert any("no exports" in r.getMessage() for r in caplog.records)


def test_a_pdf_that_was_not_written_is_named_in_the_manifest(
    prepared: Prepared, night_store: LocalStore
) -> None:
    """The HTML report is published; the missing PDF is in the manifest, not only the log."""
    m = _next_run(prepared, night_store, browser="/nonexistent/chromium")
    assert m["status"] == "complete"
    assert m["report_pdf_error"] == "browser_unavailable"
    assert night_store.exists(m["report"])
    assert not any(k.endswith("/report.pdf") for k in m["outputs"])


def test_a_symlink_is_quarantined_with_its_own_code_and_carried_forward(
    prepared: Prepared, night_store: LocalStore, tmp_path: Path
) -> None:
    """Defect 7: every listed name is accounted for; a link is never followed."""
    outside = tmp_path / "secret.dcm"
    outside.write_bytes(night_store.get(_exports(night_store)[0]))
    link = night_store.root / "exports" / N / "linked.dcm"
    link.symlink_to(outside)
    key = f"exports/{N}/linked.dcm"
    first = _next_run(prepared, night_store)
    entry = next(i for i in first["inputs"] if i["key"] == key)
    assert entry["status"] == "quarantined"
    assert entry["codes"] == ["symlink_not_followed"]
    assert first["counts"]["inputs"] == len(_exports(night_store))
    second = _next_run(prepared, night_store)  # an unchanged night: nothing processed again
    assert second["counts"]["new"] == 0


def test_a_deleted_input_is_listed_as_withdrawn(
    prepared: Prepared, night_store: LocalStore
) -> None:
    """Defect 9: the next manifest says which input went and where it was last published."""
    first = _next_run(prepared, night_store)
    gone = _exports(night_store)[-1]
    (night_store.root / gone).unlink()
    second = _next_run(prepared, night_store)
    assert [w["key"] for w in second["withdrawn"]] == [gone]
    assert second["withdrawn"][0]["seen_in"] == first["run_id"]
    assert second["counts"]["withdrawn"] == 1
    assert gone not in {i["key"] for i in second["inputs"]}


class _Listing(LocalStore):
    """Lists one extra name that does not exist (deleted between the list and the get)."""

    def __init__(self, root: Path, ghost: str) -> None:
        super().__init__(root)
        self.ghost = ghost

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        yield from super().list(prefix)
        if self.ghost.startswith(prefix):
            yield ObjectInfo(self.ghost, 10, "mtime:0:10")


def test_an_object_deleted_between_list_and_get_is_not_read_not_quarantined(
    prepared: Prepared, night_store: LocalStore
) -> None:
    ghost = f"exports/{N}/zz-deleted.dcm"
    store = _Listing(night_store.root, ghost)
    run = night_loop(N, store, store, prepared.ref, cfg=CFG, hash_key=HASH_KEY, browser=None)
    assert run.manifest is not None
    assert run.manifest["storage_errors"] == {ghost: "missing_object"}
    # the next run no longer lists it: the night is complete, nothing was lost
    assert _next_run(prepared, night_store)["status"] == "complete"


def test_the_cli_refuses_a_missing_source_and_an_empty_prefix(
    prefect_api: None, prepared: Prepared, tmp_path: Path
) -> None:
    """Defect 5 at the CLI: exit 1 with the reason, and nothing created under the path."""
    from typer.testing import CliRunner

    from scintiflow.cli import app

    runner = CliRunner()
    missing = tmp_path / "no-such-exports"
    registry = str(prepared.root)
    args = ["nightly", "--source", str(missing), "--registry", registry, "--night", N]
    night = runner.invoke(app, [*args, "--engine", "onnxruntime"])
    assert night.exit_code == 1, night.output
    assert "does not exist" in night.output
    assert not missing.exists()
    empty = runner.invoke(
        app, ["score", "--input", str(tmp_path), "--registry", registry, "--night", N]
    )
    assert empty.exit_code == 1, empty.output
    assert "no_inputs" in empty.output
