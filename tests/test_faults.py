"""[F8] Storage fault injection: a night on the moto S3 server behind a fault proxy
(`tests/faultproxy.py`) that answers 503 SlowDown, 500, 403 AccessDenied, resets
connections, stalls past the client's read timeout, starts a 3 s outage, or deletes or
replaces an object between the listing and the get.

Transient faults are ridden out by boto3's retries and the shard's re-reads; permanent ones
end the night partial (reads) or failed with no manifest (writes); a re-run with the faults
gone completes the night with 0 inputs lost and 0 published twice.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy
from test_flows import register_random_champion

from scintiflow.outputs.publish import complete_manifests, read_latest
from scintiflow.pipeline.model import ModelRef, resolve_model
from scintiflow.pipeline.night import NightConfig, night_loop
from scintiflow.sim import write_night
from scintiflow.storage import LocalStore, S3Store, StoreError

pytestmark = [pytest.mark.s3, pytest.mark.slow]

NIGHT = date(2026, 11, 27)
N = str(NIGHT)
HASH_KEY = b"test-phi-key"
CFG = NightConfig(lease_s=1.0, read_retries=2, retry_delay_s=0.5, workers=2)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    """A registry with a random-init champion in a local folder (the faults are on the bucket)."""
    registry = LocalStore(tmp_path_factory.mktemp("registry"))
    register_random_champion(registry)
    return resolve_model(registry.url, "thyroid", "champion", "onnxruntime", models_prefix="models")


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    p = FaultProxy(s3_endpoint, stall_s=2.5).start()
    yield p
    p.stop()


@pytest.fixture
def exports(s3_endpoint: str, s3_bucket: str) -> list[str]:
    """The night's 5 exports (one broken), written straight to moto."""
    direct = S3Store(s3_bucket, endpoint_url=s3_endpoint)
    write_night(direct, night=NIGHT, n=4, sites=("A",), seed=21, bad_fraction=0.25)
    return sorted(i.key for i in direct.list(f"exports/{N}/"))


def _via(proxy: FaultProxy, bucket: str) -> S3Store:
    return S3Store(bucket, endpoint_url=proxy.url, max_attempts=3, read_timeout_s=1.0)


def _night(store: S3Store, ref: ModelRef, cfg: NightConfig = CFG) -> dict[str, Any]:
    published = night_loop(N, store, store, ref, cfg=cfg, hash_key=HASH_KEY, browser=None)
    assert published.manifest is not None
    return published.manifest


def _assert_nothing_lost_or_doubled(store: S3Store, exports: list[str]) -> None:
    latest = read_latest(store, N)
    assert latest["status"] == "complete"
    assert sorted(i["key"] for i in latest["inputs"]) == exports
    assert {i["status"] for i in latest["inputs"]} <= {"scored", "quarantined"}
    own: Counter[str] = Counter()
    for m in complete_manifests(store, N):
        own.update(
            i["key"]
            for i in m["inputs"]
            if i.get("run_id") == m["run_id"] and i["status"] in ("scored", "quarantined")
        )
    assert set(own) == set(exports)
    assert max(own.values()) == 1  # published once


def _bucket_path(bucket: str, rest: str = "") -> str:
    return f"/{bucket}/{rest}"


@pytest.mark.parametrize("fault", ["slowdown", "internal", "reset", "stall"])
def test_transient_faults_on_list_get_and_put_are_retried(
    fault: str, proxy: FaultProxy, s3_bucket: str, exports: list[str], model: ModelRef
) -> None:
    proxy.add("GET", f"/{s3_bucket}", fault, times=1, query="list-type=2")
    proxy.add("GET", _bucket_path(s3_bucket, f"exports/{N}/"), fault, times=3)
    proxy.add("PUT", _bucket_path(s3_bucket, "results/"), fault, times=2)
    store = _via(proxy, s3_bucket)
    m = _night(store, model)
    assert proxy.injected[fault] == 6  # every rule fired
    assert m["status"] == "complete"
    assert m["storage_errors"] == {}
    _assert_nothing_lost_or_doubled(store, exports)


def test_a_3_second_outage_during_scoring_is_ridden_out(
    proxy: FaultProxy, s3_bucket: str, exports: list[str], model: ModelRef
) -> None:
    """Defect 4: the outage starts at the first read of an export; nothing is quarantined."""
    proxy.add("GET", _bucket_path(s3_bucket, f"exports/{N}/"), "outage", times=1)
    store = _via(proxy, s3_bucket)
    patient = NightConfig(lease_s=1.0, read_retries=2, retry_delay_s=2.0, workers=2)
    m = _night(store, model, patient)
    assert proxy.injected["reset"] >= 2  # requests were refused during the outage
    assert m["status"] == "complete"
    assert m["counts"]["storage_errors"] == 0
    assert all("s3_error" not in (i.get("codes") or []) for i in m["inputs"])
    _assert_nothing_lost_or_doubled(store, exports)


def test_a_read_that_keeps_failing_ends_the_night_partial_and_a_rerun_completes(
    proxy: FaultProxy, s3_bucket: str, exports: list[str], model: ModelRef
) -> None:
    bad = exports[0]
    proxy.add("GET", _bucket_path(s3_bucket, bad), "internal", times=10**6)
    store = _via(proxy, s3_bucket)
    m = _night(store, model)
    assert m["status"] == "partial"
    assert m["storage_errors"] == {bad: "s3_error"}
    assert list(store.list("quarantine/")) == [] or all(
        "unreadable" not in i.key for i in store.list("quarantine/")
    )
    latest = json.loads(store.get(f"results/{N}/latest.json"))
    assert latest["status"] == "partial"
    proxy.clear()
    again = _night(store, model)
    assert again["counts"]["new"] == 1  # exactly the input not read
    _assert_nothing_lost_or_doubled(store, exports)


def test_access_denied_on_write_fails_closed_and_publishes_nothing(
    proxy: FaultProxy, s3_bucket: str, exports: list[str], model: ModelRef
) -> None:
    proxy.add("PUT", _bucket_path(s3_bucket, f"results/{N}/claims/"), "deny", times=10**6)
    store = _via(proxy, s3_bucket)
    with pytest.raises(StoreError) as err:
        _night(store, model)
    assert err.value.reason == "access_denied"
    assert err.value.permanent
    assert complete_manifests(store, N) == []
    assert not store.exists(f"results/{N}/latest.json")
    assert list(store.list("state/")) == []
    proxy.clear()
    again = _night(store, model)
    assert [r["run_id"] for r in again["runs_without_manifest"]]  # the denied run, explained
    _assert_nothing_lost_or_doubled(store, exports)


def test_an_object_deleted_between_list_and_get_is_not_read_then_gone(
    proxy: FaultProxy, s3_bucket: str, exports: list[str], model: ModelRef
) -> None:
    gone = exports[-1]
    proxy.add("GET", _bucket_path(s3_bucket, gone), "delete", times=1)
    store = _via(proxy, s3_bucket)
    m = _night(store, model)
    assert m["status"] == "partial"
    assert m["storage_errors"] == {gone: "missing_object"}
    again = _night(store, model)  # the next run no longer lists it
    assert again["status"] == "complete"
    _assert_nothing_lost_or_doubled(store, exports[:-1])


def test_an_object_replaced_between_list_and_get_is_not_scored_as_listed(
    proxy: FaultProxy, s3_bucket: str, exports: list[str], model: ModelRef, tmp_path: Path
) -> None:
    """The reads are pinned to the listing's ETag (If-Match): a replaced object is a storage
    error of this run (not scored under the old listing, not quarantined); the next run lists
    the new version and scores those bytes."""
    other = LocalStore(tmp_path / "other")
    write_night(other, night=NIGHT, n=1, sites=("B",), seed=77)
    proxy.replacement = other.get(next(iter(other.list(f"exports/{N}/"))).key)
    changed = exports[0]
    proxy.add("GET", _bucket_path(s3_bucket, changed), "replace", times=1)
    store = _via(proxy, s3_bucket)
    m = _night(store, model)
    assert proxy.injected == {"replace": 1}
    assert m["status"] == "partial"
    assert m["storage_errors"] == {changed: "changed_since_listing"}
    first = next(i for i in m["inputs"] if i["key"] == changed)
    assert first["status"] == "storage_error"  # not scored as listed, not quarantined
    again = _night(store, model)
    assert again["status"] == "complete"
    entry = next(i for i in again["inputs"] if i["key"] == changed)
    assert entry["status"] == "scored"
    assert entry["sha256"] == hashlib.sha256(proxy.replacement).hexdigest()  # the new bytes
    _assert_nothing_lost_or_doubled(store, exports)


def test_the_proxy_passes_clean_traffic_unchanged(
    proxy: FaultProxy, s3_bucket: str, tmp_path: Path
) -> None:
    """The harness itself: bytes, conditional puts and ranged reads survive the proxy."""
    from scintiflow.storage import KeyExistsError

    store = _via(proxy, s3_bucket)
    blob = bytes(range(256)) * 1000
    store.put("x/blob.bin", blob)
    assert store.get("x/blob.bin") == blob
    assert store.get_range("x/blob.bin", 10, 5) == blob[10:15]
    with pytest.raises(KeyExistsError):
        store.put("x/blob.bin", b"other", if_absent=True)
    assert proxy.injected == {}


def test_the_nightly_cli_exits_3_on_a_partial_night(
    prefect_api: None,
    proxy: FaultProxy,
    s3_bucket: str,
    exports: list[str],
    model: ModelRef,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator is alerted: a night with an input not read is published partial, exit 3."""
    from typer.testing import CliRunner

    from scintiflow.cli import app
    from scintiflow.settings import get_settings
    from tasks import nightly as tasks

    monkeypatch.setenv("SCINTIFLOW_S3_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("SCINTIFLOW_S3_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("SCINTIFLOW_READ_RETRY_DELAY_S", "0.1")
    get_settings.cache_clear()
    tasks.config.cache_clear()
    proxy.add("GET", _bucket_path(s3_bucket, exports[0]), "internal", times=10**6)
    try:
        args = ["nightly", "--source", f"s3://{s3_bucket}", "--night", N]
        args += ["--registry", model.registry, "--engine", "onnxruntime"]
        result = CliRunner().invoke(app, args, env={"COLUMNS": "240"})
    finally:
        get_settings.cache_clear()
        tasks.config.cache_clear()
    assert result.exit_code == 3, result.output
    assert "partial" in result.output
    assert "1 inputs were not read" in result.output
