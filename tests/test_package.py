"""Guard rails: the domain library stays Prefect-free and the CLI stays light to start."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import scintiflow

HEAVY = ("prefect", "torch", "numpy", "pydicom", "boto3", "great_expectations", "onnxruntime")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def _all_scintiflow_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(scintiflow.__path__, prefix="scintiflow."))


def test_every_module_is_found() -> None:
    names = _all_scintiflow_modules()
    for required in (
        "scintiflow.storage",
        "scintiflow.ingest.dicom",
        "scintiflow.sim",
        "scintiflow.settings",
        "scintiflow.cli",
    ):
        assert required in names


def test_importing_every_scintiflow_module_leaves_prefect_out() -> None:
    names = _all_scintiflow_modules()
    loaded = _modules_after("\n".join(f"import {n}" for n in names))
    assert set(names) <= loaded
    assert not {m for m in loaded if m == "prefect" or m.startswith("prefect.")}


def test_cli_import_pulls_in_no_heavy_library() -> None:
    # `scintiflow --help` must be instant: the CLI module may not import heavy libraries.
    loaded = _modules_after("import scintiflow.cli")
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY)


def test_help_lists_every_verb_from_design() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "scintiflow.cli", "--help"],
        check=True,
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": ""},
    ).stdout
    for verb in (
        "simulate",
        "check",
        "train",
        "score",
        "nightly",
        "retrain",
        "report",
        "demo",
        "ls",
    ):
        assert f" {verb} " in out, verb


def test_classes_order_is_the_contract() -> None:
    assert scintiflow.CLASSES == ("normal", "graves", "subacute_thyroiditis", "thyroid_tumor")


def test_only_settings_reads_the_environment() -> None:
    import re
    from pathlib import Path

    src = Path(scintiflow.__file__).parent
    pattern = re.compile(r"os\.environ|os\.getenv|getenv\(")
    offenders = [
        p.relative_to(src).as_posix()
        for p in src.rglob("*.py")
        if p.name != "settings.py" and pattern.search(p.read_text())
    ]
    assert offenders == []


def test_settings_read_prefixed_variables(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from scintiflow.settings import Settings

    monkeypatch.setenv("SCINTIFLOW_STORE_URL", "s3://bucket/p")
    monkeypatch.setenv("SCINTIFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("SCINTIFLOW_PREFIX_RESULTS", "out")
    settings = Settings()
    assert settings.store_url == "s3://bucket/p"
    assert settings.s3_endpoint_url == "http://127.0.0.1:9000"
    assert settings.prefixes.results == "out"
    assert settings.prefixes.exports == "exports"
