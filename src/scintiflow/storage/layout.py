"""Every storage key and file name the product writes or reads, in one place.

    exports/<night>/...                          what the sites export (read only)
    results/<night>/<run_id>/                    one run folder
        predictions.csv / predictions.jsonl      the scored rows
        quarantined.jsonl                        the run's quarantined inputs
        heatmaps/<sha256>.map.png / .overlay.png the Grad-CAM outputs of one input
        thumbs/<sha256>.scan.jpg / .overlay.jpg  the report's small pictures (no identifiers)
        sc/<sha256>.dcm                          DICOM Secondary Capture of the overlay
        shards/<index>.json                      a shard's result, written when it is done
        checks/checks.json, checks/docs/         the night's checks document and GX data docs
        report.html / report.pdf                 the clinician report
        manifest.json                            written last: the run exists from then on
    results/<night>/latest.json                  the newest published run of the night
    results/<night>/claims/<set>.json            one claim per distinct set of new inputs
    quarantine/<night>/<key>[.reason.json]       rejected inputs and why
    state/ledger/<sha256>.json                   which input was already published, by content
    state/ledger-index/<fingerprint hash>.json   listing fingerprint -> content hash

Objects are named by the SHA-256 of their source bytes, never by an identifier.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date

MANIFEST = "manifest.json"
LATEST = "latest.json"
PREDICTIONS_CSV = "predictions.csv"
PREDICTIONS_JSONL = "predictions.jsonl"
QUARANTINED_JSONL = "quarantined.jsonl"
CHECKS_JSON = "checks/checks.json"
CHECKS_DOCS_DIR = "checks/docs"
CHECKS_DOCS = "checks/docs/index.html"
REPORT_HTML = "report.html"
REPORT_PDF = "report.pdf"
HEATMAPS_DIR = "heatmaps"
THUMBS_DIR = "thumbs"
SC_DIR = "sc"
SHARDS_DIR = "shards"
CLAIMS_DIR = "claims"
RUNS_DIR = "runs"
REASON_SUFFIX = ".reason.json"


def _night(night: date | str) -> str:
    day = night if isinstance(night, str) else night.isoformat()
    date.fromisoformat(day)  # a night is an ISO date; anything else is a caller's bug
    return day


def _hex(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("object names are lowercase hex SHA-256 digests")
    return sha256


def _run_segment(run_id: str) -> str:
    if not run_id or "/" in run_id or run_id in (CLAIMS_DIR, RUNS_DIR):
        raise ValueError("a run id is one path segment, not a reserved name")
    return run_id


@dataclass(frozen=True, slots=True)
class Layout:
    """The store's top-level prefixes (settings: `SCINTIFLOW_PREFIX_*`) and the keys under them."""

    exports: str = "exports"
    results: str = "results"
    quarantine: str = "quarantine"
    state: str = "state"
    models: str = "models"

    @classmethod
    def from_prefixes(cls, prefixes: object) -> Layout:
        """From `settings.prefixes` (anything with these attribute names)."""
        return cls(**{f: str(getattr(prefixes, f)).strip("/") for f in cls.__slots__})

    # exports
    def exports_night(self, night: date | str) -> str:
        """`exports/<night>/`: the prefix listed for a night."""
        return f"{self.exports}/{_night(night)}/"

    # results
    def night_results(self, night: date | str) -> str:
        return f"{self.results}/{_night(night)}"

    def run_prefix(self, night: date | str, run_id: str) -> str:
        return f"{self.night_results(night)}/{_run_segment(run_id)}"

    def run_file(self, night: date | str, run_id: str, name: str) -> str:
        return f"{self.run_prefix(night, run_id)}/{name}"

    def latest(self, night: date | str) -> str:
        return f"{self.night_results(night)}/{LATEST}"

    def claim_set_prefix(self, night: date | str, input_set: str) -> str:
        """`claims/<input set>/`: the generations of one set's claim (listed in order)."""
        return f"{self.night_results(night)}/{CLAIMS_DIR}/{_hex(input_set)}/"

    def claim_generation(self, night: date | str, input_set: str, generation: int) -> str:
        """`claims/<input set>/<generation>.json`: a stale claim is taken over by writing the
        next generation (`if_absent`), so exactly one run wins each takeover."""
        return f"{self.claim_set_prefix(night, input_set)}{generation:04d}.json"

    def runs_prefix(self, night: date | str) -> str:
        """`results/<night>/runs/`: the run registry (one record per run that started)."""
        return f"{self.night_results(night)}/{RUNS_DIR}/"

    def run_record(self, night: date | str, run_id: str) -> str:
        return f"{self.runs_prefix(night)}{_run_segment(run_id)}.json"

    # quarantine
    def quarantine_night(self, night: date | str) -> str:
        return f"{self.quarantine}/{_night(night)}/"

    def quarantine_object(self, night: date | str, key: str) -> str:
        """Where a rejected export is copied: its key below the night's quarantine folder."""
        base = self.exports_night(night)
        rel = key[len(base) :] if key.startswith(base) else key.rsplit("/", 1)[-1]
        return self.quarantine_night(night) + rel

    # state
    def ledger_entry(self, sha256: str) -> str:
        return f"{self.state}/ledger/{_hex(sha256)}.json"

    def ledger_key_index(self, key: str, fingerprint: str) -> str:
        """Index entry for one listed object (key + listing fingerprint) -> its content hash."""
        digest = hashlib.sha256(f"{key}\0{fingerprint}".encode()).hexdigest()
        return f"{self.state}/ledger-index/{digest}.json"


def heatmap_keys(prefix: str, sha256: str, class_name: str | None = None) -> tuple[str, str]:
    """(16-bit map key, overlay key) of an input, named by its SHA-256 (and class)."""
    stem = f"{prefix.strip('/')}/{HEATMAPS_DIR}/{_hex(sha256)}"
    if class_name is not None:
        stem = f"{stem}.{class_name}"
    return f"{stem}.map.png", f"{stem}.overlay.png"


def thumbnail_keys(prefix: str, sha256: str) -> tuple[str, str]:
    """(scan thumbnail key, overlay thumbnail key) for the report."""
    stem = f"{prefix.strip('/')}/{THUMBS_DIR}/{_hex(sha256)}"
    return f"{stem}.scan.jpg", f"{stem}.overlay.jpg"


def sc_key(prefix: str, sha256: str) -> str:
    """`<run>/sc/<sha256>.dcm`."""
    return f"{prefix.strip('/')}/{SC_DIR}/{_hex(sha256)}.dcm"


def shard_result_key(prefix: str, index: int) -> str:
    """`<run>/shards/<index>.json` (zero-padded: listed in shard order)."""
    return f"{prefix.strip('/')}/{SHARDS_DIR}/{index:05d}.json"


def parse_run_prefix(prefix: str) -> tuple[str, str]:
    """`results/<night>/<run_id>` -> (night, run_id)."""
    parts = prefix.strip("/").split("/")
    if len(parts) < 3:
        raise ValueError("a run prefix is <results>/<night>/<run_id>")
    return _night(parts[-2]), parts[-1]


__all__ = [
    "CHECKS_DOCS",
    "CHECKS_DOCS_DIR",
    "CHECKS_JSON",
    "CLAIMS_DIR",
    "HEATMAPS_DIR",
    "LATEST",
    "MANIFEST",
    "PREDICTIONS_CSV",
    "PREDICTIONS_JSONL",
    "QUARANTINED_JSONL",
    "REASON_SUFFIX",
    "REPORT_HTML",
    "REPORT_PDF",
    "SC_DIR",
    "SHARDS_DIR",
    "THUMBS_DIR",
    "Layout",
    "heatmap_keys",
    "parse_run_prefix",
    "sc_key",
    "shard_result_key",
    "thumbnail_keys",
]
