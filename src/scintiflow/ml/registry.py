"""Model versions in the store, the champion pointer and the promotion gate.

Layout under `models/<name>/` (the prefix is configurable):

    <version>/weights.pt, preprocess.json, classes.json, temperature.json, metrics.json,
              card.json, card.md, lineage.json, training_reference.json, <extra files>,
              version.json        written LAST: the completeness marker (with file hashes)
    champion.json                 pointer to the promoted version (mutable, as staging/ is)
    decisions/<time>-<version>.json   every gate decision, promoted or not, with its reason
    staging/<run id>/<arch>/...   a run's final fits until it registers one (see
                                  `scintiflow.ml.study.staging`); never a version

Every file of a version is written with `if_absent=True`: a version is immutable, and a
second write of any of its files raises `KeyExistsError`. A version without `version.json`
(a crashed write) is incomplete: it is never listed, read or promoted.

Only `load_model` needs torch, and imports it lazily.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from scintiflow.domain import new_run_id, sha256_hex
from scintiflow.storage import KeyNotFoundError, ObjectStore, validate_key

if TYPE_CHECKING:
    import torch

VERSION_MARKER = "version.json"
CORE_FILES: tuple[str, ...] = (
    "weights.pt",
    "preprocess.json",
    "classes.json",
    "temperature.json",
    "metrics.json",
    "card.json",
    "card.md",
    "lineage.json",
    "training_reference.json",
)
RESERVED_FOLDERS: tuple[str, ...] = ("decisions", "staging")
"""Folders of `models/<name>/` that are not versions (the gate log, runs' staged fits)."""
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RegistryError(Exception):
    """A registry lookup or write failed; `reason` is a stable lower_snake code.

    Codes: `invalid_name`, `invalid_version`, `version_not_found`, `incomplete_version`,
    `no_versions`, `no_champion`, `reserved_file`, `weights_checksum_mismatch`,
    `corrupt_version`.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _json(obj: Any) -> bytes:
    from scintiflow.ml.evaluation import json_safe

    return (json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise RegistryError(
            "model name must be 1-64 of a-z, 0-9, '.', '_', '-' (starting alphanumeric)",
            reason="invalid_name",
        )
    return name


def _check_version(version: str) -> str:
    if not _VERSION_RE.match(version) or version in RESERVED_FOLDERS:
        raise RegistryError(f"{version!r} is not a valid version id", reason="invalid_version")
    return version


def _base(name: str, models_prefix: str) -> str:
    prefix = models_prefix.strip("/")
    return f"{prefix}/{_check_name(name)}" if prefix else _check_name(name)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RegisteredVersion:
    """A complete model version as read back from the store (weights excluded)."""

    name: str
    version: str
    arch: str
    preprocess: dict[str, Any]
    classes: tuple[str, ...]
    temperature: float
    metrics: dict[str, Any]
    card: dict[str, Any]
    lineage: dict[str, Any]
    training_reference: dict[str, Any]
    created_at: str


def register_version(
    store: ObjectStore,
    name: str,
    *,
    arch: str,
    weights: bytes,
    preprocess: dict[str, Any],
    classes: Sequence[str],
    temperature: float,
    metrics: dict[str, Any],
    card: dict[str, Any],
    lineage: dict[str, Any],
    training_reference: dict[str, Any],
    card_md: str | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    models_prefix: str = "models",
    version: str | None = None,
) -> str:
    """Write a new immutable version and return its id (`v<UTC time>-<6 hex>`, sortable).

    `extra_files` (report.html, plots, model.onnx, ...) go into the version folder too; their
    names may contain `/` but not collide with the core files. `version` pins the id (tests,
    retries); writing to an existing version raises `KeyExistsError`.
    """
    base = _base(name, models_prefix)
    now = _utc_now()
    version = _check_version(version or f"v{new_run_id(now)}")
    extras = dict(extra_files or {})
    for fname in extras:
        validate_key(fname)
        if fname in (*CORE_FILES, VERSION_MARKER):
            raise RegistryError(f"extra file {fname!r} is a reserved name", reason="reserved_file")
    if not (temperature > 0):
        raise ValueError("temperature must be positive")
    created_at = f"{now:%Y-%m-%dT%H:%M:%SZ}"
    files: dict[str, bytes] = {
        "weights.pt": weights,
        "preprocess.json": _json(preprocess),
        "classes.json": _json(list(classes)),
        "temperature.json": _json({"temperature": float(temperature)}),
        "metrics.json": _json(metrics),
        "card.json": _json(card),
        "card.md": (card_md if card_md is not None else _card_md_fallback(name, arch, card)).encode(
            "utf-8"
        ),
        "lineage.json": _json(lineage),
        "training_reference.json": _json(training_reference),
        **extras,
    }
    for fname, data in files.items():
        store.put(f"{base}/{version}/{fname}", data, if_absent=True)
    marker = {
        "name": name,
        "version": version,
        "arch": arch,
        "classes": list(classes),
        "temperature": float(temperature),
        "created_at": created_at,
        "files": {fname: {"sha256": sha256_hex(d), "size": len(d)} for fname, d in files.items()},
    }
    store.put(f"{base}/{version}/{VERSION_MARKER}", _json(marker), if_absent=True)
    return version


def _card_md_fallback(name: str, arch: str, card: Mapping[str, Any]) -> str:
    lines = [f"# Model card: {name} ({arch})", ""]
    lines += [f"- **{k}**: {json.dumps(v, default=str)}" for k, v in card.items()]
    return "\n".join(lines) + "\n"


def list_versions(store: ObjectStore, name: str, models_prefix: str = "models") -> list[str]:
    """Complete versions (those with `version.json`), oldest first."""
    base = _base(name, models_prefix) + "/"
    out = []
    for info in store.list(base):
        rest = info.key[len(base) :]
        parts = rest.split("/")
        if len(parts) == 2 and parts[1] == VERSION_MARKER and parts[0] not in RESERVED_FOLDERS:
            out.append(parts[0])
    return sorted(out)


def champion_version(store: ObjectStore, name: str, models_prefix: str = "models") -> str | None:
    """The promoted version id, or None when nothing was promoted yet."""
    pointer = champion_record(store, name, models_prefix)
    return None if pointer is None else str(pointer["version"])


def champion_record(
    store: ObjectStore, name: str, models_prefix: str = "models"
) -> dict[str, Any] | None:
    """The whole `champion.json` (version, promoted_at, accuracy, reason, external_set)."""
    try:
        data = store.get(f"{_base(name, models_prefix)}/champion.json")
    except KeyNotFoundError:
        return None
    record: dict[str, Any] = json.loads(data)
    return record


def _resolve(store: ObjectStore, name: str, version: str, models_prefix: str) -> str:
    if version == "champion":
        found = champion_version(store, name, models_prefix)
        if found is None:
            raise RegistryError(f"model {name!r} has no champion yet", reason="no_champion")
        return found
    if version == "latest":
        versions = list_versions(store, name, models_prefix)
        if not versions:
            raise RegistryError(f"model {name!r} has no complete version", reason="no_versions")
        return versions[-1]
    return _check_version(version)


def _read_json(store: ObjectStore, key: str) -> Any:
    try:
        return json.loads(store.get(key))
    except KeyNotFoundError:
        raise RegistryError(
            f"version file {key.rsplit('/', 1)[-1]!r} is missing", reason="corrupt_version"
        ) from None


def _marker(store: ObjectStore, name: str, version: str, models_prefix: str) -> dict[str, Any]:
    base = f"{_base(name, models_prefix)}/{version}"
    try:
        marker: dict[str, Any] = json.loads(store.get(f"{base}/{VERSION_MARKER}"))
    except KeyNotFoundError:
        if any(True for _ in store.list(base + "/")):
            raise RegistryError(
                f"version {version!r} of {name!r} is incomplete (no {VERSION_MARKER})",
                reason="incomplete_version",
            ) from None
        raise RegistryError(
            f"model {name!r} has no version {version!r}", reason="version_not_found"
        ) from None
    return marker


def read_version(
    store: ObjectStore, name: str, version: str = "champion", models_prefix: str = "models"
) -> RegisteredVersion:
    """A complete version's metadata; `version` may be an id, `champion` or `latest`."""
    version = _resolve(store, name, version, models_prefix)
    marker = _marker(store, name, version, models_prefix)
    base = f"{_base(name, models_prefix)}/{version}"
    return RegisteredVersion(
        name=name,
        version=version,
        arch=str(marker["arch"]),
        preprocess=_read_json(store, f"{base}/preprocess.json"),
        classes=tuple(_read_json(store, f"{base}/classes.json")),
        temperature=float(_read_json(store, f"{base}/temperature.json")["temperature"]),
        metrics=_read_json(store, f"{base}/metrics.json"),
        card=_read_json(store, f"{base}/card.json"),
        lineage=_read_json(store, f"{base}/lineage.json"),
        training_reference=_read_json(store, f"{base}/training_reference.json"),
        created_at=str(marker["created_at"]),
    )


def load_weights(
    store: ObjectStore, name: str, version: str = "champion", models_prefix: str = "models"
) -> bytes:
    """The version's `weights.pt` bytes, checked against the SHA-256 in `version.json`."""
    version = _resolve(store, name, version, models_prefix)
    marker = _marker(store, name, version, models_prefix)
    data = store.get(f"{_base(name, models_prefix)}/{version}/weights.pt")
    expected = marker.get("files", {}).get("weights.pt", {}).get("sha256")
    if expected is not None and sha256_hex(data) != expected:
        raise RegistryError(
            f"weights of {name!r} {version!r} do not match their recorded SHA-256",
            reason="weights_checksum_mismatch",
        )
    return data


def load_model(
    store: ObjectStore, name: str, version: str = "champion", models_prefix: str = "models"
) -> tuple[torch.nn.Module, RegisteredVersion]:
    """The version's torch model (CPU, eval mode) and its metadata."""
    import io

    import torch

    from scintiflow.ml.models import create_model

    meta = read_version(store, name, version, models_prefix)
    model = create_model(meta.arch, num_classes=len(meta.classes), weights="none")
    state = torch.load(
        io.BytesIO(load_weights(store, name, meta.version, models_prefix)),
        map_location="cpu",
        weights_only=True,
    )
    model.load_state_dict(state)
    model.eval()
    return model, meta


# --------------------------------------------------------------------------------------------
# Promotion gate


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate becomes champion, and why (`reason` is a lower_snake code).

    Codes: `no_champion_above_floor`, `better_or_equal_than_champion` (promote);
    `below_floor`, `worse_than_champion`, `invalid_accuracy`, `champion_changed` (reject).
    """

    promote: bool
    reason: str
    candidate_version: str
    candidate_accuracy: float
    champion_version: str | None
    champion_accuracy: float | None
    floor: float
    decided_at: str
    external_set: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def promotion_decision(
    candidate_accuracy: float,
    champion_accuracy: float | None,
    *,
    floor: float = 0.85,
    candidate_version: str = "",
    champion_version: str | None = None,
    external_set: str = "",
) -> GateDecision:
    """Promote iff the candidate reaches `floor` and is at least as accurate as the champion.

    Both accuracies must come from the SAME external set (`external_set` names it, e.g. the
    labels file's SHA-256): re-score the champion on the candidate's set before calling this.
    """
    import math

    def decide(promote: bool, reason: str) -> GateDecision:
        return GateDecision(
            promote=promote,
            reason=reason,
            candidate_version=candidate_version,
            candidate_accuracy=float(candidate_accuracy),
            champion_version=champion_version,
            champion_accuracy=None if champion_accuracy is None else float(champion_accuracy),
            floor=float(floor),
            decided_at=f"{_utc_now():%Y-%m-%dT%H:%M:%S.%fZ}",
            external_set=external_set,
        )

    if not math.isfinite(candidate_accuracy):
        return decide(False, "invalid_accuracy")
    if candidate_accuracy < floor:
        return decide(False, "below_floor")
    if champion_accuracy is None or champion_version is None:
        return decide(True, "no_champion_above_floor")
    if candidate_accuracy >= champion_accuracy:
        return decide(True, "better_or_equal_than_champion")
    return decide(False, "worse_than_champion")


def apply_gate(
    store: ObjectStore, name: str, decision: GateDecision, models_prefix: str = "models"
) -> GateDecision:
    """Record the decision and, when it promotes, point `champion.json` at the candidate.

    The candidate must be a complete version. If the champion changed since the decision was
    made (another run promoted meanwhile), the decision is turned into a rejection with reason
    `champion_changed`, recorded, and returned: the caller must decide again.
    """
    base = _base(name, models_prefix)
    if decision.promote:
        _marker(store, name, _check_version(decision.candidate_version), models_prefix)
        current = champion_version(store, name, models_prefix)
        if current != decision.champion_version:
            decision = replace(decision, promote=False, reason="champion_changed")
    stamp = re.sub(r"[^0-9A-Za-z]", "", decision.decided_at)
    tag = decision.candidate_version or "unversioned"
    store.put(f"{base}/decisions/{stamp}-{tag}.json", _json(decision.to_dict()), if_absent=True)
    if decision.promote:
        pointer = {
            "version": decision.candidate_version,
            "promoted_at": decision.decided_at,
            "accuracy": decision.candidate_accuracy,
            "reason": decision.reason,
            "external_set": decision.external_set,
            "floor": decision.floor,
            "previous": decision.champion_version,
        }
        store.put(f"{base}/champion.json", _json(pointer))
    return decision


def list_decisions(
    store: ObjectStore, name: str, models_prefix: str = "models"
) -> list[dict[str, Any]]:
    """Every recorded gate decision, oldest first."""
    base = f"{_base(name, models_prefix)}/decisions/"
    return [json.loads(store.get(info.key)) for info in store.list(base)]
