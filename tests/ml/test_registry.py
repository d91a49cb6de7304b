"""Model registry: round-trip, immutability, completeness marker, champion pointer and gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scintiflow import CLASSES
from scintiflow.ml.registry import (
    RegistryError,
    apply_gate,
    champion_record,
    champion_version,
    list_decisions,
    list_versions,
    load_model,
    load_weights,
    promotion_decision,
    read_version,
    register_version,
)
from scintiflow.settings import Settings
from scintiflow.storage import KeyExistsError, ObjectStore, open_store

PREPROCESS = {"image_size": 64, "clip_percentile": 99.5, "channels": 1, "version": 1}


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return open_store(tmp_path / "bucket", settings=Settings())
    bucket = request.getfixturevalue("s3_bucket")
    settings = request.getfixturevalue("s3_settings")
    return open_store(f"s3://{bucket}/reg", settings=settings)


def _register(store: ObjectStore, weights: bytes = b"w", **kw: Any) -> str:
    args: dict[str, Any] = {
        "arch": "shufflenet_v2",
        "weights": weights,
        "preprocess": PREPROCESS,
        "classes": CLASSES,
        "temperature": 1.7,
        "metrics": {"external": {"accuracy": 0.91, "macro_auc": float("nan")}},
        "card": {"intended_use": "decision support"},
        "lineage": {"labels_sha256": "0" * 64, "inputs": ["1" * 64], "code_version": "0.1.0"},
        "training_reference": {"mean_total_counts": 1.5e5, "class_prior": [0.4, 0.3, 0.2, 0.1]},
    }
    args.update(kw)
    return register_version(store, "thyroid", **args)


def test_roundtrip_restores_the_same_logits(store: ObjectStore) -> None:
    import torch

    from scintiflow.ml.models import create_model, state_dict_bytes

    torch.manual_seed(0)
    model = create_model("shufflenet_v2", num_classes=4, weights="none").eval()
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        expected = model(x)
    version = _register(
        store,
        weights=state_dict_bytes(model),
        card_md="# card\n",
        extra_files={"report.html": b"<html></html>", "plots/roc.png": b"png"},
    )
    torch.manual_seed(123)  # a fresh init differs: the loaded weights must be what matters
    loaded, meta = load_model(store, "thyroid", version)
    assert not loaded.training
    with torch.no_grad():
        got = loaded(x)
    assert torch.allclose(got, expected, atol=0, rtol=0)
    assert meta.version == version
    assert meta.arch == "shufflenet_v2"
    assert meta.classes == CLASSES
    assert meta.temperature == 1.7
    assert meta.preprocess == PREPROCESS
    assert meta.metrics["external"] == {"accuracy": 0.91, "macro_auc": None}  # NaN -> null
    assert meta.lineage["labels_sha256"] == "0" * 64
    assert meta.training_reference["mean_total_counts"] == 1.5e5
    base = f"models/thyroid/{version}"
    assert store.get(f"{base}/card.md") == b"# card\n"
    assert store.get(f"{base}/plots/roc.png") == b"png"
    marker = json.loads(store.get(f"{base}/version.json"))
    assert set(marker["files"]) >= {"weights.pt", "card.json", "report.html", "plots/roc.png"}
    assert read_version(store, "thyroid", "latest") == meta


def test_versions_are_immutable(store: ObjectStore) -> None:
    version = _register(store, version="v20260101T000000Z-aaaaaa")
    with pytest.raises(KeyExistsError):
        _register(store, weights=b"other", version=version)
    assert load_weights(store, "thyroid", version) == b"w"
    # Fresh ids are unique and sort by creation time.
    ids = [_register(store) for _ in range(3)]
    assert len(set(ids)) == 3
    assert list_versions(store, "thyroid")[0] == version
    assert set(list_versions(store, "thyroid")) == {version, *ids}


def test_incomplete_version_is_invisible(store: ObjectStore) -> None:
    done = _register(store, version="v20260101T000000Z-aaaaaa")
    # A crashed write: files but no version.json.
    store.put("models/thyroid/v20270101T000000Z-bbbbbb/weights.pt", b"partial")
    assert list_versions(store, "thyroid") == [done]
    assert read_version(store, "thyroid", "latest").version == done
    with pytest.raises(RegistryError) as info:
        read_version(store, "thyroid", "v20270101T000000Z-bbbbbb")
    assert info.value.reason == "incomplete_version"
    with pytest.raises(RegistryError) as info:
        load_weights(store, "thyroid", "v20270101T000000Z-bbbbbb")
    assert info.value.reason == "incomplete_version"
    decision = promotion_decision(0.99, None, candidate_version="v20270101T000000Z-bbbbbb")
    with pytest.raises(RegistryError):
        apply_gate(store, "thyroid", decision)
    assert champion_version(store, "thyroid") is None


def test_lookup_errors_have_reasons(store: ObjectStore) -> None:
    for version, reason in [
        ("champion", "no_champion"),
        ("latest", "no_versions"),
        ("v20990101T000000Z-000000", "version_not_found"),
        ("../x", "invalid_version"),
    ]:
        with pytest.raises(RegistryError) as info:
            read_version(store, "thyroid", version)
        assert info.value.reason == reason
    with pytest.raises(RegistryError) as info:
        read_version(store, "Bad Name")
    assert info.value.reason == "invalid_name"
    with pytest.raises(RegistryError) as info:
        _register(store, extra_files={"version.json": b"{}"})
    assert info.value.reason == "reserved_file"


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    store = open_store(tmp_path, settings=Settings())
    version = _register(store)
    (tmp_path / "models/thyroid" / version / "weights.pt").write_bytes(b"evil")
    with pytest.raises(RegistryError) as info:
        load_weights(store, "thyroid", version)
    assert info.value.reason == "weights_checksum_mismatch"


@pytest.mark.parametrize(
    ("candidate", "champion", "promote", "reason"),
    [
        (0.90, None, True, "no_champion_above_floor"),
        (0.80, None, False, "below_floor"),
        (0.93, 0.92, True, "better_or_equal_than_champion"),
        (0.92, 0.92, True, "better_or_equal_than_champion"),
        (0.91, 0.92, False, "worse_than_champion"),
        (0.84, 0.80, False, "below_floor"),  # beating a weak champion is not enough
        (float("nan"), None, False, "invalid_accuracy"),
    ],
)
def test_promotion_rules(
    candidate: float, champion: float | None, promote: bool, reason: str
) -> None:
    d = promotion_decision(
        candidate,
        champion,
        candidate_version="v2",
        champion_version=None if champion is None else "v1",
        external_set="sha256:abc",
    )
    assert (d.promote, d.reason) == (promote, reason)
    assert d.floor == 0.85
    assert d.external_set == "sha256:abc"


def test_floor_is_configurable() -> None:
    assert promotion_decision(0.80, None, floor=0.75).promote
    assert not promotion_decision(0.80, None, floor=0.9).promote


def test_gate_promotes_rejects_and_records_every_decision(store: ObjectStore) -> None:
    v1 = _register(store, version="v20260101T000000Z-aaaaaa")
    v2 = _register(store, version="v20260201T000000Z-bbbbbb")
    v3 = _register(store, version="v20260301T000000Z-cccccc")
    v4 = _register(store, version="v20260401T000000Z-dddddd")

    d1 = apply_gate(store, "thyroid", promotion_decision(0.90, None, candidate_version=v1))
    assert d1.promote
    assert champion_version(store, "thyroid") == v1
    assert read_version(store, "thyroid").version == v1  # "champion" is the default

    d2 = apply_gate(
        store,
        "thyroid",
        promotion_decision(0.89, 0.90, candidate_version=v2, champion_version=v1),
    )
    assert not d2.promote
    assert d2.reason == "worse_than_champion"
    assert champion_version(store, "thyroid") == v1

    d3 = apply_gate(store, "thyroid", promotion_decision(0.70, None, candidate_version=v3))
    assert not d3.promote
    assert d3.reason == "below_floor"

    d4 = apply_gate(
        store,
        "thyroid",
        promotion_decision(
            0.93, 0.90, candidate_version=v4, champion_version=v1, external_set="ext-1"
        ),
    )
    assert d4.promote
    assert champion_version(store, "thyroid") == v4
    record = champion_record(store, "thyroid")
    assert record is not None
    assert record["accuracy"] == 0.93
    assert record["previous"] == v1
    assert record["external_set"] == "ext-1"
    assert record["reason"] == d4.reason

    # A decision taken against a stale champion is not applied.
    stale = promotion_decision(0.95, 0.90, candidate_version=v3, champion_version=v1)
    d5 = apply_gate(store, "thyroid", stale)
    assert not d5.promote
    assert d5.reason == "champion_changed"
    assert champion_version(store, "thyroid") == v4

    recorded = list_decisions(store, "thyroid")
    assert [(r["candidate_version"], r["promote"], r["reason"]) for r in recorded] == [
        (v1, True, "no_champion_above_floor"),
        (v2, False, "worse_than_champion"),
        (v3, False, "below_floor"),
        (v4, True, "better_or_equal_than_champion"),
        (v3, False, "champion_changed"),
    ]
    # Decisions live beside the versions but are never mistaken for one.
    assert list_versions(store, "thyroid") == [v1, v2, v3, v4]


def test_models_prefix_is_respected(tmp_path: Path) -> None:
    store = open_store(tmp_path, settings=Settings())
    version = _register(store, models_prefix="registry/models")
    assert store.exists(f"registry/models/thyroid/{version}/version.json")
    assert list_versions(store, "thyroid") == []
    assert list_versions(store, "thyroid", models_prefix="registry/models") == [version]
