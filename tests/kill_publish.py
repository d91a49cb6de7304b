"""Run one night's publish step (or the whole nightly CLI) in its own process and SIGKILL it
right after a chosen write: the driver of `test_reliability.py`'s kill tests.

    python tests/kill_publish.py publish ROOT PREP --record FILE    # every write, in order
    python tests/kill_publish.py publish ROOT PREP --kill-after N   # killed after write N
    python tests/kill_publish.py flow ROOT --kill-on manifest.json -- <nightly CLI args>

`publish` continues the run pickled in PREP (shards and merge already done by the test):
prepare-publish, report (HTML only), publish, complete-run, on `LocalStore(ROOT)`. A write is
a `put`, `put_file` or `copy` that returned; a put refused by `if_absent` is not one. `flow`
patches every LocalStore of the process and kills after the first write whose key ends with
`--kill-on`.
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys
from pathlib import Path
from typing import Any

from scintiflow.storage import LocalStore


class _Writes:
    """Counts the process's writes; kills the process after the chosen one."""

    def __init__(self, kill_after: int | None, kill_on: str | None, record: Path | None) -> None:
        self.count = 0
        self.kill_after, self.kill_on, self.record = kill_after, kill_on, record

    def wrote(self, key: str) -> None:
        self.count += 1
        if self.record is not None:
            with self.record.open("a") as f:
                f.write(key + "\n")
        if self.count == self.kill_after or (self.kill_on and key.endswith(self.kill_on)):
            os.kill(os.getpid(), signal.SIGKILL)


def _patch_local_store(writes: _Writes) -> None:
    put, put_file, copy = LocalStore.put, LocalStore.put_file, LocalStore.copy

    def counted_put(self: LocalStore, key: str, data: bytes, *, if_absent: bool = False) -> None:
        put(self, key, data, if_absent=if_absent)
        writes.wrote(key)

    def counted_put_file(self: LocalStore, key: str, path: str | os.PathLike[str]) -> None:
        put_file(self, key, path)
        writes.wrote(key)

    def counted_copy(self: LocalStore, src: str, dst: str, *, if_absent: bool = False) -> None:
        copy(self, src, dst, if_absent=if_absent)
        writes.wrote(dst)

    LocalStore.put = counted_put  # type: ignore[method-assign]
    LocalStore.put_file = counted_put_file  # type: ignore[method-assign]
    LocalStore.copy = counted_copy  # type: ignore[method-assign]


def publish(root: Path, prep: Path) -> None:
    from scintiflow.pipeline import night as steps

    p: dict[str, Any] = pickle.loads(prep.read_bytes())
    store = LocalStore(root)
    cfg = p["cfg"]
    draft = steps.prepare_publish(
        store,
        p["night"],
        p["run_id"],
        p["merged"],
        p["carried"],
        p["known"],
        p["ref"],
        cfg,
        timings={},
        source_url=store.url,
        listing=p["listing"],
        begun=p["begun"],
    )
    report = steps.render_night_report(store, store, draft, p["merged"], browser=None)
    published = steps.publish_night(store, draft, report, cfg)
    steps.complete_night(store, published, cfg)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("publish", "flow"))
    parser.add_argument("root", type=Path)
    parser.add_argument("prep", type=Path, nargs="?")
    parser.add_argument("--kill-after", type=int)
    parser.add_argument("--kill-on")
    parser.add_argument("--record", type=Path)
    args, rest = parser.parse_known_args(argv)
    _patch_local_store(_Writes(args.kill_after, args.kill_on, args.record))
    if args.mode == "publish":
        publish(args.root, args.prep)
        return
    from scintiflow.cli import app

    app([a for a in rest if a != "--"], prog_name="scintiflow")


if __name__ == "__main__":
    main(sys.argv[1:])
