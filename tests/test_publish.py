"""Atomic publish: tables, verification by writers' hashes, manifest last, latest.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scintiflow.domain import sha256_hex
from scintiflow.outputs.ledger import Outcome
from scintiflow.outputs.publish import (
    InjectedFaultError,
    PublishError,
    QuarantinedInput,
    complete_manifests,
    night_rows,
    publish_run,
    read_latest,
    verify_manifest,
)
from scintiflow.outputs.runs import latest_key
from scintiflow.storage import LocalStore

NIGHT = "2026-11-27"
MODEL = {"name": "thyroid", "version": "v1", "selector": "champion"}


def _row(store: LocalStore, run: str, key: str, label: str = "normal") -> dict[str, Any]:
    digest = sha256_hex(key.encode())
    heat = f"results/{NIGHT}/{run}/heatmaps/{digest}"
    store.put(heat + ".map.png", b"map" + key.encode())
    store.put(heat + ".overlay.png", b"overlay" + key.encode())
    return {
        "key": key,
        "sha256": digest,
        "predicted_label": label,
        "p_normal": 0.7,
        "p_graves": 0.1,
        "p_subacute_thyroiditis": 0.1,
        "p_thyroid_tumor": 0.1,
        "confidence": 0.7,
        "low_confidence": False,
        "model_version": "v1",
        "engine": "onnxruntime",
        "precision": "fp32",
        "heatmap_key": heat + ".map.png",
        "overlay_key": heat + ".overlay.png",
    }


def _written(store: LocalStore, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the writers of the rows' objects returned (key -> sha256, size)."""
    out = {}
    for r in rows:
        for key in (r["heatmap_key"], r["overlay_key"]):
            if store.exists(key):
                data = store.get(key)
                out[key] = {"sha256": sha256_hex(data), "size": len(data)}
    return out


def _publish(store: LocalStore, run: str, rows: list[dict[str, Any]], **kw: Any) -> Any:
    quarantined = kw.pop("quarantined", [])
    carried = kw.pop("carried", {})
    hashes = {r["key"]: r["sha256"] for r in rows}
    hashes |= {q.key: q.sha256 for q in quarantined}
    hashes |= {k: sha256_hex(k.encode()) for k in carried}
    kw.setdefault("outputs", _written(store, rows))
    return publish_run(
        store,
        night=NIGHT,
        run_id=run,
        rows=rows,
        quarantined=quarantined,
        carried=carried,
        hashes=hashes,
        model=MODEL,
        engine="onnxruntime",
        **kw,
    )


def test_manifest_last_covers_outputs_and_latest_points_at_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    rows = [_row(store, "r1", "exports/x/a.dcm"), _row(store, "r1", "exports/x/b.dcm", "graves")]
    q = [QuarantinedInput("exports/x/c.dcm", sha256_hex(b"c"), ("not_dicom",), "quarantine/q")]
    res = _publish(store, "r1", rows, quarantined=q)
    m = read_latest(store, NIGHT)
    assert res.manifest_key == f"results/{NIGHT}/r1/manifest.json"
    assert m["run_id"] == "r1"
    assert m["counts"]["inputs"] == 3
    assert m["counts"]["new"] == 3
    assert (m["counts"]["scored"], m["counts"]["quarantined"]) == (2, 1)
    assert m["class_counts"]["graves"] == 1
    assert m["reason_counts"] == {"not_dicom": 1}
    # every object of the run folder is listed with its hash, and they verify
    assert len(m["outputs"]) == 4 + 3  # 2 x 2 PNGs + predictions.csv/.jsonl + quarantined
    assert verify_manifest(store, m) == []
    store.put(rows[0]["overlay_key"], b"tampered")
    assert verify_manifest(store, m) == [f"changed: {rows[0]['overlay_key']}"]


def test_accounting_and_missing_heatmaps_are_refused_before_any_manifest(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    rows = [_row(store, "r1", "exports/x/a.dcm")]
    with pytest.raises(PublishError, match="accounting"):
        publish_run(
            store,
            night=NIGHT,
            run_id="r1",
            rows=rows,
            quarantined=[],
            carried={},
            hashes={"exports/x/a.dcm": "x", "exports/x/lost.dcm": "y"},
            model=MODEL,
            engine="onnxruntime",
        )
    rows[0]["overlay_key"] = f"results/{NIGHT}/r1/heatmaps/never-written.png"
    with pytest.raises(PublishError, match="missing"):
        _publish(store, "r1", rows)
    assert complete_manifests(store, NIGHT) == []


def test_fault_hook_leaves_nothing_complete(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(InjectedFaultError):
        _publish(store, "r1", [_row(store, "r1", "exports/x/a.dcm")], fail_before_manifest=True)
    assert store.exists(f"results/{NIGHT}/r1/predictions.jsonl")
    assert complete_manifests(store, NIGHT) == []
    assert not store.exists(latest_key(NIGHT))


def test_same_input_set_is_published_once(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first = _publish(store, "r1", [_row(store, "r1", "exports/x/a.dcm")])
    second = _publish(store, "r2", [_row(store, "r2", "exports/x/a.dcm")])
    assert first.manifest_key
    assert second.manifest_key is None
    assert second.superseded_by == "r1"
    assert [m["run_id"] for m in complete_manifests(store, NIGHT)] == ["r1"]
    assert read_latest(store, NIGHT)["run_id"] == "r1"


def test_carried_forward_rows_are_referenced_not_copied(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    _publish(store, "r1", [_row(store, "r1", "exports/x/a.dcm")])
    m1 = f"results/{NIGHT}/r1/manifest.json"
    carried = {"exports/x/a.dcm": Outcome("scored", NIGHT, "r1", m1, (), "normal")}
    before = {o.key for o in store.list("")}
    zero = _publish(store, "r2", [], carried=carried)
    after = {o.key for o in store.list("")}
    # its run record and manifest; latest.json is rewritten, no table or claim is written
    assert after - before == {f"results/{NIGHT}/r2/manifest.json", f"results/{NIGHT}/runs/r2.json"}
    m2 = read_latest(store, NIGHT)
    assert zero.manifest_key
    assert m2["counts"]["new"] == 0
    assert m2["predictions"] is None
    assert m2["carried_forward"] == [{"run_id": "r1", "manifest": m1, "keys": ["exports/x/a.dcm"]}]
    late = _publish(store, "r3", [_row(store, "r3", "exports/x/b.dcm")], carried=carried)
    m3 = read_latest(store, NIGHT)
    assert late.manifest_key
    assert (m3["counts"]["new"], m3["counts"]["carried_forward"]) == (1, 1)
    assert [r["key"] for r in night_rows(store, m3)] == ["exports/x/a.dcm", "exports/x/b.dcm"]


def test_latest_never_moves_back_to_an_older_run(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    _publish(store, "20261128T020000Z-bbbbbb", [_row(store, "20261128T020000Z-bbbbbb", "k/b")])
    _publish(store, "20261128T010000Z-aaaaaa", [_row(store, "20261128T010000Z-aaaaaa", "k/a")])
    assert read_latest(store, NIGHT)["run_id"] == "20261128T020000Z-bbbbbb"
