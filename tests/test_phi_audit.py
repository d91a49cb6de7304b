"""PHI audit, end to end: sentinel identifiers go in, and come out only where intended.

On each store (a folder, and S3 through moto's server), `scintiflow simulate --phi-sentinel`
writes a labelled training night and tonight's exports (broken files included) carrying
fixed sentinel identifiers (patient name, ID, accession, birth date, address; the training
labels' patient IDs are built from the sentinel ID too), then the CLI's `retrain` and
`nightly` verbs run the real flows against the session's Prefect API (`prefect_api`, with
every result persisted for the test). Then everything the runs left is scanned:

- every object key in the store, and every object body except the inputs (`exports/`, the
  test's `labels/`, the quarantine's copies of rejected exports) and the clinician
  deliverables that name the patient by design (the run's `report.html` / `report.pdf` and
  the DICOM Secondary Captures under `sc/`);
- every log record captured in the process (caplog at DEBUG), and the CLI's output;
- through the Prefect API: the test's flow runs and their task runs (parameters, state, and
  each state's message in its history), their artifacts, and every log written since the
  test started;
- every persisted result file.

No sentinel may appear anywhere (case-insensitive; the birth date also as an ISO date). The
scan proves it covered things (counts > 0) and that it can see a sentinel at all (the
exports and the clinician report do hold them).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from scintiflow.cli import app
from scintiflow.sim import PHI_SENTINELS, SENTINEL_BIRTH_DATE, SENTINEL_PATIENT_ID
from scintiflow.storage import ObjectStore, open_store

pytestmark = pytest.mark.slow  # two real retrain + nightly runs

TRAIN_NIGHT = date(2026, 11, 2)
NIGHT = date(2026, 11, 27)
NEEDLES = tuple(
    s.lower()
    for s in (
        *PHI_SENTINELS,
        f"{SENTINEL_BIRTH_DATE[:4]}-{SENTINEL_BIRTH_DATE[4:6]}-{SENTINEL_BIRTH_DATE[6:]}",
    )
)
PAGE = 200  # the API's page size
TRAIN_SIM = [  # the smallest labelled set the retrain's patient-disjoint splits accept
    *("--n", "24", "--sites", "A,B", "--seed", "1", "--difficulty", "0", "--phi-sentinel"),
]
TONIGHT_SIM = [
    *("--n", "8", "--sites", "A", "--seed", "12", "--bad-fraction", "0.2", "--phi-sentinel"),
]
SMALL_FIT = [
    *("--archs", "shufflenet_v2", "--folds", "0", "--epochs", "1", "--image-size", "64"),
    *("--batch-size", "8", "--floor", "0.0", "--device", "cpu"),
]  # the smallest retrain: one fit, no CV


@pytest.fixture(scope="module", autouse=True)
def _prefect_logging_configured() -> None:
    """Prefect configures logging (dictConfig: the root logger's handlers are replaced) when
    `prefect.main` is first imported; do it before the test, where it would drop caplog's
    handler."""
    import_module("prefect.main")


@pytest.fixture
def prefect_results(prefect_api: None, tmp_path: Path) -> Iterator[Path]:
    """Every task and flow result persisted, under a folder of this test (yielded)."""
    from prefect.settings import (
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_RESULTS_PERSIST_BY_DEFAULT,
        temporary_settings,
    )

    results = tmp_path / "prefect-results"
    with temporary_settings(
        updates={PREFECT_RESULTS_PERSIST_BY_DEFAULT: True, PREFECT_LOCAL_STORAGE_PATH: results}
    ):
        yield results


@pytest.fixture
def fresh_caches() -> Iterator[None]:
    """Settings and per-process store caches read again (the S3 endpoint comes from env)."""
    from scintiflow.pipeline.model import store_for
    from scintiflow.settings import get_settings

    get_settings.cache_clear()
    store_for.cache_clear()
    yield
    get_settings.cache_clear()
    store_for.cache_clear()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_caches: None,
) -> str:
    """The store under audit: a folder, or a prefix in a fresh bucket on the moto server."""
    if request.param == "local":
        return str(tmp_path / "bucket")
    endpoint: str = request.getfixturevalue("s3_endpoint")
    bucket: str = request.getfixturevalue("s3_bucket")
    monkeypatch.setenv("SCINTIFLOW_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("SCINTIFLOW_S3_MAX_ATTEMPTS", "2")
    return f"s3://{bucket}/site"


def _found(text: str | bytes) -> list[str]:
    """The sentinels in `text` (case-insensitive)."""
    low = text.lower() if isinstance(text, str) else text.decode("latin-1").lower()
    return [n for n in NEEDLES if n in low]


def _sentinel_training_labels(store: ObjectStore, key: str) -> None:
    """Give the sentinel night's labels one patient per row (the splits are patient-disjoint),
    each ID built from the sentinel ID, so a leaked label patient ID is still caught."""
    rows = list(csv.DictReader(io.StringIO(store.get(key).decode())))
    assert rows
    assert all(r["patient_id"] == SENTINEL_PATIENT_ID for r in rows)
    for i, row in enumerate(rows):
        row["patient_id"] = f"{SENTINEL_PATIENT_ID}-{i}"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    store.put(key, out.getvalue().encode())


def _intended_to_hold_phi(key: str) -> bool:
    """Inputs, and the clinician deliverables that name the patient by design ([F6])."""
    if key.startswith(("exports/", "labels/")):
        return True  # the inputs (and the test's ground truth)
    if key.startswith("quarantine/") and not key.endswith(".reason.json"):
        return True  # a rejected export, kept byte for byte
    parts = key.split("/")
    in_run = key.startswith("results/") and len(parts) >= 4
    return in_run and (parts[-1] in ("report.html", "report.pdf") or parts[-2] == "sc")


def _paged(read: Callable[[int, int], list[Any]]) -> list[Any]:
    items: list[Any] = []
    while True:
        page = read(PAGE, len(items))
        items += page
        if len(page) < PAGE:
            return items


def _prefect_api_texts(since: datetime) -> dict[str, list[str]]:
    """Every flow run started since `since`, its task runs (with each state of their
    histories), artifacts and logs, and every log written since, as JSON texts by kind (the
    session's API also holds other tests' runs)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterStartTime,
        LogFilter,
        LogFilterTimestamp,
    )

    with get_client(sync_client=True) as client:
        recent = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since))
        flow_runs = _paged(
            lambda n, at: client.read_flow_runs(flow_run_filter=recent, limit=n, offset=at)
        )
        ids = FlowRunFilterId(any_=[r.id for r in flow_runs])
        task_runs = _paged(
            lambda n, at: client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=ids), limit=n, offset=at
            )
        )
        by_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids.any_))
        artifacts = _paged(
            lambda n, at: client.read_artifacts(artifact_filter=by_run, limit=n, offset=at)
        )
        since_logs = LogFilter(timestamp=LogFilterTimestamp(after_=since))
        logs = _paged(lambda n, at: client.read_logs(log_filter=since_logs, limit=n, offset=at))
        states = [s for r in flow_runs for s in client.read_flow_run_states(r.id)]
        states += [s for r in task_runs for s in client.read_task_run_states(r.id)]
    return {
        "flow_runs": [r.model_dump_json() for r in flow_runs],
        "task_runs": [r.model_dump_json() for r in task_runs],
        "states": [s.model_dump_json() for s in states],
        "artifacts": [a.model_dump_json() for a in artifacts],
        "logs": [log.model_dump_json() for log in logs],
    }


def _invoke(runner: CliRunner, args: list[str]) -> str:
    res = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return res.output


def test_sentinel_identifiers_reach_no_key_object_log_or_prefect_record(
    prefect_results: Path, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    since = datetime.now(UTC)
    runner = CliRunner()
    store = open_store(store_url)
    for night, args in ((TRAIN_NIGHT, TRAIN_SIM), (NIGHT, TONIGHT_SIM)):
        out = _invoke(runner, ["simulate", "--out", store_url, "--night", str(night), *args])
        assert "wrote" in out
    labels_key = f"labels/{TRAIN_NIGHT}.csv"
    _sentinel_training_labels(store, labels_key)
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="prefect"):
        retrain_out = _invoke(
            runner,
            ["retrain", "--data", store_url, "--labels", store.url_for(labels_key), *SMALL_FIT],
        )
        nightly_out = _invoke(runner, ["nightly", "--source", store_url, "--night", str(NIGHT)])
    assert "registered:" in retrain_out
    assert "manifest:" in nightly_out

    # the scanner can see a sentinel: the inputs hold every one, the report names the patient
    exports = b"".join(store.get(o.key) for o in store.list(f"exports/{NIGHT}/"))
    assert len(_found(exports)) == len(NEEDLES) - 1  # the ISO birth date is only a variant
    reports = [o.key for o in store.list("results/") if o.key.endswith("/report.html")]
    assert reports
    assert all(_found(store.get(k)) for k in reports)

    leaks: list[str] = []
    keys = [o.key for o in store.list("")]
    scanned = [k for k in keys if not _intended_to_hold_phi(k)]
    leaks += [f"key {k}" for k in keys if _found(k)]
    leaks += [f"object {k}: {_found(store.get(k))}" for k in scanned if _found(store.get(k))]
    assert any(k.startswith("models/") for k in scanned)  # the registry, training report
    assert any(k.endswith("/manifest.json") for k in scanned)
    assert any(k.startswith("state/ledger/") for k in scanned)
    assert any(k.endswith(".reason.json") for k in scanned)

    assert caplog.records
    leaks += [
        f"log record {r.name}: {r.getMessage()[:200]}"
        for r in caplog.records
        if _found(r.getMessage())
    ]
    leaks += [f"captured log text: {_found(caplog.text)}"] if _found(caplog.text) else []
    leaks += [f"CLI output: {_found(out)}" for out in (retrain_out, nightly_out) if _found(out)]

    api = _prefect_api_texts(since)
    assert len(api["flow_runs"]) == 2  # retrain and nightly
    assert all(api[kind] for kind in api), {kind: len(v) for kind, v in api.items()}
    leaks += [
        f"Prefect {kind}: {_found(t)}" for kind, texts in api.items() for t in texts if _found(t)
    ]

    results = [p for p in prefect_results.rglob("*") if p.is_file()]
    assert results  # persisted task and flow results
    leaks += [f"persisted result {p.name}" for p in results if _found(p.read_bytes())]
    assert leaks == []
