"""Streaming scoring: rows, heatmap objects, batch-size invariance, stores, memory, CLI."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scintiflow import CLASSES
from scintiflow.inference.engines import ScoringModel, load_scoring_model, open_engine
from scintiflow.inference.explain import png_chunk_types
from scintiflow.inference.score import (
    PREDICTION_COLUMNS,
    heatmap_keys,
    read_predictions,
    results_prefix,
)
from scintiflow.inference.streaming import score_batch, score_keys
from scintiflow.sim import PHI_SENTINELS, write_night
from scintiflow.storage import LocalStore, ObjectStore

NIGHT = date(2026, 11, 27)
KEY = b"test-phi-key"
SIZE = 64


def _centre_head(model: torch.nn.Module, arch: str) -> None:
    """Centre a random net's head on simulated scans, so its argmax varies between images.

    Random features share a large common component, so a random head predicts one class for
    everything; subtracting the mean logit makes batch-size checks meaningful.
    """
    from scintiflow.ml.models import classifier_layer
    from scintiflow.ml.preprocess import PreprocessConfig, preprocess_batch
    from scintiflow.sim import simulate_cases

    fc = classifier_layer(model, arch)
    cases = simulate_cases(24, sites=("A", "C"), seed=1)
    x = torch.from_numpy(preprocess_batch([c.image for c in cases], PreprocessConfig(SIZE)))
    with torch.no_grad():
        logits = model(x)
        fc.bias -= logits.mean(0)
        fc.bias /= logits.std(0) + 1e-6
        fc.weight /= (logits.std(0) + 1e-6)[:, None]


def _register(store: ObjectStore, arch: str = "shufflenet_v2", seed: int = 0) -> str:
    from scintiflow.ml.models import create_model, state_dict_bytes
    from scintiflow.ml.preprocess import PreprocessConfig
    from scintiflow.ml.registry import apply_gate, promotion_decision, register_version

    torch.manual_seed(seed)
    model = create_model(arch).eval()
    _centre_head(model, arch)
    version = register_version(
        store,
        "thyroid",
        arch=arch,
        weights=state_dict_bytes(model),
        preprocess=PreprocessConfig(image_size=SIZE).to_dict(),
        classes=CLASSES,
        temperature=0.5,
        metrics={},
        card={"low_confidence_threshold": 0.7},
        lineage={},
        training_reference={},
    )
    apply_gate(store, "thyroid", promotion_decision(0.9, None, candidate_version=version))
    return version


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    """A registry with a champion plus a night of 30 images and 4 broken files."""
    store = LocalStore(str(tmp_path_factory.mktemp("night")))
    write_night(store, night=NIGHT, n=30, sites=("A", "C"), seed=5, bad_fraction=0.12)
    _register(store)
    return store


@pytest.fixture(scope="module")
def model(night: LocalStore) -> ScoringModel:
    return load_scoring_model(night, "thyroid", "champion")


def _keys(store: ObjectStore) -> list[str]:
    return [o.key for o in store.list(f"exports/{NIGHT}/")]


def test_every_key_ends_scored_or_failed_with_a_reason(
    night: LocalStore, model: ScoringModel
) -> None:
    keys = _keys(night)
    engine = open_engine("onnxruntime", model)
    prefix = results_prefix(str(NIGHT), "run-a")
    summary = score_keys(
        night, keys, engine, model, night, prefix, batch_size=8, patient_hash_key=KEY
    )
    faults = list(csv.DictReader(io.StringIO(night.get(f"labels/{NIGHT}.faults.csv").decode())))
    assert len(summary.rows) + len(summary.failures) == len(keys)
    assert len(summary.rows) >= 30  # every good file (some faults still decode)
    assert {r.key for r in summary.rows} | {f.key for f in summary.failures} == set(keys)
    assert all(f.reason and f.reason == f.reason.lower() for f in summary.failures)
    assert {f.key for f in summary.failures} <= {row["key"] for row in faults}
    # Tables: same rows in CSV and JSONL, columns in the documented order.
    text = night.get(f"{prefix}/predictions.csv").decode()
    table = list(csv.DictReader(io.StringIO(text)))
    assert tuple(text.splitlines()[0].split(",")) == PREDICTION_COLUMNS
    jsonl = read_predictions(night, prefix)
    assert [r["key"] for r in table] == [r["key"] for r in jsonl] == [r.key for r in summary.rows]
    for row in jsonl:
        probs = [row[f"p_{c}"] for c in CLASSES]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert row["predicted_label"] == CLASSES[int(np.argmax(probs))]
        assert row["confidence"] == pytest.approx(max(probs))
        assert row["low_confidence"] == (max(probs) < 0.7)  # threshold from the model card
        assert row["model_version"] == model.version
        assert row["engine"] == "onnxruntime"
        assert row["precision"] == engine.precision == "fp32"
        assert (row["heatmap_key"], row["overlay_key"]) == heatmap_keys(prefix, row["sha256"])
    if summary.failures:
        failed = night.get(f"{prefix}/score_failures.jsonl").decode().splitlines()
        assert len(failed) == len(summary.failures)


def test_heatmaps_match_each_matrix_and_carry_no_text(
    night: LocalStore, model: ScoringModel
) -> None:
    from scintiflow.ingest.dicom import decode_dicom

    keys = _keys(night)
    engine = open_engine("onnxruntime", model)
    result = score_batch(
        night, keys, engine, model, night, "results/x/run-b", workers=2, patient_hash_key=KEY
    )
    shapes = set()
    for row in result.rows:
        record = decode_dicom(night.get(row.key), patient_hash_key=b"test-phi-key")
        overlay, raw = night.get(row.overlay_key), night.get(row.heatmap_key)
        for data in (overlay, raw):
            assert not set(png_chunk_types(data)) & {"tEXt", "zTXt", "iTXt"}
            with Image.open(io.BytesIO(data)) as img:
                assert img.size == (record.cols, record.rows)
        with Image.open(io.BytesIO(raw)) as img:
            assert img.mode.startswith("I;16")
        shapes.add(record.shape)
    assert {(128, 128), (256, 256)} <= shapes  # sites A and C


def test_all_class_maps_write_one_pair_per_class(night: LocalStore, model: ScoringModel) -> None:
    keys = _keys(night)[:6]
    engine = open_engine("onnxruntime", model)
    result = score_batch(
        night,
        keys,
        engine,
        model,
        night,
        "results/x/run-c",
        all_class_maps=True,
        patient_hash_key=KEY,
    )
    for row in result.rows:
        for cls in CLASSES:
            map_key, overlay_key = heatmap_keys("results/x/run-c", row.sha256, cls)
            assert night.exists(map_key)
            assert night.exists(overlay_key)
        assert night.get(row.heatmap_key) == night.get(
            heatmap_keys("results/x/run-c", row.sha256, row.predicted_label)[0]
        )


def test_predictions_do_not_depend_on_batch_size(night: LocalStore, model: ScoringModel) -> None:
    keys = _keys(night)
    engine = open_engine("onnxruntime", model)
    runs = [
        score_keys(
            night,
            keys,
            engine,
            model,
            night,
            f"results/x/bs{b}",
            batch_size=b,
            patient_hash_key=KEY,
        ).rows
        for b in (1, 7, 32)
    ]
    first = runs[0]
    probs0 = np.array([[getattr(r, f"p_{c}") for c in CLASSES] for r in first])
    assert len({r.predicted_label for r in first}) >= 2  # the check is not vacuous
    for rows in runs[1:]:
        assert [r.key for r in rows] == [r.key for r in first]
        assert [r.predicted_label for r in rows] == [r.predicted_label for r in first]
        probs = np.array([[getattr(r, f"p_{c}") for c in CLASSES] for r in rows])
        assert np.abs(probs - probs0).max() <= 1e-4


def test_keys_and_outputs_hold_no_patient_identifiers(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    write_night(store, night=NIGHT, n=6, sites=("A",), seed=2, phi_sentinel=True)
    _register(store)
    sm = load_scoring_model(store, "thyroid")
    score_keys(
        store,
        _keys(store),
        open_engine("onnxruntime", sm),
        sm,
        store,
        "results/p/r",
        patient_hash_key=KEY,
    )
    outputs = [o.key for o in store.list("results/")]
    blob = "\n".join(outputs).encode() + b"".join(store.get(k) for k in outputs)
    for sentinel in PHI_SENTINELS:
        assert sentinel.encode() not in blob


@pytest.mark.s3
def test_local_and_s3_stores_give_identical_predictions(
    tmp_path: Path, s3_bucket: str, s3_settings: object
) -> None:
    from scintiflow.storage import open_store

    local = LocalStore(str(tmp_path))
    s3 = open_store(f"s3://{s3_bucket}/scintiflow", settings=s3_settings)  # type: ignore[arg-type]
    for store in (local, s3):
        write_night(store, night=NIGHT, n=10, sites=("A", "C"), seed=9, bad_fraction=0.1)
        _register(store)
    tables = []
    for store in (local, s3):
        sm = load_scoring_model(store, "thyroid")
        summary = score_keys(
            store,
            _keys(store),
            open_engine("onnxruntime", sm),
            sm,
            store,
            "results/s/r",
            patient_hash_key=KEY,
        )
        assert store.exists(summary.rows[0].overlay_key)
        tables.append(read_predictions(store, "results/s/r"))
    local_rows, s3_rows = tables
    assert [r["key"] for r in local_rows] == [r["key"] for r in s3_rows]
    for a, b in zip(local_rows, s3_rows, strict=True):
        assert a["predicted_label"] == b["predicted_label"]
        assert a["sha256"] == b["sha256"]
        for c in CLASSES:
            assert a[f"p_{c}"] == pytest.approx(b[f"p_{c}"], abs=1e-6)


_STREAM_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from rss_figures import peak_rss_bytes
from scintiflow.inference.engines import load_scoring_model, open_engine
from scintiflow.inference.streaming import score_keys
from scintiflow.storage import LocalStore

store = LocalStore(sys.argv[1])
keys = [o.key for o in store.list("exports/")]
sm = load_scoring_model(store, "thyroid")
engine = open_engine("onnxruntime", sm, threads=2)
kw = {"batch_size": 32, "workers": 2, "patient_hash_key": b"k"}
score_keys(store, keys[:64], engine, sm, store, "results/warm/r", **kw)
before = peak_rss_bytes() // 1024
summary = score_keys(store, keys, engine, sm, store, "results/s/r", **kw)
after = peak_rss_bytes() // 1024
print(json.dumps({"n": len(summary.rows), "before_kib": before, "after_kib": after}))
"""


@pytest.mark.slow
def test_streaming_2000_images_keeps_peak_rss_bounded(tmp_path: Path) -> None:
    """Peak RSS grows by less than 200 MiB while 2,000 256x256 scans stream through.

    Holding them would cost more than that in count images alone (2000 x 256 x 256 x 4 B =
    500 MiB, before inputs and PNGs). The high-water mark is the process's, so the scoring
    runs in a fresh subprocess (the night is simulated in this one) and reads its own
    (`VmHWM`, not `ru_maxrss`, which carries this worker's peak over: tests/rss_figures.py),
    and the mark is taken after a warm-up batch.
    """
    store = LocalStore(str(tmp_path))
    summary = write_night(
        store,
        night=NIGHT,
        n=2000,
        sites=("C",),
        seed=4,
        compressed_fraction=0.0,
        multiview_fraction=0.0,
    )
    assert summary.images == 2000
    _register(store)
    out = subprocess.run(
        [sys.executable, "-c", _STREAM_SCRIPT, str(tmp_path), str(Path(__file__).parent)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n"] == 2000
    grown_mib = (result["after_kib"] - result["before_kib"]) / 1024
    print(f"peak RSS {result['after_kib'] / 1024:.0f} MiB, grew {grown_mib:.0f} MiB")
    assert grown_mib < 200, result


def test_cli_scores_a_night_with_the_champion(night: LocalStore) -> None:
    from typer.testing import CliRunner

    from scintiflow.cli import app

    out_dir = Path(night.url.removeprefix("file://")).parent / "cli-out"
    result = CliRunner().invoke(
        app,
        [
            "score",
            "--input",
            night.url,
            "--out",
            str(out_dir),
            "--night",
            str(NIGHT),
            "--engine",
            "auto",
            "--batch-size",
            "16",
            "--run-id",
            "cli",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "engine onnxruntime" in result.output
    rows = read_predictions(LocalStore(str(out_dir)), f"results/{NIGHT}/cli")
    assert len(rows) >= 30
    assert {r["engine"] for r in rows} == {"onnxruntime"}
    assert "predictions.csv" in result.output


def test_cli_takes_a_version_folder_url_as_model(night: LocalStore, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scintiflow.cli import app
    from scintiflow.ml.registry import champion_version

    version = champion_version(night, "thyroid")
    source = LocalStore(str(tmp_path / "elsewhere"))
    write_night(source, night=NIGHT, n=4, sites=("A",), seed=8)
    result = CliRunner().invoke(
        app,
        [
            "score",
            "--input",
            source.url,
            "--model",
            f"{night.url}/models/thyroid/{version}",
            "--night",
            str(NIGHT),
            "--engine",
            "torch",
            "--run-id",
            "url",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_predictions(source, f"results/{NIGHT}/url")
    assert len(rows) == 4
    assert {r["model_version"] for r in rows} == {version}
    assert {r["engine"] for r in rows} == {"torch"}
    bad = CliRunner().invoke(app, ["score", "--input", source.url, "--model", "s3://b/x/y"])
    assert bad.exit_code != 0


def test_cli_rejects_an_unknown_engine(night: LocalStore) -> None:
    from typer.testing import CliRunner

    from scintiflow.cli import app

    result = CliRunner().invoke(
        app, ["score", "--input", night.url, "--night", str(NIGHT), "--engine", "openvino"]
    )
    assert result.exit_code != 0
    assert "unknown engine" in result.output
