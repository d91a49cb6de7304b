"""Which model scores the night, loaded and opened once per process.

`ModelRef` is the small record the flow passes between tasks (safe as a Prefect parameter);
`scoring_model` and `engine_for` turn it into the loaded version and the opened engine,
cached per process (versions are immutable, so the caches never go stale).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scintiflow.inference.engines import Engine, ScoringModel
    from scintiflow.storage import ObjectStore

CHAMPION_OR_LATEST = "champion-or-latest"
NO_CHAMPION_NOTE = (
    "no champion has been promoted: scored with the latest registered version "
    "(demo fallback, not for clinical use)"
)


@lru_cache(maxsize=16)
def store_for(url: str) -> ObjectStore:
    """One store per URL per process (S3 clients are costly to build)."""
    from scintiflow.storage import open_store

    return open_store(url)


@dataclass(frozen=True)
class ModelRef:
    """Which model version scores the night (a small record: safe as a task parameter)."""

    registry: str
    name: str
    selector: str
    version: str
    arch: str
    engine: str
    models_prefix: str = "models"
    note: str | None = None  # e.g. the no-champion fallback

    def to_dict(self) -> dict[str, Any]:
        return {
            "registry": self.registry,
            "name": self.name,
            "selector": self.selector,
            "version": self.version,
            "arch": self.arch,
            "engine": self.engine,
            "note": self.note,
        }


def resolve_model(
    registry_url: str, name: str, selector: str, engine: str, *, models_prefix: str = "models"
) -> ModelRef:
    """Resolve `champion`/`latest`/`champion-or-latest`/an id to a version and an engine."""
    from scintiflow.inference.engines import select_engine
    from scintiflow.ml.registry import champion_version, read_version

    store = store_for(registry_url)
    note = None
    wanted = selector
    if selector == CHAMPION_OR_LATEST:
        wanted = "champion"
        if champion_version(store, name, models_prefix) is None:
            wanted, note = "latest", NO_CHAMPION_NOTE
    meta = read_version(store, name, wanted, models_prefix)
    sm = scoring_model(registry_url, name, meta.version, models_prefix)
    kind = select_engine(engine, sm)
    return ModelRef(
        registry_url, name, selector, meta.version, meta.arch, kind, models_prefix, note
    )


@lru_cache(maxsize=4)
def scoring_model(
    registry_url: str, name: str, version: str, models_prefix: str = "models"
) -> ScoringModel:
    """A version loaded once per process."""
    from scintiflow.inference.engines import load_scoring_model

    return load_scoring_model(store_for(registry_url), name, version, models_prefix)


def model_for(ref: ModelRef) -> ScoringModel:
    return scoring_model(ref.registry, ref.name, ref.version, ref.models_prefix)


_ENGINE_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _engine(registry_url: str, name: str, version: str, models_prefix: str, kind: str) -> Engine:
    from scintiflow.inference.engines import open_engine

    return open_engine(kind, scoring_model(registry_url, name, version, models_prefix))


def engine_for(ref: ModelRef) -> Engine:
    """The opened engine of a model reference, once per process."""
    with _ENGINE_LOCK:
        return _engine(ref.registry, ref.name, ref.version, ref.models_prefix, ref.engine)


def training_reference(ref: ModelRef) -> dict[str, Any]:
    """The version's training reference (drift's baseline)."""
    from scintiflow.ml.registry import read_version

    meta = read_version(store_for(ref.registry), ref.name, ref.version, ref.models_prefix)
    return dict(meta.training_reference or {})
