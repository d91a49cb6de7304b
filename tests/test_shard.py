"""The shard as the unit of work: one pass per file, the same result whatever the split.

- A counting store around a real LocalStore proves the night's reads: each accepted object is
  fetched once (by its shard) plus at most one ranged header read (the report), and decoded
  once; quarantined objects are fetched once; a re-run of an unchanged night reads no export.
- Determinism: one shard run twice, and the night split into shards of 7 instead of 256,
  give the same rows, the same heatmap PNG bytes and the same checks.json. Compared: rows
  with their run-folder keys made relative to the run folder; heatmap and map PNG and thumbnail JPEG
  bytes by relative key; checks.json without `run_id`, `docs` and the GX run statistics'
  timestamps (none are stored), with quarantine locations (content-addressed) as they are.
  Not compared: SC objects (their UIDs derive from the run id by design) and data docs pages
  (GX stamps them with the time).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from test_flows import register_random_champion

from scintiflow.pipeline.model import ModelRef, resolve_model
from scintiflow.pipeline.night import NightConfig, night_loop
from scintiflow.sim import write_night
from scintiflow.storage import LocalStore, ObjectInfo

NIGHT = date(2026, 11, 27)
N = str(NIGHT)
HASH_KEY = b"test-phi-key"


class CountingStore:
    """A real store whose reads are counted per key (full gets and ranged gets apart)."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner
        self.gets: Counter[str] = Counter()
        self.ranges: Counter[str] = Counter()
        self._lock = threading.Lock()

    def get(self, key: str, *, if_match: str = "") -> bytes:
        with self._lock:
            self.gets[key] += 1
        return self.inner.get(key, if_match=if_match)

    def get_range(self, key: str, start: int, length: int, *, if_match: str = "") -> bytes:
        with self._lock:
            self.ranges[key] += 1
        return self.inner.get_range(key, start, length, if_match=if_match)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self.inner.put(key, data, if_absent=if_absent)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self.inner.put_file(key, path)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def copy(self, src: str, dst: str, *, if_absent: bool = False) -> None:
        self.inner.copy(src, dst, if_absent=if_absent)

    def url_for(self, key: str) -> str:
        return self.inner.url_for(key)

    def check_root(self) -> None:
        self.inner.check_root()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Registry with a champion + a night with broken files (copied per test)."""
    from scintiflow.inference.engines import load_scoring_model, open_engine

    root = tmp_path_factory.mktemp("shard-base")
    store = LocalStore(root)
    register_random_champion(store)
    open_engine("onnxruntime", load_scoring_model(store, "thyroid"))  # caches model.onnx
    write_night(store, night=NIGHT, n=18, sites=("A", "B"), seed=11, bad_fraction=0.2)
    return root


def _copy(base: Path, tmp_path: Path, name: str) -> LocalStore:
    root = tmp_path / name
    shutil.copytree(base, root)
    return LocalStore(root)


def _ref(store: LocalStore) -> ModelRef:
    return resolve_model(store.url, "thyroid", "champion", "onnxruntime")


def _night(store: Any, ref: ModelRef, *, shard_size: int = 256, run_id: str = "run-a") -> Any:
    return night_loop(
        N,
        store,
        store,
        ref,
        cfg=NightConfig(workers=2),
        hash_key=HASH_KEY,
        shard_size=shard_size,
        batch_size=8,
        run_id=run_id,
        browser=None,
    )


def _decode_counter(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """Counts full decodes (calls of the real `decode_dicom` where objects are read) by the
    bytes' length."""
    from scintiflow.ingest import objects

    calls: Counter[int] = Counter()
    real = objects.decode_dicom

    def counted(data: bytes, **kw: Any) -> Any:
        calls[len(data)] += 1
        return real(data, **kw)

    monkeypatch.setattr(objects, "decode_dicom", counted)
    return calls


@pytest.mark.slow
def test_each_file_is_fetched_once_and_decoded_once(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inner = _copy(base, tmp_path, "count")
    ref = _ref(inner)
    store = CountingStore(inner)
    decodes = _decode_counter(monkeypatch)
    res = _night(store, ref, shard_size=7)
    manifest = res.manifest
    assert manifest is not None
    statuses = {i["key"]: i["status"] for i in manifest["inputs"]}
    codes = {i["key"]: i.get("codes") or [] for i in manifest["inputs"]}
    scored = [k for k, s in statuses.items() if s == "scored"]
    quarantined = [k for k, s in statuses.items() if s == "quarantined"]
    assert len(scored) >= 12
    assert quarantined
    exports = list(statuses)
    for key in scored:
        assert store.gets[key] == 1, key
        assert store.ranges[key] <= 2, key  # the size probe + the report's header read
    duplicates = [k for k in quarantined if any(c.startswith("duplicate") for c in codes[k])]
    for key in quarantined:
        # a duplicate found by the merge is read once more, for its quarantine copy
        assert store.gets[key] == (2 if key in duplicates and store.gets[key] > 1 else 1), key
        assert store.ranges[key] == 1, key  # the size probe
    assert sum(store.gets[k] for k in exports) <= len(exports) + len(duplicates)
    # one full decode per object that has DICOM bytes at all (scored ones included)
    assert sum(decodes.values()) <= len(exports)
    # an unchanged night again: no export is read at all (the listing + ledger say enough)
    store.gets.clear()
    store.ranges.clear()
    again = _night(store, ref, run_id="run-b")
    assert again.manifest is not None
    assert again.manifest["counts"]["new"] == 0
    assert not [k for k in store.gets if k.startswith("exports/")]
    assert not store.ranges


def _relative(value: Any, prefix: str) -> Any:
    if isinstance(value, str) and value.startswith(prefix + "/"):
        return value[len(prefix) + 1 :]
    return value


def _outputs(store: LocalStore, res: Any) -> dict[str, Any]:
    """What must not depend on the run id or the split (see the module docstring)."""
    prefix = res.run_prefix
    rows = [
        {k: _relative(v, prefix) for k, v in json.loads(line).items()}
        for line in store.get(f"{prefix}/predictions.jsonl").decode().splitlines()
    ]
    pngs = {
        _relative(o.key, prefix): store.get(o.key)
        for o in store.list(prefix + "/")
        if o.key.endswith((".png", ".jpg"))
    }
    checks = json.loads(store.get(f"{prefix}/checks/checks.json"))
    for volatile in ("run_id", "docs"):
        checks.pop(volatile)
    return {"rows": rows, "pngs": pngs, "checks": checks}


@pytest.mark.slow
def test_the_same_night_gives_the_same_outputs_whatever_the_split(
    base: Path, tmp_path: Path
) -> None:
    one = _copy(base, tmp_path, "one")
    other = _copy(base, tmp_path, "other")
    ref = _ref(one)
    a = _outputs(one, _night(one, ref, shard_size=256, run_id="run-a"))
    b = _outputs(other, _night(other, _ref(other), shard_size=7, run_id="run-b"))
    assert a["rows"] == b["rows"]
    assert a["pngs"]
    assert a["pngs"].keys() == b["pngs"].keys()
    assert all(a["pngs"][k] == b["pngs"][k] for k in a["pngs"])
    assert a["checks"] == b["checks"]


@pytest.mark.slow
def test_one_shard_twice_gives_the_same_result(base: Path, tmp_path: Path) -> None:
    from scintiflow.pipeline.night import run_shard, shard_specs

    store = _copy(base, tmp_path, "twice")
    ref = _ref(store)
    keys = sorted(o.key for o in store.list(f"exports/{N}/"))[:9]
    (spec,) = shard_specs(NightConfig(workers=2), N, "run-x", 1, 8)
    first = run_shard(store, store, keys, spec, ref, HASH_KEY)
    pngs = {o.key: store.get(o.key) for o in store.list(spec.run_prefix + "/heatmaps/")}
    second = run_shard(store, store, keys, spec, ref, HASH_KEY)
    assert first.rows == second.rows
    assert first.check_rows == second.check_rows
    assert first.quarantined == second.quarantined
    # every output but the SC objects (DICOM stamps their creation time) is byte-identical
    assert {k: v for k, v in first.outputs.items() if "/sc/" not in k} == {
        k: v for k, v in second.outputs.items() if "/sc/" not in k
    }
    assert first.outputs.keys() == second.outputs.keys()
    assert pngs == {o.key: store.get(o.key) for o in store.list(spec.run_prefix + "/heatmaps/")}
    # what travels between processes: JSON values only, no pixels
    text = json.dumps(first.to_dict())
    assert "pixel" not in text.lower() or "pixel_spacing" in text


def test_merge_keeps_the_smallest_key_of_each_duplicate_group() -> None:
    from scintiflow.pipeline.merge import mark_duplicates

    rows = [
        {"key": "exports/n/c.dcm", "sha256": "s1", "decoded": True},
        {"key": "exports/n/a.dcm", "sha256": "s1", "decoded": True},
        {"key": "exports/n/b.dcm", "sha256": "s2", "decoded": True},
        {"key": "exports/n/d.dcm", "sha256": "s3", "decoded": False},
    ]
    tokens = {"exports/n/a.dcm": "u1", "exports/n/b.dcm": "u1", "exports/n/c.dcm": "u1"}
    dup_of = mark_duplicates(rows, tokens)
    assert dup_of == {"exports/n/b.dcm": "exports/n/a.dcm", "exports/n/c.dcm": "exports/n/a.dcm"}
    flags = {r["key"]: (r["duplicate_bytes"], r.get("duplicate_sop_instance")) for r in rows}
    assert flags["exports/n/a.dcm"] == (False, False)
    assert flags["exports/n/b.dcm"] == (False, True)
    assert flags["exports/n/c.dcm"] == (True, True)
    assert flags["exports/n/d.dcm"] == (False, None)
    # the same rows in any order give the same decision
    assert mark_duplicates(list(reversed(rows)), tokens) == dup_of


def test_the_shard_hands_freed_heap_pages_back_to_the_system() -> None:
    """What `process_shard` calls after each shard: freed, fragmented C-heap memory (a
    shard's images and bytes) leaves the resident set. In a fresh interpreter, so that no
    other test's memory blurs the figure."""
    import subprocess
    import sys

    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from rss_figures import rss_now_bytes
from scintiflow.pipeline.shard import release_free_heap
blocks = [bytes(2000) for _ in range(60_000)]  # 120 MB in malloc'd blocks
kept = blocks[::16]  # one in 16 stays: the heap is fragmented, never trimmed at its top
del blocks
before = rss_now_bytes()
print(release_free_heap(), (before - rss_now_bytes()) / 2**20)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out[0] == "True"  # glibc (Linux): malloc_trim exists
    assert float(out[1]) > 50  # of about 110 MB freed between the kept blocks
