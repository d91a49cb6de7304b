"""The demo: the whole story on one store, driving the real retrain and nightly flows.

Simulate a labelled training set (sites A, B) and a shifted external site (C) a month back,
retrain a small ResNet-34, simulate tonight's exports with broken files, run nightly, add late
exports, run nightly again. `run_demo` returns a `DemoRecord` of what it did.

A plain function, not a flow: the retrain and nightly runs stay top-level flow runs, exactly as
a deployment runs them (what the demo shows in the Prefect UI), and the simulation steps are
the story's set-up, not pipeline tasks. Nothing here formats: a `DemoObserver` (the CLI's
narration) hears when each step starts and ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal, Protocol

from flows.nightly import nightly as nightly_flow
from flows.retrain import retrain as retrain_flow
from scintiflow.settings import Prefixes, get_settings
from scintiflow.sim import NightSummary, generate_night, write_night
from scintiflow.storage import ObjectStore, open_store

DemoStep = Literal["story_data", "retrain", "tonight", "nightly", "late_exports", "nightly_again"]
"""The demo's steps, in the order they run."""

LATE_EXPORTS = 4
"""Late-arriving exports added to tonight before the second nightly run."""


@dataclass
class DemoRecord:
    """What the demo did so far: filled in step by step, complete when `run_demo` returns."""

    out: str
    night: date
    train: NightSummary | None = None  # the labelled training set (sites A, B)
    external: NightSummary | None = None  # the external site's labelled set (site C)
    retrain: dict[str, Any] | None = None  # the retrain flow's result
    tonight: NightSummary | None = None  # tonight's exports, broken files included
    late_exports: int = 0
    nightly: list[dict[str, Any]] = field(default_factory=list)  # one summary per nightly run
    seconds: float = 0.0


class DemoError(RuntimeError):
    """A flow run of the demo did not complete; the demo stops there.

    `flow` is `retrain` or `nightly`, `step` the demo step, `reason` the stable code
    `<flow>_failed`; the message is the flow run's final state message.
    """

    def __init__(self, step: DemoStep, flow: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.flow = flow
        self.reason = f"{flow}_failed"


class DemoObserver(Protocol):
    """Hears the demo as it goes (the CLI's one prints; `SilentObserver` says nothing)."""

    def started(self, step: DemoStep) -> None:
        """`step` is about to run."""

    def finished(self, step: DemoStep, record: DemoRecord) -> None:
        """`step` ran; `record` holds what it did."""

    def simulating(self) -> AbstractContextManager[Callable[[int], None]]:
        """Around one simulated night: yields a callback taking the files written so far."""


class SilentObserver:
    """The default `DemoObserver`: hears everything, says nothing."""

    def started(self, step: DemoStep) -> None:
        """Nothing to say."""

    def finished(self, step: DemoStep, record: DemoRecord) -> None:
        """Nothing to say."""

    def simulating(self) -> AbstractContextManager[Callable[[int], None]]:
        """No progress to show."""
        return nullcontext(_ignore)


def _ignore(done: int) -> None:
    """The silent observer's simulation progress."""


def story_nights(night: date) -> tuple[date, date]:
    """The training and external-site export nights of the demo (a month before tonight)."""
    return night - timedelta(days=30), night - timedelta(days=29)


def run_demo(
    out: str,
    *,
    night: date,
    n: int = 24,
    seed: int = 7,
    train_images: int = 320,
    epochs: int = 10,
    observer: DemoObserver | None = None,
) -> DemoRecord:
    """Tell the whole story on the store at `out`; `DemoError` when a flow run fails.

    `n` good images tonight, `train_images` labelled training images (the external site gets
    a third of that, at least 12), `epochs` per fit.
    """
    started = time.perf_counter()
    obs = observer or SilentObserver()
    store = open_store(out)
    prefixes = get_settings().prefixes
    record = DemoRecord(out=out, night=night)
    train_night, external_night = story_nights(night)

    obs.started("story_data")
    record.train = _simulate(
        obs, store, prefixes, train_night, n=train_images, sites=["A", "B"], seed=seed
    )
    record.external = _simulate(
        obs,
        store,
        prefixes,
        external_night,
        n=max(12, train_images // 3),
        sites=["C"],
        seed=seed + 1,
    )
    obs.finished("story_data", record)

    obs.started("retrain")
    record.retrain = _retrain(store, out, record.train, record.external, epochs)
    obs.finished("retrain", record)

    obs.started("tonight")
    record.tonight = _simulate(
        obs,
        store,
        prefixes,
        night,
        n=n,
        sites=["A", "B", "C"],
        seed=seed + 2,
        bad_fraction=0.2,
        difficulty=0.5,
    )
    obs.finished("tonight", record)

    obs.started("nightly")
    record.nightly.append(_nightly(out, night, "nightly"))
    obs.finished("nightly", record)

    obs.started("late_exports")
    record.late_exports = _late_exports(store, prefixes, night, LATE_EXPORTS, seed + 3)
    obs.finished("late_exports", record)

    obs.started("nightly_again")
    record.nightly.append(_nightly(out, night, "nightly_again"))
    record.seconds = time.perf_counter() - started
    obs.finished("nightly_again", record)
    return record


def _simulate(
    obs: DemoObserver,
    store: ObjectStore,
    prefixes: Prefixes,
    night: date,
    *,
    n: int,
    sites: list[str],
    seed: int,
    bad_fraction: float = 0.0,
    difficulty: float = 0.3,
) -> NightSummary:
    """One simulated night of exports and its labels (the story's labelled sets: no faults,
    difficulty 0.3)."""
    with obs.simulating() as progress:
        return write_night(
            store,
            night=night,
            n=n,
            sites=sites,
            seed=seed,
            bad_fraction=bad_fraction,
            difficulty=difficulty,
            exports_prefix=prefixes.exports,
            labels_prefix=prefixes.labels,
            progress=progress,
        )


def _retrain(
    store: ObjectStore, out: str, train: NightSummary, external: NightSummary, epochs: int
) -> dict[str, Any]:
    """The retrain flow on the story's data: a small ResNet-34 (64 px, 2 folds)."""
    state = retrain_flow(
        data=out,
        labels=store.url_for(train.labels_key),
        external_data=out,
        external_labels=store.url_for(external.labels_key),
        archs=["resnet34"],
        folds=2,
        epochs=epochs,
        image_size=64,
        n_boot=200,
        seed=0,
        return_state=True,
    )
    if not state.is_completed():
        raise DemoError("retrain", "retrain", str(state.message))
    result: dict[str, Any] = state.result()
    return result


def _nightly(out: str, night: date, step: DemoStep) -> dict[str, Any]:
    """One nightly flow run; champion-or-latest, since the demo model is below the floor."""
    state = nightly_flow(
        night=night.isoformat(),
        source=out,
        model="champion-or-latest",
        batch_size=16,
        shard_size=64,
        return_state=True,
    )
    if not state.is_completed():
        raise DemoError(step, "nightly", str(state.message))
    result: dict[str, Any] = state.result()
    return result


def _late_exports(store: ObjectStore, prefixes: Prefixes, night: date, n: int, seed: int) -> int:
    """Late-arriving exports for tonight (no labels file is rewritten)."""
    prefix = f"{prefixes.exports}/{night.isoformat()}"
    count = 0
    for f in generate_night(n, night=night, sites=("B",), seed=seed):
        store.put(f"{prefix}/{f.relative_key}", f.data)
        count += 1
    return count
