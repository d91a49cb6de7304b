"""Run a folder's night through the real shard, in its own process, and report what it did.

    python tests/corpus/shard_run.py ROOT NIGHT OUT.json

ROOT is a `LocalStore` folder holding `exports/<NIGHT>/`. A random-init champion (64 px) is
registered in it and opened with ONNX Runtime; then ONE `process_shard` call checks,
quarantines and scores every listed key, and the merge's duplicate rule runs over its rows.
OUT.json gets the listed keys, the shard's result and the memory figures: the resident set
just before the shard (`rss_before_bytes`) and the process's own peak after it
(`peak_rss_bytes`, VmHWM: see tests/rss_figures.py for why not `ru_maxrss`), so the growth is an
upper bound of what the shard took.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def run(root: Path, night: str, out: Path) -> None:
    sys.path.insert(0, str(TESTS))
    from rss_figures import peak_rss_bytes, rss_now_bytes
    from test_flows import register_random_champion

    from scintiflow.inference.engines import load_scoring_model, open_engine
    from scintiflow.pipeline.merge import mark_duplicates
    from scintiflow.pipeline.shard import ShardSpec, process_shard, row_validator
    from scintiflow.storage import LocalStore

    store = LocalStore(root)
    register_random_champion(store)
    model = load_scoring_model(store, "thyroid")
    engine = open_engine("onnxruntime", model)
    keys = [o.key for o in store.list(f"exports/{night}/")]
    spec = ShardSpec(
        night=night,
        run_id="run-corpus",
        run_prefix=f"results/{night}/run-corpus",
        batch_size=16,
        workers=2,
        read_retries=0,
    )
    row_validator(spec.thresholds)  # GX's import and suite: process set-up, not the shard
    rss_before = rss_now_bytes()
    started = time.perf_counter()
    result = process_shard(
        store, store, keys, spec, hash_key=b"corpus-phi-key", engine=engine, model=model
    )
    seconds = time.perf_counter() - started
    peak = peak_rss_bytes()
    duplicates = mark_duplicates(result.check_rows, result.sop_tokens)
    flags = {
        str(r["key"]): [c for c in ("duplicate_bytes", "duplicate_sop_instance") if r.get(c)]
        for r in result.check_rows
    }
    report = {
        "keys": keys,
        "result": result.to_dict(),
        "duplicates": {k: flags[k] for k in duplicates},
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak,
        "shard_seconds": round(seconds, 2),
    }
    out.write_text(json.dumps(report, default=str))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print("usage: python tests/corpus/shard_run.py ROOT NIGHT OUT.json", file=sys.stderr)
        raise SystemExit(2)
    run(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
