"""The bad-input corpus (tests/corpus/generate.py) through the real shard, in one process.

One `process_shard` call over every listed name of the corpus (a LocalStore folder: valid
scans with awkward names, every reason code the data checks emit, pydicom's bundled files, a
200 MB sparse object, a symlink, a named pipe, an unsafe name), plus the merge's duplicate
rule. Asserted: no exception and no storage error; every listed name accounted exactly once
(scored or quarantined); each class its expected code; every code a known reason; the PHI
planted in sequences nowhere in what the shard wrote or returned; the resident set growth
during the shard bounded (measured in the subprocess, see docs/bad-inputs.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from scintiflow.checks.reasons import REASONS, severity

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
NIGHT = "2026-12-03"
MAX_RSS_GROWTH = 512 * 2**20


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("corpus_generate", CORPUS / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outcomes(report: dict) -> dict[str, tuple[str, list[str]]]:
    """key -> ("scored" | "quarantined", codes): the shard's verdict, then the merge's."""
    result = report["result"]
    out: dict[str, tuple[str, list[str]]] = {}
    for row in result["rows"]:
        key = row["key"]
        assert key not in out, f"{key} scored twice"
        out[key] = ("scored", list(result["warned"].get(key, [])))
    for key, entry in result["quarantined"].items():
        assert key not in out, f"{key} both scored and quarantined"
        out[key] = ("quarantined", list(entry["codes"]))
    for key, codes in report["duplicates"].items():  # the merge quarantines duplicates
        out[key] = ("quarantined", sorted({*out[key][1], *codes}))
    return out


def test_the_whole_corpus_goes_through_the_shard(tmp_path: Path) -> None:
    generator = load_generator()
    root = tmp_path / "store"
    manifest = generator.write_corpus(root / "exports" / NIGHT)
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, str(CORPUS / "shard_run.py"), str(root), NIGHT, str(out)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    prefix = f"exports/{NIGHT}/"

    # every listed name is a corpus entry and vice versa (the empty folder is no input)
    listed = [k.removeprefix(prefix) for k in report["keys"]]
    assert sorted(listed) == sorted(manifest)
    assert report["result"]["storage_errors"] == {}
    outcomes = _outcomes(report)
    assert sorted(outcomes) == sorted(report["keys"])  # each exactly once

    wrong = {}
    for name, expected in manifest.items():
        status, codes = outcomes[prefix + name]
        unknown = [c for c in codes if c not in REASONS]
        if unknown:
            wrong[name] = f"unknown codes {unknown}"
        elif expected == "any":
            continue
        elif expected == "scored":
            if status != "scored":
                wrong[name] = f"{status} {codes}"
        elif severity(expected) == "warn":
            if status != "scored" or expected not in codes:
                wrong[name] = f"{status} {codes}, expected scored with {expected}"
        elif status != "quarantined" or expected not in codes:
            wrong[name] = f"{status} {codes}, expected {expected}"
    assert wrong == {}
    assert len(set(manifest.values())) >= 30  # distinct expected outcomes

    # the PHI planted in sequences is nowhere in the result or in what was written, except the
    # quarantine copies (the input's own bytes) and the Secondary Captures (identifiers belong)
    sentinel = generator.PHI_TEXT.encode()
    assert sentinel not in json.dumps(report["result"]).encode()
    leaked = [
        str(p.relative_to(root))
        for sub in ("results", "quarantine")
        for p in (root / sub).rglob("*")
        if p.is_file()
        and "/sc/" not in p.as_posix()
        and (p.suffix == ".json" or sub == "results")
        and sentinel in p.read_bytes()
    ]
    assert leaked == []

    growth = report["peak_rss_bytes"] - report["rss_before_bytes"]
    print(
        f"corpus: {len(listed)} inputs, shard {report['shard_seconds']} s, RSS growth "
        f"{growth / 2**20:.0f} MiB (peak {report['peak_rss_bytes'] / 2**20:.0f} MiB)"
    )
    assert growth < MAX_RSS_GROWTH


def _outcome_text(expected: str) -> str:
    if expected == "scored":
        return "scored"
    if severity(expected) == "warn":
        return f"scored, warned `{expected}`"
    return f"quarantined `{expected}`"


def test_the_docs_table_is_the_manifest() -> None:
    generator = load_generator()
    page = (Path(__file__).resolve().parents[2] / "docs" / "bad-inputs.md").read_text()
    start = page.index("<!-- corpus-table")
    body = page[page.index("\n", start) + 1 : page.index("<!-- /corpus-table -->")]
    documented = [line for line in body.splitlines() if line.startswith("| `")]
    expected = {name: e for name, (e, _) in generator.CLASSES.items()} | generator.SPECIAL
    assert documented == [f"| `{n}` | {_outcome_text(e)} |" for n, e in expected.items()]


def test_a_child_reads_its_own_peak_not_its_parents() -> None:
    """The corpus child's peak is VmHWM: `ru_maxrss` would report this process's peak."""
    ballast = bytearray(512 * 2**20)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page: resident
    script = "from rss_figures import peak_rss_bytes; print(peak_rss_bytes())"
    env = {**os.environ, "PYTHONPATH": str(CORPUS.parent)}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True
    )
    assert int(out.stdout) < 128 * 2**20  # a bare interpreter, not the 512 MiB above
    del ballast
