"""The Prefect flows, run for real under `prefect_test_harness` (ephemeral API, temp home).

Nightly: end to end with broken files (LocalStore), idempotent re-run, crash injection before
the manifest, late exports, two concurrent runs (the PHI-sentinel audit of a night and a
retrain on both stores is tests/test_phi_audit.py).
Retrain: (arch, fold) fits as separate task runs, registration and the gate's decision.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from scintiflow import CLASSES
from scintiflow.outputs.publish import (
    InjectedFaultError,
    complete_manifests,
    night_rows,
    read_latest,
    verify_manifest,
)
from scintiflow.outputs.runs import latest_key
from scintiflow.sim import write_night
from scintiflow.storage import LocalStore, ObjectStore

NIGHT = date(2026, 11, 27)
N = str(NIGHT)

pytestmark = pytest.mark.slow  # real flow runs: 10-20 s each on a shared 2-core machine


def register_random_champion(
    store: ObjectStore, *, promote: bool = True, arch: str = "shufflenet_v2", image_size: int = 64
) -> str:
    """A random-init model (ShuffleNetV2 at 64 px by default) with a real training reference
    (no training)."""
    import torch

    from scintiflow.ml.models import create_model, state_dict_bytes
    from scintiflow.ml.preprocess import PreprocessConfig
    from scintiflow.ml.registry import apply_gate, promotion_decision, register_version
    from scintiflow.ml.study import simulate_study_data, training_reference

    torch.manual_seed(0)
    model = create_model(arch).eval()
    pcfg = PreprocessConfig(image_size=image_size)
    data = simulate_study_data(0.02, seed=0)
    version = register_version(
        store,
        "thyroid",
        arch=arch,
        weights=state_dict_bytes(model),
        preprocess=pcfg.to_dict(),
        classes=CLASSES,
        temperature=1.0,
        metrics={},
        card={},
        lineage={},
        training_reference=training_reference(data.train, None, pcfg),
    )
    if promote:
        apply_gate(store, "thyroid", promotion_decision(0.9, None, candidate_version=version))
    return version


def _snapshot(store: ObjectStore) -> dict[str, bytes]:
    return {o.key: store.get(o.key) for o in store.list("")}


def _run(**kwargs: Any) -> Any:
    from flows.nightly import nightly

    return nightly(night=N, shard_size=12, batch_size=8, **kwargs, return_state=True)


def _flow_run_id(state: Any) -> UUID:
    return state.state_details.flow_run_id  # type: ignore[no-any-return]


def _faults(store: ObjectStore) -> list[dict[str, str]]:
    text = store.get(f"labels/{N}.faults.csv").decode()
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def base_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with a champion (copied per test: registering costs a second or two)."""
    from scintiflow.inference.engines import load_scoring_model, open_engine

    root = tmp_path_factory.mktemp("registry")
    store = LocalStore(root)
    register_random_champion(store)
    open_engine("onnxruntime", load_scoring_model(store, "thyroid"))  # caches model.onnx
    return root


@pytest.fixture
def store(base_store: Path, tmp_path: Path) -> LocalStore:
    import shutil

    root = tmp_path / "bucket"
    shutil.copytree(base_store, root)
    return LocalStore(root)


def _artifacts(flow_run_id: UUID) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def test_nightly_end_to_end_counts_accounting_and_artifacts(
    prefect_api: None, store: LocalStore
) -> None:
    write_night(store, night=NIGHT, n=24, sites=("A", "B"), seed=3, bad_fraction=0.2)
    inputs = [o.key for o in store.list(f"exports/{N}/")]
    state = _run(source=store.url)
    assert state.is_completed()
    summary = state.result()
    manifest = read_latest(store, N)
    counts = manifest["counts"]
    # every input accounted for, exactly once
    assert counts["inputs"] == len(inputs) == 30
    assert counts["scored"] + counts["quarantined"] == counts["inputs"]
    assert sorted(i["key"] for i in manifest["inputs"]) == sorted(inputs)
    statuses = {i["key"]: i["status"] for i in manifest["inputs"]}
    # injected faults that cannot decode are quarantined; the 24 good images are scored
    assert counts["scored"] >= 24
    for fault in _faults(store):
        if fault["fault"] in {"empty", "random_bytes", "png", "truncated_header", "not_nm"}:
            assert statuses[fault["key"]] == "quarantined", fault
    rows = night_rows(store, manifest)
    assert len(rows) == counts["scored"] == sum(manifest["class_counts"].values())
    assert all(r["model_version"] == manifest["model"]["version"] for r in rows)
    assert sum(manifest["reason_counts"].values()) >= counts["quarantined"]
    assert manifest["engine"] == "onnxruntime"
    assert manifest["code_version"]
    assert verify_manifest(store, manifest) == []
    assert manifest["drift"]["schema"] == "scintiflow.pipeline.drift/1"
    assert {"check", "score", "publish"} <= set(manifest["timings_s"])
    # outputs: every heatmap named by a row was read back and hashed into the manifest
    assert all(r["overlay_key"] in manifest["outputs"] for r in rows)
    assert summary["manifest"] == f"{summary['run_prefix']}/manifest.json"
    assert manifest["run_id"] == summary["run_id"]
    # artifacts, read back through the Prefect API
    arts = {a.key: a for a in _artifacts(_flow_run_id(state)) if a.key}
    assert {
        "nightly-progress",
        "nightly-class-counts",
        "nightly-quarantine-reasons",
        "nightly-summary",
        "nightly-manifest",
    } <= set(arts)
    assert all(k == k.lower() and " " not in k and "_" not in k for k in arts)
    assert float(arts["nightly-progress"].data) == pytest.approx(100.0)
    table = json.loads(arts["nightly-class-counts"].data)
    assert sum(r["images"] for r in table) == counts["scored"]
    reasons = json.loads(arts["nightly-quarantine-reasons"].data)
    assert {r["reason"] for r in reasons} == set(manifest["reason_counts"])
    assert f"| inputs | {counts['inputs']} |" in arts["nightly-summary"].data
    assert arts["nightly-manifest"].data.endswith(f"{summary['run_prefix']}/manifest.json)")


def test_rerun_is_idempotent_and_late_exports_carry_forward(
    prefect_api: None, store: LocalStore
) -> None:
    write_night(store, night=NIGHT, n=12, sites=("A",), seed=4, bad_fraction=0.15)
    first = _run(source=store.url).result()
    before = _snapshot(store)
    second = _run(source=store.url).result()
    after = _snapshot(store)
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in before if before[k] != after[k])
    record = f"results/{N}/runs/{second['run_id']}.json"
    assert new == sorted([f"{second['run_prefix']}/manifest.json", record])  # + its run record
    assert changed == [latest_key(N)]
    assert json.loads(store.get(record))["state"] == "done"
    assert second["new"] == 0
    assert second["carried_forward"] == first["inputs"]
    m2 = read_latest(store, N)
    assert m2["counts"]["new"] == 0
    assert m2["counts"]["inputs"] == first["inputs"]
    assert len(night_rows(store, m2)) == first["scored"]

    # late exports: only the new files are processed, the manifest covers the whole night
    write_night(store, night=NIGHT, n=5, sites=("B",), seed=99)
    late = _run(source=store.url).result()
    m3 = read_latest(store, N)
    assert late["new"] == 5
    assert late["carried_forward"] == first["inputs"]
    assert m3["counts"]["inputs"] == first["inputs"] + 5
    assert m3["counts"]["scored"] + m3["counts"]["quarantined"] == m3["counts"]["inputs"]
    rows = night_rows(store, m3)
    assert len(rows) == len({r["key"] for r in rows}) == m3["counts"]["scored"]
    assert {ref["run_id"] for ref in m3["carried_forward"]} == {first["run_id"]}
    # ... and so does its report: one worklist row per scored input of the night, the earlier
    # run's rows badged, their SC objects left where the first run wrote them
    page = store.get(m3["report"]).decode()
    row_keys = re.findall(r"<tr [^>]*data-key=\"([^\"]+)\"", page)
    assert sorted(row_keys) == sorted(r["key"] for r in rows)
    carried_scored = sum(
        1 for i in m3["inputs"] if i["status"] == "scored" and i["run_id"] == first["run_id"]
    )
    assert page.count('class="badge b-earlier"') == carried_scored
    new_sc = list(store.list(f"{late['run_prefix']}/sc/"))
    assert len(new_sc) == m3["counts"]["scored_new"]
    assert re.search(
        rf'id="count-quarantined">\s*<div class="n">{m3["counts"]["quarantined"]}<', page
    )


def test_crash_before_manifest_then_rerun_completes_without_duplicates(
    prefect_api: None, store: LocalStore
) -> None:
    write_night(store, night=NIGHT, n=10, sites=("A",), seed=6, bad_fraction=0.1)
    crashed = _run(source=store.url, fail_before_manifest=True)
    assert crashed.is_failed()
    with pytest.raises(InjectedFaultError):
        crashed.result()
    # outputs were written, but nothing looks complete: no manifest, no latest, no ledger
    assert any(k.endswith("predictions.jsonl") for k in _snapshot(store))
    assert complete_manifests(store, N) == []
    assert not store.exists(latest_key(N))
    assert list(store.list("state/ledger/")) == []
    rerun = _run(source=store.url)
    assert rerun.is_completed()
    (manifest,) = complete_manifests(store, N)
    rows = night_rows(store, manifest)
    inputs = [o.key for o in store.list(f"exports/{N}/")]
    assert len(rows) == len({r["key"] for r in rows})
    assert manifest["counts"]["scored"] + manifest["counts"]["quarantined"] == len(inputs)
    assert {i["key"] for i in manifest["inputs"]} == set(inputs)
    assert read_latest(store, N)["run_id"] == manifest["run_id"]


@pytest.mark.slow
def test_two_concurrent_runs_publish_each_input_set_once(
    prefect_api: None, store: LocalStore
) -> None:
    write_night(store, night=NIGHT, n=12, sites=("A", "B"), seed=8, bad_fraction=0.1)
    inputs = {o.key for o in store.list(f"exports/{N}/")}
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def go() -> None:
        barrier.wait()
        results.append(_run(source=store.url))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(s.is_completed() for s in results)
    manifests = complete_manifests(store, N)
    sets = Counter(m["new_input_set"] for m in manifests)
    assert all(n == 1 for n in sets.values())  # one complete manifest per distinct input set
    own_rows: list[str] = []
    for m in manifests:
        if m["predictions"]:
            own_rows += [
                json.loads(line)["key"]
                for line in store.get(m["predictions"]["jsonl"]).decode().splitlines()
            ]
    assert len(own_rows) == len(set(own_rows))  # no input scored in two published runs
    latest = read_latest(store, N)
    assert {i["key"] for i in latest["inputs"]} == inputs
    rows = night_rows(store, latest)
    assert len(rows) == len({r["key"] for r in rows}) == latest["counts"]["scored"]
    losers = [s.result() for s in results if s.result()["manifest"] is None]
    assert all(r["superseded_by"] for r in losers)


def _task_run_names(flow_run_id: UUID) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return sorted(r.name for r in runs)


@pytest.mark.slow
def test_retrain_fits_folds_as_tasks_registers_and_gates(prefect_api: None, tmp_path: Path) -> None:
    from flows.retrain import retrain
    from scintiflow.ml.registry import champion_version, list_versions

    store = LocalStore(tmp_path / "bucket")
    train_night, ext_night = date(2026, 11, 1), date(2026, 11, 2)
    write_night(store, night=train_night, n=72, sites=("A", "B"), seed=1, difficulty=0.0)
    write_night(store, night=ext_night, n=24, sites=("C",), seed=2, difficulty=0.0)
    common: dict[str, Any] = {
        "data": store.url,
        "labels": store.url_for(f"labels/{train_night}.csv"),
        "external_data": store.url,
        "external_labels": store.url_for(f"labels/{ext_night}.csv"),
        "archs": ["shufflenet_v2"],
        "folds": 2,
        "epochs": 6,
        "image_size": 64,
        "floor": 0.0,
        "n_boot": 50,
    }
    state = retrain(**common, return_state=True)
    first = state.result()
    names = _task_run_names(_flow_run_id(state))
    assert [n for n in names if n.startswith("fit-")] == [
        "fit-shufflenet_v2-fold-0",
        "fit-shufflenet_v2-fold-1",
    ]
    assert first["promoted"]
    assert first["decision"]["reason"] == "no_champion_above_floor"
    assert champion_version(store, "thyroid") == first["version"]
    assert "shufflenet_v2 *" in first["table"]
    arts = {a.key: a for a in _artifacts(_flow_run_id(state)) if a.key}
    assert {"retrain-folds", "retrain-comparison", "retrain-gate"} <= set(arts)
    assert "promoted to champion" in arts["retrain-gate"].data
    assert len(json.loads(arts["retrain-folds"].data)) == 2
    # The final fit staged its weights for the registering task; those are what got registered.
    assert "final-fit-shufflenet_v2" in names
    staged = sorted(o.key for o in store.list("models/thyroid/staging/"))
    assert [k.rsplit("/", 2)[-2:] for k in staged] == [
        ["shufflenet_v2", "predictions.json"],
        ["shufflenet_v2", "weights.pt"],
    ]
    assert store.get(staged[1]) == store.get(f"models/thyroid/{first['version']}/weights.pt")

    # a deliberately worse config (the weights never move) is registered but not promoted
    worse = retrain(**{**common, "lr": 0.0, "epochs": 5, "folds": 0})
    assert worse["version"] in list_versions(store, "thyroid")
    assert not worse["promoted"]
    assert worse["decision"]["reason"] == "worse_than_champion"
    assert worse["decision"]["champion_accuracy"] > worse["decision"]["candidate_accuracy"]
    assert champion_version(store, "thyroid") == first["version"]


def test_cli_nightly_and_drift_print_where_outputs_are(
    prefect_api: None, store: LocalStore
) -> None:
    from typer.testing import CliRunner

    from scintiflow.cli import app

    write_night(store, night=NIGHT, n=10, sites=("A", "C"), seed=21, bad_fraction=0.1)
    runner = CliRunner()
    res = runner.invoke(app, ["nightly", "--source", str(store.root), "--night", N])
    assert res.exit_code == 0, res.output
    manifest = read_latest(store, N)
    assert f"manifest:    {store.url_for(_manifest_key(manifest))}" in res.output
    assert f"{manifest['counts']['inputs']} inputs = {manifest['counts']['scored']} scored" in (
        res.output
    )
    res = runner.invoke(app, ["drift", "--input", str(store.root), "--night", N])
    assert res.exit_code == 0, res.output
    assert "intensity_histogram" in res.output
    assert "PSI" in res.output
    # the night mixes in site C (256 px matrices), which the reference (A, B) never saw
    assert "matrix" in res.output
    assert "drift" in res.output


def _manifest_key(manifest: dict[str, Any]) -> str:
    return f"results/{manifest['night']}/{manifest['run_id']}/manifest.json"


@pytest.mark.slow
def test_demo_tells_the_whole_story(prefect_api: None, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scintiflow.cli import app

    out = tmp_path / "var"
    res = CliRunner().invoke(
        app,
        ["demo", "--out", str(out), "--n", "6", "--train-images", "48", "--epochs", "1"],
    )
    assert res.exit_code == 0, res.output
    store = LocalStore(out)
    runs = complete_manifests(store, N)
    assert len(runs) == 2  # tonight, then the late exports
    first, second = runs
    assert second["counts"]["new"] == 4
    assert second["counts"]["carried_forward"] == first["counts"]["inputs"]
    assert second["model"]["note"]  # no champion: latest version, and it says so
    assert "no champion has been promoted" in res.output
    assert f"latest.json: {store.url_for(latest_key(N))}" in res.output
    assert f"predictions: {store.url_for(first['predictions']['csv'])}" in res.output
    assert "data docs:" in res.output
    assert "heatmaps:" in res.output
    assert "gate: not promoted (below_floor)" in res.output
    for m in runs:
        assert f"report:      {store.url_for(m['report'])}" in res.output
        assert store.exists(m["report"].replace("report.html", "report.pdf"))
        assert m["report_pdf_error"] is None
        assert m["report_pdf_studies"] == m["counts"]["scored"]  # a small night: every row
    # flows.demo.run_demo tells its observer each step as it runs: the CLI narrates them in
    # order, each step's rule before what the step did
    rules = [
        "1. simulate a labelled training set",
        "2. retrain flow",
        "3. simulate tonight's exports",
        "4. nightly flow",
        "5. late exports arrive",
        "where everything is",
    ]
    at = [res.output.index(rule) for rule in rules]
    assert at == sorted(at)
    assert at[4] < res.output.index("wrote 4 late exports") < at[5]
    # one printed summary per nightly run (Prefect's log lines start with a timestamp)
    summaries = [line for line in res.output.splitlines() if line.startswith(f"night {N} run ")]
    assert [line.split()[3].rstrip(":") for line in summaries] == [m["run_id"] for m in runs]
    assert at[3] < res.output.index(summaries[0]) < at[4] < res.output.index(summaries[1]) < at[5]


@pytest.mark.slow
def test_flow_and_plain_loop_give_the_same_night(prefect_api: None, store: LocalStore) -> None:
    """`nightly.run_night` (the benchmark's baseline, no Prefect) and the flow agree."""
    import shutil

    from scintiflow.pipeline.night import run_night
    from scintiflow.settings import get_settings

    write_night(store, night=NIGHT, n=10, sites=("A", "B"), seed=31, bad_fraction=0.15)
    twin = LocalStore(Path(str(store.root) + "-twin"))
    shutil.copytree(store.root, twin.root)
    flow_summary = _run(source=store.url).result()
    plain = run_night(N, twin.url, shard_size=12, batch_size=8, settings=get_settings())
    a, b = read_latest(store, N), plain.manifest
    assert b is not None
    assert flow_summary["manifest"]
    for field in ("counts", "class_counts", "reason_counts", "inputs"):
        strip = (
            (lambda v: [{k: x for k, x in i.items() if k != "run_id"} for i in v])
            if field == "inputs"
            else (lambda v: v)
        )
        assert strip(a[field]) == strip(b[field]), field
    rows_a = {r["key"]: r["predicted_label"] for r in night_rows(store, a)}
    assert rows_a == {r["key"]: r["predicted_label"] for r in night_rows(twin, b)}
