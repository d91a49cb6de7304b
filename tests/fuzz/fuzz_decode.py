"""Coverage-guided fuzzing (atheris / libFuzzer) of the decoder and the per-row checks.

    python tests/fuzz/fuzz_decode.py WORKDIR [libFuzzer flags, e.g. -max_total_time=300]
    make fuzz FUZZ_SECONDS=300

Each input goes the way an export does in the shard: `read_object` over a one-object store
(size probe, fetch, hash, `decode_dicom`), then `checks_row` and `rows_to_table` (the checks
table the suite validates). Seeds are the bad-input corpus (tests/corpus/generate.py, its
files up to 1 MiB), written under WORKDIR/seeds; libFuzzer adds what it finds there, and a
crash lands in WORKDIR as `crash-<sha1>` (turn each into a corpus class and fix the decoder).

What counts as a crash, besides any exception escaping: a reason code that is not in the
registry (`scintiflow.checks.reasons.REASONS`), an outcome with neither record nor reason,
a storage error (the in-memory store has none), or a checks-table value holding a DICOM tag
rendering such as "(0010, 0010)" (a dataset or sequence turned into text: how patient names
once reached reason files).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["scintiflow", "pydicom"]):
    from scintiflow.checks.reasons import REASONS
    from scintiflow.checks.table import DuplicateTracker, checks_row, rows_to_table
    from scintiflow.ingest.objects import read_object

HASH_KEY = b"fuzz-phi-key"
KEY = "exports/2026-12-03/fuzz.dcm"
_TAG_TEXT = re.compile(r"\([0-9A-Fa-f]{4}, ?[0-9A-Fa-f]{4}\)")


class _OneObject:
    """The smallest store `read_object` needs: one key, the bytes of this input."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def get(self, key: str, *, if_match: str = "") -> bytes:
        return self.data

    def get_range(self, key: str, start: int, length: int, *, if_match: str = "") -> bytes:
        return self.data[max(0, start) : max(0, start) + max(0, length)]


def check_one(data: bytes) -> None:
    """One input through decode + the row checks; raises AssertionError on a finding."""
    obj, _ = read_object(_OneObject(data), KEY, patient_hash_key=HASH_KEY)  # type: ignore[arg-type, unused-ignore]
    assert not obj.storage_error, obj.reason
    assert obj.ok or obj.reason, "an outcome with neither record nor reason"
    if not obj.ok:
        assert obj.reason in REASONS, f"unknown reason code {obj.reason!r}"
    row = checks_row(obj, uid_hash_key=HASH_KEY, tracker=DuplicateTracker())
    for column, value in row.items():
        if isinstance(value, str):
            assert not _TAG_TEXT.search(value), f"{column} holds a dataset rendering"
    table = rows_to_table([row])
    assert len(table) == 1


def test_one_input(data: bytes) -> None:
    check_one(bytes(data))


def _seeds(workdir: Path) -> Path:
    seeds = workdir / "seeds"
    if not seeds.is_dir() or not any(seeds.iterdir()):
        import importlib.util

        path = Path(__file__).resolve().parents[1] / "corpus" / "generate.py"
        spec = importlib.util.spec_from_file_location("corpus_generate", path)
        assert spec is not None
        assert spec.loader is not None
        generator = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(generator)
        scratch = workdir / "corpus"
        seeds.mkdir(parents=True, exist_ok=True)
        for i, file in enumerate(generator.seed_inputs(scratch)):
            (seeds / f"seed-{i:04d}").write_bytes(file.read_bytes())
    return seeds


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1].startswith("-"):
        print("usage: python tests/fuzz/fuzz_decode.py WORKDIR [libFuzzer flags]", file=sys.stderr)
        raise SystemExit(2)
    workdir = Path(argv[1]).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    seeds = _seeds(workdir)
    flags = [
        f"-artifact_prefix={workdir}/",
        "-timeout=30",
        "-rss_limit_mb=4096",
        "-max_len=65536",  # longer seeds are cut: a cut file is a bad input too
        *argv[2:],
    ]
    atheris.Setup([argv[0], *flags, str(seeds)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
