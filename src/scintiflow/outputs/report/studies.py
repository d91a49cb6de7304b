"""One worklist row while rendering: its identifiers, thumbnails and DICOM Secondary Capture."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scintiflow.outputs.report.identifiers import (
    Identifiers,
    overlay_thumbnail,
    read_identifiers,
    scan_thumbnail,
)
from scintiflow.outputs.report.inputs import ReportInput
from scintiflow.storage import ObjectStore, StoreError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


@dataclass
class Study:
    """One worklist row while rendering (holds identifiers: never logged or serialised)."""

    row: Mapping[str, Any]
    rank: int
    identifiers: Identifiers | None = None
    header: Dataset | None = None
    frame: int | None = None
    scan_uri: str | None = None
    overlay_uri: str | None = None
    problems: list[str] = field(default_factory=list)  # report reason codes
    sc_key: str | None = None


def gather_study(
    source: ObjectStore, results: ObjectStore, study: Study, preferred_view: str
) -> None:
    """Read the original object (identifiers, scan thumbnail) and the overlay thumbnail."""
    from scintiflow.ingest.dicom import decode_dicom
    from scintiflow.outputs.secondary_capture import read_source, source_frame_number

    row = study.row
    try:
        data = source.get(str(row["key"]))
    except StoreError:
        study.problems.append("source_unavailable")
    else:
        try:
            study.header = read_source(data)
            study.identifiers = read_identifiers(study.header)
            record = decode_dicom(data, preferred_view=preferred_view, patient_hash_key=None)
            study.scan_uri = scan_thumbnail(record.pixels)
            study.frame = source_frame_number(record.frames, record.frame_index)
        except Exception:  # a decode error or a pydicom one: its message may quote tag values
            study.problems.append("source_unreadable")
    overlay_key = str(row.get("overlay_key") or "")
    if not overlay_key:
        study.problems.append("overlay_unavailable")
        return
    try:
        study.overlay_uri = overlay_thumbnail(results.get(overlay_key))
    except Exception:  # missing or not a readable PNG
        study.problems.append("overlay_unavailable")


def write_sc(
    results: ObjectStore, study: Study, inp: ReportInput, dest_prefix: str, instance: int
) -> str | None:
    """Build and write the Secondary Capture of one study's overlay; its key, or None."""
    if study.header is None or study.overlay_uri is None:
        return None
    try:
        return _build_and_put_sc(results, study, inp, dest_prefix, instance)
    except Exception:  # its message may quote a DICOM value: keep only the reason code
        study.problems.append("sc_failed")
        return None


def _build_and_put_sc(
    results: ObjectStore, study: Study, inp: ReportInput, dest_prefix: str, instance: int
) -> str:
    from scintiflow.outputs.secondary_capture import (
        build_secondary_capture,
        encode,
        png_rgb,
        sc_key,
        sc_uids,
    )

    row = study.row
    assert study.header is not None
    sha = str(row["sha256"])
    series_uid, sop_uid = sc_uids(inp.run_id, str(study.header.StudyInstanceUID), sha)
    ds = build_secondary_capture(
        study.header,
        png_rgb(results.get(str(row["overlay_key"]))),
        series_uid=series_uid,
        sop_uid=sop_uid,
        instance_number=instance,
        model_name=inp.model_name,
        model_version=str(row.get("model_version") or inp.model_version),
        engine=str(row.get("engine") or inp.engine),
        predicted_label=str(row["predicted_label"]),
        confidence=float(row["confidence"]),
        source_frame=study.frame,
    )
    key = sc_key(dest_prefix, sha)
    results.put(key, encode(ds))
    return key
