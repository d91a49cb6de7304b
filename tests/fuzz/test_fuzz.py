"""A bounded fuzzing run (60 s) of the decoder and the row checks, so `make test` fuzzes.

The harness (tests/fuzz/fuzz_decode.py) runs in a subprocess with its work folder in
tmp_path, seeded from the bad-input corpus; the test fails when libFuzzer reports a crash
(a finding or an escaped exception: non-zero exit, a `crash-*` / `timeout-*` / `oom-*` file).
`make fuzz FUZZ_SECONDS=N` runs the same harness for longer.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent / "fuzz_decode.py"
SECONDS = 60

pytest.importorskip("atheris")


@pytest.mark.slow
def test_sixty_seconds_of_fuzzing_find_no_crash(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, str(HARNESS), str(tmp_path), f"-max_total_time={SECONDS}"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=SECONDS + 240,
    )
    findings = sorted(
        p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))
    )
    tail = proc.stderr[-4000:]
    assert proc.returncode == 0, tail
    assert findings == [], tail
    done = re.search(r"Done (\d+) runs in (\d+) second", proc.stderr)
    assert done is not None, tail
    print(f"fuzz: {done.group(1)} runs in {done.group(2)} s, no crash")
