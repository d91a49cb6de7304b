"""`checks/checks.json`: the one builder of the night's checks document.

Written by the merge step of the nightly flow and by `scintiflow check` (the same code path):
inputs, verdicts per key, reason counts with what each code means, the thresholds and their
fingerprint, where the data docs are, and GX's statistics of the night's validation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scintiflow.checks.reasons import CHECK_VERSION, REASONS, severity
from scintiflow.checks.suite import CheckOutcome
from scintiflow.checks.thresholds import CheckThresholds

CHECKS_SCHEMA = "scintiflow.checks.suite/1"


def checks_document(
    *,
    night: str,
    run_id: str,
    keys: Sequence[str],
    outcome: CheckOutcome,
    codes: Mapping[str, Sequence[str]],
    locations: Mapping[str, str],
    thresholds: CheckThresholds,
    docs_key: str | None,
    not_read: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The document for one night. `codes`: quarantined key -> its codes (the checks' and,
    for inputs that could not be scored after all, the scoring step's); `locations`: where
    each quarantined key's copy or reason file is; `not_read`: key -> storage error of the
    inputs the store did not give (not checked, not quarantined: retried by the next run)."""
    not_read = dict(not_read or {})
    reason_counts: dict[str, int] = {}
    for k in keys:
        if k in not_read:
            continue
        for code in outcome.codes.get(k, ()) if k not in codes else codes[k]:
            reason_counts[code] = reason_counts.get(code, 0) + 1
    accepted = [k for k in outcome.accepted if k not in codes]
    return {
        "schema": CHECKS_SCHEMA,
        "check_version": CHECK_VERSION,
        "night": night,
        "run_id": run_id,
        "inputs": len(keys),
        "accepted": sorted(accepted),
        "warned": {k: list(v) for k, v in sorted(outcome.warned.items()) if k not in codes},
        "quarantined": {k: list(v) for k, v in sorted(codes.items())},
        "quarantine": dict(sorted(locations.items())),
        "counts": {
            "inputs": len(keys),
            "accepted": len(accepted),
            "quarantined": len(codes),
            "warned": sum(1 for k in outcome.warned if k not in codes),
            "not_read": len(not_read),
        },
        "not_read": dict(sorted(not_read.items())),
        "reason_counts": dict(sorted(reason_counts.items())),
        "reasons": {
            c: {"severity": severity(c), "explanation": REASONS.get(c, ("", ""))[1]}
            for c in sorted(reason_counts)
        },
        "thresholds": thresholds.as_dict(),
        "thresholds_fingerprint": thresholds.fingerprint(),
        "docs": docs_key,
        "gx": {"success": outcome.success, **outcome.statistics},
    }
