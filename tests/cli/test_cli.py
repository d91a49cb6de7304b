"""The CLI end to end on real stores: simulate, ls, montage, the verb list and `--night`.

The other verbs are tested beside their stage (check, score, report, train/study, nightly,
retrain, drift and demo in tests/test_flows.py).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scintiflow.cli import app
from scintiflow.settings import get_settings
from scintiflow.storage import open_store


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


runner = CliRunner()


def _invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    return result.output


def test_simulate_then_ls_on_a_folder(tmp_path: Path) -> None:
    out = tmp_path / "bucket"
    text = _invoke(
        "simulate",
        "--out",
        str(out),
        "--n",
        "12",
        "--seed",
        "3",
        "--night",
        "2026-11-27",
        "--bad-fraction",
        "0.25",
    )
    assert "wrote 12 images" in text
    store = open_store(out)
    keys = [o.key for o in store.list("exports/2026-11-27/")]
    labels = list(csv.DictReader(io.StringIO(store.get("labels/2026-11-27.csv").decode())))
    faults = list(csv.DictReader(io.StringIO(store.get("labels/2026-11-27.faults.csv").decode())))
    assert len(labels) == 12
    assert len(keys) == len(labels) + len(faults)
    assert {r["key"] for r in labels} | {r["key"] for r in faults} == set(keys)
    assert (out / "labels" / "2026-11-27.csv").resolve().as_uri() in text
    regions = store.get("labels/2026-11-27.regions.jsonl").decode().splitlines()
    assert [json.loads(line)["key"] for line in regions] == [r["key"] for r in labels]
    assert (out / "labels" / "2026-11-27.regions.jsonl").resolve().as_uri() in text

    listing = _invoke("ls", str(out), "--prefix", "exports/2026-11-27/", "--limit", "100")
    for key in keys:
        assert key.removeprefix("exports/2026-11-27/") in listing
    # every file is accounted for: ok rows for the good ones, a reason for each fault
    summary_line = next(line for line in listing.splitlines() if line.startswith("outcomes:"))
    counts = {k: int(v) for k, v in (p.split("=") for p in summary_line[9:].split(", "))}
    assert sum(counts.values()) == len(keys)
    assert counts["ok"] >= 12  # good images plus foreign-but-decodable files (e.g. a CT)


@pytest.mark.s3
def test_simulate_then_ls_on_s3(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCINTIFLOW_S3_ENDPOINT_URL", s3_endpoint)
    url = f"s3://{s3_bucket}/site-exports"
    text = _invoke("simulate", "--out", url, "--n", "6", "--night", "2026-11-28")
    assert f"{url}/labels/2026-11-28.csv" in text
    listing = _invoke("ls", url, "--prefix", "exports/2026-11-28/")
    assert "outcomes: ok=6" in listing


def test_simulate_rejects_unknown_site(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path), "--sites", "A,Z"])
    assert result.exit_code != 0
    assert "unknown site" in result.output


def test_montage_writes_a_png(tmp_path: Path) -> None:
    from PIL import Image

    target = tmp_path / "m.png"
    _invoke("montage", "--out", str(target), "--per-class", "2")
    with Image.open(target) as img:
        assert img.format == "PNG"
        assert img.width > 100
        assert img.height > 100


VERBS = (
    "simulate",
    "ls",
    "montage",
    "check",
    "train",
    "study",
    "score",
    "nightly",
    "retrain",
    "drift",
    "demo",
    "report",
)


def test_help_lists_every_verb_once_in_order() -> None:
    text = _invoke("--help")
    # each command row of the help table starts with the verb's name
    names = [ln.split()[1] for ln in text.splitlines() if ln.startswith("│ ") and ln[2] != " "]
    listed = [n for n in names if n in VERBS]
    assert listed == list(VERBS)


def test_a_night_that_is_not_a_date_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["simulate", "--out", str(tmp_path), "--night", "27/11/2026"], env={"COLUMNS": "240"}
    )
    assert result.exit_code == 2
    assert "is not a YYYY-MM-DD date" in result.output
    assert not list(tmp_path.iterdir())  # rejected before anything was written
