"""Training report and model card, rendered from a small StudyResult of real metric computations."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from PIL import Image

from scintiflow import CLASSES
from scintiflow.ml.evaluation import (
    ArchResult,
    EvalSet,
    StudyResult,
    bootstrap_cis,
    classification_metrics,
    compare_readers,
    softmax,
    summarize_folds,
)
from scintiflow.ml.readers import ReaderRead, simulate_reads
from scintiflow.ml.training_report import model_card, render_training_report

ARCHS = ("alexnet", "shufflenet_v2", "mobilenet_v3", "resnet34")
EVIL = "<script>alert(1)</script>"


def _eval_set(name: str, n: int, skill: float, rng: np.random.Generator) -> EvalSet:
    y = rng.integers(0, len(CLASSES), size=n)
    probs = softmax(rng.normal(size=(n, len(CLASSES))) + skill * np.eye(len(CLASSES))[y])
    groups = np.arange(n) // 2
    return EvalSet(name, [f"{i:064x}" for i in range(n)], y, probs, groups)


def _study(seed: int = 0) -> StudyResult:
    rng = np.random.default_rng(seed)
    archs = []
    for i, arch in enumerate(ARCHS):
        skill = 1.5 + 0.5 * i
        folds = [
            classification_metrics(e.y_true, e.probs)
            for e in (_eval_set("fold", 40, skill, rng) for _ in range(3))
        ]
        internal = _eval_set("internal", 80, skill, rng)
        external = _eval_set("external", 60, skill - 0.3, rng)
        archs.append(
            ArchResult(
                arch=arch,
                folds=folds,
                cv_summary=summarize_folds(folds),
                internal=classification_metrics(internal.y_true, internal.probs),
                internal_ci=bootstrap_cis(
                    internal.y_true, internal.probs, n_boot=50, groups=internal.groups
                ),
                external=classification_metrics(external.y_true, external.probs),
                external_ci=bootstrap_cis(
                    external.y_true, external.probs, n_boot=50, groups=external.groups
                ),
                temperature=1.0 + i / 10,
                train_seconds=12.0 * (i + 1),
                epochs_run=3,
                eval_sets=[internal, external],
            )
        )
    ext = archs[-1].eval_sets[1]
    labels = [CLASSES[i] for i in ext.y_true]
    reads = simulate_reads(
        ext.keys,
        labels,
        reader_id="simulated-senior",
        per_class_accuracy=dict.fromkeys(CLASSES, 0.87),
        seed=1,
    )
    reads += [ReaderRead(EVIL, k, lbl) for k, lbl in zip(ext.keys[:30], labels[:30], strict=True)]
    comparisons = compare_readers(ext.keys, ext.y_true, ext.probs.argmax(1), reads)
    readers = [c.to_dict() | {"set": "external"} for c in comparisons]
    return StudyResult(
        archs=archs,
        best_arch="resnet34",
        readers=readers,
        config={"epochs": 3, "image_size": 64, "note": EVIL, "source": {"kind": "simulated"}},
        dataset={
            "train": {
                "n": 120,
                "patients": 97,
                "sites": {"A": 70, "B": 50},
                "classes": dict(zip(CLASSES, (50, 30, 17, 23), strict=True)),
            },
            "external": {"n": 60, "patients": 30, "sites": {"C": 60}, "classes": {}},
            "skipped": {"not_nm": 2},
        },
    )


def _png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


@pytest.fixture(scope="module")
def rendered() -> tuple[StudyResult, dict[str, bytes]]:
    study = _study()
    return study, render_training_report(study)


def test_report_files_and_plots(rendered: tuple[StudyResult, dict[str, bytes]]) -> None:
    _, files = rendered
    expected = {"report.html", "report.md"}
    for arch in ARCHS:
        for s in ("internal", "external"):
            expected |= {f"confusion-{arch}-{s}.png", f"roc-{arch}-{s}.png"}
    assert set(files) == expected
    for name, data in files.items():
        if not name.endswith(".png"):
            continue
        img = Image.open(io.BytesIO(data))
        img.load()
        assert img.format == "PNG"
        assert img.size[0] > 200
        assert not getattr(img, "text", {})
        chunks = _png_chunks(data)
        assert not {b"tEXt", b"iTXt", b"zTXt"} & set(chunks), name
        # The plot is not blank.
        assert np.asarray(img.convert("L")).std() > 5


def test_html_has_every_arch_row_and_values(
    rendered: tuple[StudyResult, dict[str, bytes]],
) -> None:
    study, files = rendered
    page = files["report.html"].decode()
    for a in study.archs:
        assert f'<td class="l">{a.arch}' in page
        assert a.internal is not None
        assert a.external is not None
        assert f"{a.internal.accuracy:.3f} (" in page
        assert f"{a.external.accuracy:.3f} (" in page
        lo, hi = a.external_ci["accuracy"]
        assert f"({lo:.3f} to {hi:.3f})" in page
        assert f"{a.cv_summary['accuracy'][0]:.3f} ± {a.cv_summary['accuracy'][1]:.3f}" in page
    # Per-fold table: 4 archs x 3 folds.
    assert page.count('<td class="l">alexnet</td><td>') >= 3
    # Offline: no external resources; plots embedded and linked to their sibling files.
    assert "http://" not in page
    assert "https://" not in page
    assert page.count("data:image/png;base64,") == 16
    assert 'href="roc-resnet34-external.png"' in page
    assert "simulated</b>" in page  # the simulated-data banner
    # Dataset table: one row per split with its sites and class counts.
    assert '<td class="l">train</td><td>120</td><td>97</td><td class="l">A: 70, B: 50</td>' in (
        page
    )
    assert "| train | 120 | 97 | A: 70, B: 50 | 50 | 30 | 17 | 23 |" in files["report.md"].decode()


def test_html_escapes_untrusted_strings(rendered: tuple[StudyResult, dict[str, bytes]]) -> None:
    _, files = rendered
    page = files["report.html"].decode()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    md = files["report.md"].decode()
    assert "<script>" not in md
    assert "&lt;script&gt;" in md


def test_reader_comparison_is_reported_and_marked_simulated(
    rendered: tuple[StudyResult, dict[str, bytes]],
) -> None:
    study, files = rendered
    page = files["report.html"].decode()
    md = files["report.md"].decode()
    senior = next(r for r in study.readers if r["reader_id"] == "simulated-senior")
    assert senior["simulated"]
    assert senior["n"] == 60
    assert 'simulated-senior\n<span class="sim">simulated</span>' in page
    assert "simulated-senior (simulated)" in md
    assert f"| {senior['accuracy']:.3f} |" in md
    human = next(r for r in study.readers if r["reader_id"] == EVIL)
    assert not human["simulated"]
    assert human["n"] == 30


def test_markdown_tables_are_well_formed(rendered: tuple[StudyResult, dict[str, bytes]]) -> None:
    _, files = rendered
    md = files["report.md"].decode()
    for arch in ARCHS:
        assert f"| {arch}" in md
        assert f"![confusion {arch} internal](confusion-{arch}-internal.png)" in md
    for block in md.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        if lines:
            widths = {ln.replace("\\|", "").count("|") for ln in lines}
            assert len(widths) == 1, block


def test_report_without_external_set_or_readers() -> None:
    study = _study()
    a = study.archs[0]
    only_internal = ArchResult(
        arch=a.arch,
        folds=a.folds,
        cv_summary=a.cv_summary,
        internal=a.internal,
        internal_ci=a.internal_ci,
        external=None,
        external_ci={},
        temperature=a.temperature,
        train_seconds=a.train_seconds,
        epochs_run=a.epochs_run,
        eval_sets=a.eval_sets[:1],
    )
    files = render_training_report(StudyResult([only_internal], a.arch, [], {}, {}))
    assert "simulated</b>" not in files["report.html"].decode()
    assert set(files) == {
        "report.html",
        "report.md",
        f"confusion-{a.arch}-internal.png",
        f"roc-{a.arch}-internal.png",
    }
    assert "No reader reads were supplied." in files["report.html"].decode()
    assert "n/a" in files["report.md"].decode()


def test_model_card(rendered: tuple[StudyResult, dict[str, bytes]]) -> None:
    study, _ = rendered
    card, md = model_card(study, "resnet34", name="thyroid", version="v1")
    text = json.dumps(card, allow_nan=False)
    assert "decision support" in card["intended_use"].lower()
    assert "not a diagnosis" in card["intended_use"]
    assert card["classes"] == list(CLASSES)
    assert card["data"]["simulated"] is True
    assert card["data"]["train"]["n"] == 120
    assert any("SIMULATED" in x for x in card["limitations"])
    ext = study.arch("resnet34").external
    assert ext is not None
    assert card["metrics"]["external"]["accuracy"] == pytest.approx(ext.accuracy)
    assert len(card["readers"]) == 2
    assert "<script>" not in md
    assert "thyroid v1" in md
    assert f"{ext.accuracy:.3f} (" in md
    assert "## Limitations" in md
    assert "simulated-senior (simulated)" in md
    assert "resnet34" in text
    with pytest.raises(KeyError):
        model_card(study, "vgg16")


def test_report_template_ships_as_package_data() -> None:
    import fnmatch
    import tomllib
    from importlib.resources import files
    from pathlib import Path

    template = files("scintiflow.ml").joinpath("templates", "training_report.html.j2")
    assert template.is_file()
    assert "{{ best_arch }}" in template.read_text("utf-8")
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]
    assert any(
        fnmatch.fnmatch("ml/templates/training_report.html.j2", p) for p in data["scintiflow"]
    )
