"""The protocol runner end to end on a LocalStore: data, CV without leaks, registry, gate."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import scintiflow.ml.evaluation
from scintiflow import CLASSES
from scintiflow.cli import app
from scintiflow.ml.preprocess import PreprocessConfig, preprocess_batch
from scintiflow.ml.study import (
    STUDY_SHAPE,
    StudyDataError,
    load_study_data,
    patient_holdout,
    protocol,
    read_labels_csv,
    run_study,
    simulate_study_data,
    simulated_reader_reads,
    study_table,
)
from scintiflow.ml.study.fitting import inner_split
from scintiflow.ml.training import TrainConfig
from scintiflow.sim import write_night
from scintiflow.storage import LocalStore

TINY = TrainConfig(epochs=1, image_size=32, batch_size=16, seed=0)


def _groups(part: list[Any]) -> set[str]:
    return {im.group for im in part}


def test_simulated_study_has_the_studys_shape_and_no_shared_patients() -> None:
    data = simulate_study_data(0.04, seed=3)
    counts = data.counts()
    ab = STUDY_SHAPE["train"] + STUDY_SHAPE["internal"]
    assert counts["train"]["n"] + counts["internal"]["n"] == round(ab * 0.04)
    assert counts["external"]["n"] == round(STUDY_SHAPE["external"] * 0.04)
    share = counts["internal"]["n"] / round(ab * 0.04)
    assert abs(share - STUDY_SHAPE["internal"] / ab) < 0.06
    assert set(counts["train"]["sites"]) <= {"A", "B"}
    assert set(counts["external"]["sites"]) == {"C"}
    assert not _groups(data.train) & _groups(data.internal)
    assert not _groups(data.external) & (_groups(data.train) | _groups(data.internal))
    # Keys and groups never carry the simulator's patient IDs.
    assert not any("SIM-" in im.key or "SIM-" in im.group for im in data.train)


def test_holdouts_keep_patients_whole_and_classes_present() -> None:
    rng = np.random.default_rng(0)
    groups = [f"p{i // 2}" for i in range(400)]  # two images per patient
    y = [int(rng.integers(4)) for _ in range(200) for _ in range(2)]
    rest, hold = patient_holdout(groups, y, 0.2, seed=1)
    g = np.array(groups)
    assert not set(g[rest]) & set(g[hold])
    assert sorted(np.concatenate([rest, hold]).tolist()) == list(range(400))
    assert 0.15 < hold.size / 400 < 0.25
    assert set(np.array(y)[hold]) == {0, 1, 2, 3}
    fit_idx, val_idx = inner_split(np.array(y), g, seed=2)
    assert not set(g[fit_idx]) & set(g[val_idx])


@pytest.fixture
def spy_folds(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Record the folds the protocol asks for and the patients each fit trains on."""
    seen: dict[str, list[Any]] = {"folds": [], "fits": []}
    real_folds = scintiflow.ml.evaluation.patient_grouped_folds
    real_fit = protocol.fit_model

    def folds(*args: Any, **kwargs: Any) -> Any:
        out = real_folds(*args, **kwargs)
        seen["folds"].append((np.asarray(args[1] if len(args) > 1 else kwargs["groups"]), out))
        return out

    def fit_model(arch: str, images: Any, y: Any, groups: np.ndarray, **kwargs: Any) -> Any:
        seen["fits"].append((kwargs["fold"], set(groups.tolist())))
        return real_fit(arch, images, y, groups, **kwargs)

    monkeypatch.setattr(scintiflow.ml.evaluation, "patient_grouped_folds", folds)
    monkeypatch.setattr(protocol, "fit_model", fit_model)
    return seen


@pytest.mark.slow
def test_run_study_end_to_end(tmp_path: Path, spy_folds: dict[str, list[Any]]) -> None:
    data = simulate_study_data(0.03, seed=0)
    store = LocalStore(tmp_path / "registry")
    reads = simulated_reader_reads(data)
    first = run_study(
        data,
        store,
        archs=("shufflenet_v2",),
        folds=2,
        train_config=TINY,
        reads=reads,
        floor=0.0,
        n_boot=50,
    )
    # CV: every fold trains only on patients outside its held-out part. Each fold fit asks
    # for the folds itself (a step may run in another process): always the same folds.
    (groups, folds), *again = spy_folds["folds"]
    assert len(again) == 1
    for other_groups, other in again:
        assert np.array_equal(other_groups, groups)
        assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other, strict=True))
    fits = dict(spy_folds["fits"])
    assert set(fits) == {0, 1, None}
    for k, (_train_idx, val_idx) in enumerate(folds):
        assert not fits[k] & set(groups[val_idx].tolist())
    assert fits[None] == _groups(data.train)  # the final fit sees the whole training set
    assert not fits[None] & (_groups(data.internal) | _groups(data.external))

    result = first.result
    arch = result.arch("shufflenet_v2")
    assert len(arch.folds) == 2
    assert sum(f.n for f in arch.folds) == len(data.train)
    assert arch.internal is not None
    assert arch.internal.n == len(data.internal)
    assert arch.external is not None
    assert arch.external.n == len(data.external)
    assert {r["reader_id"] for r in result.readers} == {"simulated-junior", "simulated-senior"}
    assert {r["set"] for r in result.readers} == {"internal", "external"}
    assert "shufflenet_v2 *" in study_table(result)
    assert result.config["train"]["lr"] == {"shufflenet_v2": 2e-3}  # the arch's default

    # The version folder holds the model, its preprocessing, lineage and the report.
    from scintiflow.ml.registry import champion_version, load_model, read_version

    base = f"models/thyroid/{first.version}"
    for name in ("weights.pt", "preprocess.json", "lineage.json", "report.html", "report.md"):
        assert store.exists(f"{base}/{name}"), name
    meta = read_version(store, "thyroid", first.version)
    assert PreprocessConfig.from_dict(meta.preprocess) == PreprocessConfig(image_size=32)
    assert len(meta.lineage["input_hashes"]) == len(data.train)
    assert meta.lineage["labels_sha256"] == data.labels_sha256
    assert abs(sum(meta.training_reference["prediction_mix"].values()) - 1) < 1e-9
    assert first.decision.promote
    assert first.decision.reason == "no_champion_above_floor"
    assert champion_version(store, "thyroid") == first.version

    # The registered model, with its own preprocessing and temperature, reproduces the study.
    model, meta = load_model(store, "thyroid", first.version)
    internal = next(e for e in arch.eval_sets if e.name == "internal")
    x = preprocess_batch([im.pixels for im in data.internal], PreprocessConfig(**meta.preprocess))
    from scintiflow.ml.evaluation import softmax
    from scintiflow.ml.training import predict_logits

    probs = softmax(predict_logits(model, x), meta.temperature)
    assert np.allclose(probs, internal.probs, atol=1e-5)

    # A second run is gated against the champion re-scored on the SAME external set.
    second = run_study(
        data, store, archs=("shufflenet_v2",), folds=0, train_config=TINY, floor=0.0, n_boot=20
    )
    assert second.decision.champion_version == first.version
    assert second.decision.champion_accuracy == pytest.approx(arch.external.accuracy, abs=1e-9)
    expected = second.decision.candidate_accuracy >= arch.external.accuracy
    assert second.decision.promote == expected
    assert champion_version(store, "thyroid") == (second.version if expected else first.version)

    # No simulated patient ID reaches any stored object.
    patient_ids = set(_patient_ids(data))
    for info in store.list(""):
        blob = store.get(info.key)
        assert not any(pid.encode() in blob for pid in patient_ids), info.key


def _patient_ids(data: Any) -> set[str]:
    from scintiflow.sim import simulate_cases

    src = data.source
    n_ab = len(data.train) + len(data.internal)
    cases = simulate_cases(n_ab, sites=src["internal_sites"], seed=src["seed"])
    cases += simulate_cases(len(data.external), sites=src["external_sites"], seed=src["seed"] + 1)
    return {c.patient_id for c in cases}


def _labels_csv(rows: list[tuple[str, str, str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("key", "label", "patient_id", "site"))
    writer.writerows(rows)
    return buf.getvalue().encode()


def test_load_study_data_skips_undecodable_files_with_reasons(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    summary = write_night(store, night=date(2026, 11, 27), n=30, sites=("A", "B"), seed=4)
    rows = list(csv.reader(io.StringIO(store.get(summary.labels_key).decode())))[1:]
    store.put("exports/2026-11-27/junk.dcm", b"hello " * 40)
    store.put("exports/2026-11-27/empty.dcm", b"")
    rows += [
        ("exports/2026-11-27/junk.dcm", "normal", "SIM-JUNK-1", "A"),
        ("exports/2026-11-27/empty.dcm", "graves", "SIM-JUNK-2", "A"),
    ]
    labels = _labels_csv([tuple(r) for r in rows])  # type: ignore[misc]
    data = load_study_data(store, labels, group_key=b"k")
    assert data.skipped == {"not_dicom": 1, "empty_file": 1}
    assert len(data.train) + len(data.internal) == 30
    assert not _groups(data.train) & _groups(data.internal)
    assert data.labels_sha256["train"]
    labels_of = {r[0]: r[1] for r in rows}
    for im in data.train + data.internal:
        assert CLASSES[im.label] == labels_of[im.key]


def test_labels_csv_errors_have_reason_codes() -> None:
    cases = {
        b"key,label\nx,normal\n": "missing_column",
        b"key,label,patient_id\nx,cancer,p\n": "unknown_label",
        b"key,label,patient_id\nx,normal,\n": "empty_field",
        b"key,label,patient_id\nx,normal,p\nx,graves,q\n": "duplicate_key",
        b"\xff\xfe": "not_utf8",
    }
    for data, reason in cases.items():
        with pytest.raises(StudyDataError) as info:
            read_labels_csv(data, group_key=b"k")
        assert info.value.reason == reason
    rows = read_labels_csv(b"key,label,patient_id\nx,Graves,SIM-1\n", group_key=b"k")
    assert rows[0].label == 1
    assert "SIM-1" not in rows[0].group


@pytest.mark.slow
def test_cli_train_and_study(tmp_path: Path) -> None:
    runner = CliRunner()
    exports = LocalStore(tmp_path / "exports")
    day = date(2026, 11, 27)
    internal = write_night(exports, night=day, n=48, sites=("A", "B"), seed=1)
    external = write_night(LocalStore(tmp_path / "ext"), night=day, n=16, sites=("C",), seed=2)
    registry = tmp_path / "registry"
    result = runner.invoke(
        app,
        [
            "train",
            "--data", exports.url,
            "--labels", exports.url_for(internal.labels_key),
            "--external-data", str(tmp_path / "ext"),
            "--external-labels", str(tmp_path / "ext" / external.labels_key),
            "--registry", str(registry),
            "--archs", "shufflenet_v2",
            "--folds", "2",
            "--epochs", "1",
            "--image-size", "32",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "fold 1" in result.output
    assert "epoch   1" in result.output
    assert "| shufflenet_v2 * |" in result.output
    assert "registered: " in result.output
    version = result.output.split("registered: ")[1].split()[0].rstrip("/").rsplit("/", 1)[-1]
    assert (registry / "models" / "thyroid" / version / "report.html").is_file()

    result = runner.invoke(
        app,
        [
            "study", "--registry", str(registry), "--scale", "0.02", "--archs", "shufflenet_v2",
            "--folds", "0", "--epochs", "1", "--image-size", "32",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "simulated-senior (simulated)" in result.output
    assert "gate: " in result.output
