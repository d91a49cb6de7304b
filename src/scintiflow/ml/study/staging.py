"""Where a run's final fits wait for `conclude`: a staging prefix inside the model's folder.

Layout (under the registry store, `<models>` = the models prefix, `<name>` = the model):

    <models>/<name>/staging/<run id>/<arch>/weights.pt         the final fit's state dict
    <models>/<name>/staging/<run id>/<arch>/predictions.json   held-out keys, labels, probs,
                                                               patient groups (hashes)

A final fit may run in another process than `conclude`: it writes these two objects and
returns their keys (and the weights' SHA-256) in its `FinalFit`; `conclude` reads them back,
registers the best architecture as a normal, immutable version and leaves the staging folder
in place (the store has no delete; a lifecycle rule on `staging/` may expire it). `staging`
is never a version id (`registry` refuses it), so versions and staging never collide. Staged
objects are overwritten when a final fit is re-run under the same run id (a retry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from scintiflow.domain import sha256_hex
from scintiflow.ml.evaluation import EvalSet
from scintiflow.storage import validate_key

if TYPE_CHECKING:
    from scintiflow.ml.study.records import FinalFit
    from scintiflow.storage import ObjectStore

STAGING = "staging"


@dataclass(frozen=True)
class StagingArea:
    """One run's staging folder in the registry: `<models_prefix>/<model>/staging/<run_id>/`.

    Also names where `conclude` registers: model `model_name` under `models_prefix`.
    """

    models_prefix: str
    model_name: str
    run_id: str

    def arch_prefix(self, arch: str) -> str:
        """The folder of one architecture's final fit."""
        return self._key(STAGING, self.run_id, arch)

    def version_prefix(self, version: str) -> str:
        """The folder of a registered version of this model."""
        return self._key(version)

    def _key(self, *parts: str) -> str:
        head = (self.models_prefix.strip("/"), self.model_name)
        return validate_key("/".join(p for p in (*head, *parts) if p))


def _predictions_json(eval_sets: list[EvalSet]) -> bytes:
    sets = [
        {
            "name": e.name,
            "keys": list(e.keys),
            "y_true": np.asarray(e.y_true).astype(int).tolist(),
            "probs": np.asarray(e.probs, dtype=np.float64).tolist(),
            "groups": None if e.groups is None else np.asarray(e.groups).tolist(),
        }
        for e in eval_sets
    ]
    return json.dumps({"sets": sets}, allow_nan=False).encode()


def stage_final_fit(
    store: ObjectStore, staging: StagingArea, arch: str, weights: bytes, eval_sets: list[EvalSet]
) -> tuple[str, str, str]:
    """Write one final fit's weights and held-out predictions; (weights key, its SHA-256,
    predictions key)."""
    base = staging.arch_prefix(arch)
    weights_key, predictions_key = f"{base}/weights.pt", f"{base}/predictions.json"
    store.put(weights_key, weights)
    store.put(predictions_key, _predictions_json(eval_sets))
    return weights_key, sha256_hex(weights), predictions_key


def read_staged_weights(store: ObjectStore, final: FinalFit) -> bytes:
    """The staged weights of `final`, checked against the SHA-256 the fit recorded."""
    from scintiflow.ml.registry import RegistryError

    data = store.get(final.weights_key)
    if sha256_hex(data) != final.weights_sha256:
        raise RegistryError(
            f"staged weights of {final.arch!r} do not match their recorded SHA-256",
            reason="weights_checksum_mismatch",
        )
    return data


def read_staged_predictions(store: ObjectStore, final: FinalFit) -> list[EvalSet]:
    """The held-out predictions of `final` (internal, then external when there is one)."""
    sets = json.loads(store.get(final.predictions_key))["sets"]
    return [
        EvalSet(
            name=str(s["name"]),
            keys=[str(k) for k in s["keys"]],
            y_true=np.asarray(s["y_true"], dtype=np.int64),
            probs=np.asarray(s["probs"], dtype=np.float64).reshape(len(s["keys"]), -1),
            groups=None if s["groups"] is None else np.asarray(s["groups"]),
        )
        for s in sets
    ]
