"""Data checks: one table row per input file, one Great Expectations suite over the table.

    keys -> decode (thread pool) -> checks table -> GX validation (once per batch)
         -> accepted | quarantined (+ warnings) -> quarantine copies, data docs, checks.json

Each expectation of the suite maps to a reason code (`REASONS`: severity and explanation).
A `reject` code quarantines the file; a `warn` code lets it through, flagged. Every input ends
either accepted or quarantined, and `run_checks` asserts it (`ChecksInvariantError`).

The table holds no patient identifiers: identifiers appear only as presence booleans, and
duplicate SOP Instance UIDs are found through a keyed hash computed in memory and never
stored. Pixels never leave this module: accepted files are passed on by key (scoring decodes
them again), so steps exchange keys and hashes, not images.

Great Expectations is imported lazily (it takes seconds); so is pandas.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from scintiflow.checks.quarantine import RejectedFile, quarantine, quarantine_prefix
from scintiflow.domain import hash_identifier, new_run_id
from scintiflow.ingest.dicom import REASON_TEXT, DecodeReason
from scintiflow.ingest.objects import DecodedObject, decode_objects, night_prefix
from scintiflow.storage import ObjectStore

if TYPE_CHECKING:
    # pandas ships no type stubs here; "unused-ignore" keeps this quiet once they exist
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    from scintiflow.settings import Settings

__all__ = [
    "CHECK_VERSION",
    "REASONS",
    "TABLE_COLUMNS",
    "CheckOutcome",
    "CheckThresholds",
    "ChecksError",
    "ChecksInvariantError",
    "ChecksSummary",
    "ChecksValidator",
    "DuplicateTracker",
    "build_checks_table",
    "check_keys",
    "checks_row",
    "list_night",
    "rows_to_table",
    "run_checks",
    "severity",
    "suite_specs",
    "validate_table",
]

log = logging.getLogger(__name__)

CHECK_VERSION: Final = "1"
"""Version of the suite's logic; bump it when an expectation or a reason code changes."""

Severity = Literal["reject", "warn"]

NM_IMAGE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.20"
NM_IMAGE_STORAGE_RETIRED: Final = "1.2.840.10008.5.1.4.1.1.5"


# ---------------------------------------------------------------------------------------
# Reason codes

_STORAGE_REASONS: Final[dict[str, str]] = {
    "missing_object": "The object was listed but had disappeared when it was read.",
    "s3_error": "The object could not be read from S3 (the store kept failing after retries).",
    "missing_bucket": "The bucket holding the object does not exist (any more).",
    "invalid_key": "The object's key is not a safe relative key, so it was not read.",
    "store_error": "The object could not be read from the store (unexpected storage error).",
}

_SUITE_REASONS: Final[dict[str, tuple[Severity, str]]] = {
    "not_nm_modality": ("reject", "The modality is not NM (nuclear medicine), e.g. a CT or MR."),
    "wrong_sop_class": (
        "reject",
        "The SOP class is not NM Image Storage (e.g. a Secondary Capture screenshot).",
    ),
    "burned_in_annotation": (
        "reject",
        "The image says it has burned-in annotation (text in the pixels may identify the "
        "patient and distorts counts).",
    ),
    "wrong_geometry": (
        "reject",
        "The matrix or field of view is not that of a thyroid view: not square, outside "
        "the allowed matrix sizes, or a field of view far beyond a neck (e.g. a whole-body "
        "scan).",
    ),
    "empty_image": ("reject", "The image holds (almost) no counts."),
    "blank_image": (
        "reject",
        "The image is blank: nearly all pixels are zero, or the counts are flat with no structure.",
    ),
    "missing_identifier": (
        "reject",
        "A required identifier (Patient ID, Study, Series or SOP Instance UID) is missing, "
        "so a result could not be attached to the right patient and study.",
    ),
    "duplicate_sop_instance": (
        "reject",
        "Another file of this night (earlier in key order) has the same SOP Instance UID.",
    ),
    "duplicate_bytes": (
        "reject",
        "Another file of this night (earlier in key order) has exactly the same bytes.",
    ),
    "low_counts": ("warn", "The image has fewer total counts than a diagnostic thyroid view."),
    "saturated_pixels": (
        "warn",
        "Many pixels sit at the image maximum (a flat top suggests clipping or saturation).",
    ),
    "unusual_pixel_spacing": (
        "warn",
        "The pixel spacing is outside the usual range for thyroid pinhole images, or the "
        "pixels are not square.",
    ),
    "missing_pixel_spacing": ("warn", "The image has no pixel spacing."),
    "missing_radiopharmaceutical": ("warn", "The radiopharmaceutical is not recorded."),
    "monochrome1_image": (
        "warn",
        "The image is MONOCHROME1 (inverted display); values are still read as counts.",
    ),
    "unexpected_view": ("warn", "The image is labelled with a view other than the preferred one."),
}

REASONS: Final[dict[str, tuple[Severity, str]]] = {
    **{reason.value: ("reject", REASON_TEXT[reason]) for reason in DecodeReason},
    **{code: ("reject", text) for code, text in _STORAGE_REASONS.items()},
    **_SUITE_REASONS,
}
"""Every reason code the checks can emit: code -> (severity, plain-language explanation).

Decode codes (`scintiflow.ingest.dicom.DecodeReason`) and storage codes are always `reject`.
"""


def severity(code: str) -> Severity:
    """The severity of a reason code; unknown codes (a new storage error) reject."""
    return REASONS.get(code, ("reject", ""))[0]


# ---------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True, slots=True)
class CheckThresholds:
    """Every threshold of the suite, in one place (documented in the README).

    Defaults fit planar anterior pinhole thyroid views (Tc-99m or I-123): square 64-512
    matrices, 0.5-3 mm pixels, a field of view up to 400 mm, 50k-400k counts per view.
    """

    accepted_modalities: tuple[str, ...] = ("NM",)
    accepted_sop_classes: tuple[str, ...] = (NM_IMAGE_STORAGE, NM_IMAGE_STORAGE_RETIRED)
    # geometry (reject `wrong_geometry`)
    require_square_matrix: bool = True
    min_matrix: int = 64
    max_matrix: int = 512
    max_field_of_view_mm: float = 400.0  # largest of rows x row spacing, cols x col spacing
    # counts (reject `empty_image`, `blank_image`; warn `low_counts`, `saturated_pixels`)
    min_total_counts: float = 1_000.0  # fewer: empty
    max_zero_fraction: float = 0.98  # more pixels at zero: blank
    min_count_cv: float = 0.1  # std/mean of the pixels below this: flat, blank
    low_total_counts: float = 40_000.0  # fewer: warn low_counts
    max_saturated_fraction: float = 0.01  # share of pixels at the image maximum
    # pixel spacing (warn `unusual_pixel_spacing`)
    min_pixel_spacing_mm: float = 0.5
    max_pixel_spacing_mm: float = 3.0
    max_pixel_aspect_deviation: float = 0.05  # |row/col spacing - 1|
    # display and view (warn)
    accepted_photometric: tuple[str, ...] = ("MONOCHROME2",)
    preferred_view: str = "anterior"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def fingerprint(self) -> str:
        """Short hash of the thresholds, recorded with every result."""
        text = json.dumps(self.as_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------
# The checks table

TABLE_COLUMNS: Final[tuple[str, ...]] = (
    "key",
    "sha256",
    "size",
    "decoded",
    "decode_reason",
    "modality",
    "sop_class_uid",
    "rows",
    "cols",
    "frames",
    "bits_allocated",
    "photometric_interpretation",
    "pixel_spacing_row_mm",
    "pixel_spacing_col_mm",
    "pixel_aspect_deviation",
    "field_of_view_mm",
    "total_counts",
    "max_count",
    "zero_fraction",
    "saturated_fraction",
    "count_cv",
    "burned_in_annotation",
    "view",
    "has_patient_id",
    "has_study_uid",
    "has_series_uid",
    "has_sop_instance_uid",
    "has_radiopharmaceutical",
    "duplicate_sop_instance",
    "duplicate_bytes",
)

_INT_COLUMNS: Final = ("size", "rows", "cols", "frames", "bits_allocated")
_BOOL_COLUMNS: Final = (
    "decoded",
    "burned_in_annotation",
    "has_patient_id",
    "has_study_uid",
    "has_series_uid",
    "has_sop_instance_uid",
    "has_radiopharmaceutical",
    "duplicate_sop_instance",
    "duplicate_bytes",
)
_FLOAT_COLUMNS: Final = (
    "pixel_spacing_row_mm",
    "pixel_spacing_col_mm",
    "pixel_aspect_deviation",
    "field_of_view_mm",
    "total_counts",
    "max_count",
    "zero_fraction",
    "saturated_fraction",
    "count_cv",
)


@dataclass
class DuplicateTracker:
    """What a night has seen so far, for duplicate flags across batches.

    Holds content hashes and keyed hashes of SOP Instance UIDs (never the UIDs). The first
    file in processing order (key order) is the original; later ones are duplicates.
    """

    contents: set[str] = field(default_factory=set)
    sop_instances: set[str] = field(default_factory=set)

    def is_duplicate_bytes(self, sha256: str | None) -> bool:
        if sha256 is None:
            return False
        seen = sha256 in self.contents
        self.contents.add(sha256)
        return seen

    def is_duplicate_sop(self, uid_hash: str | None) -> bool:
        if uid_hash is None:
            return False
        seen = uid_hash in self.sop_instances
        self.sop_instances.add(uid_hash)
        return seen


def checks_row(
    obj: DecodedObject,
    *,
    uid_hash_key: bytes,
    tracker: DuplicateTracker,
) -> dict[str, Any]:
    """One table row for one decoded (or failed) object. No identifiers, no pixels."""
    import numpy as np

    row: dict[str, Any] = dict.fromkeys(TABLE_COLUMNS)
    row.update(key=obj.key, sha256=obj.sha256, size=obj.size, decoded=obj.ok)
    row["duplicate_bytes"] = tracker.is_duplicate_bytes(obj.sha256)
    rec = obj.record
    if rec is None:
        row["decode_reason"] = obj.reason or "unreadable_dicom"
        head = obj.header
        if head is not None:
            row.update(
                modality=head.modality,
                sop_class_uid=head.sop_class_uid,
                rows=head.rows,
                cols=head.cols,
                frames=head.frames,
                bits_allocated=head.bits_allocated,
                photometric_interpretation=head.photometric_interpretation,
                burned_in_annotation=_burned_in(head.burned_in_annotation),
            )
        return row

    pixels = rec.pixels  # (rows, cols) float32 counts
    mean = float(pixels.mean(dtype=np.float64))
    std = float(pixels.std(dtype=np.float64))
    spacing = rec.pixel_spacing_mm
    uid_hash = hash_identifier(rec.sop_instance_uid, uid_hash_key) if rec.sop_instance_uid else None
    row.update(
        modality=rec.modality or None,
        sop_class_uid=rec.sop_class_uid or None,
        rows=rec.rows,
        cols=rec.cols,
        frames=rec.frames,
        bits_allocated=rec.bits_allocated,
        photometric_interpretation=rec.photometric_interpretation,
        pixel_spacing_row_mm=None if spacing is None else spacing[0],
        pixel_spacing_col_mm=None if spacing is None else spacing[1],
        pixel_aspect_deviation=None if spacing is None else abs(spacing[0] / spacing[1] - 1.0),
        field_of_view_mm=(
            None if spacing is None else max(rec.rows * spacing[0], rec.cols * spacing[1])
        ),
        total_counts=rec.total_counts,
        max_count=rec.max_count,
        zero_fraction=rec.zero_fraction,
        saturated_fraction=(
            float(np.count_nonzero(pixels == rec.max_count) / pixels.size)
            if rec.max_count > 0
            else 0.0
        ),
        count_cv=std / mean if mean > 0 else 0.0,
        burned_in_annotation=_burned_in(rec.burned_in_annotation),
        view=rec.view,
        has_patient_id=rec.patient_hash is not None,
        has_study_uid=bool(rec.study_instance_uid),
        has_series_uid=bool(rec.series_instance_uid),
        has_sop_instance_uid=bool(rec.sop_instance_uid),
        has_radiopharmaceutical=bool(rec.radiopharmaceutical),
        duplicate_sop_instance=tracker.is_duplicate_sop(uid_hash),
    )
    return row


def _burned_in(value: str | None) -> bool:
    return (value or "").strip().upper() == "YES"


def build_checks_table(
    decoded: Iterable[DecodedObject],
    *,
    uid_hash_key: bytes = b"scintiflow-default-phi-key",
    tracker: DuplicateTracker | None = None,
) -> pd.DataFrame:
    """The checks table: one row per object, in the order given (`TABLE_COLUMNS`).

    Pass the same `tracker` to consecutive batches of one night so duplicates are found
    across batches; a fresh one is used otherwise. Consumes the iterable as a stream, so
    decoded pixels are released row by row.
    """
    tracker = tracker if tracker is not None else DuplicateTracker()
    rows = [checks_row(obj, uid_hash_key=uid_hash_key, tracker=tracker) for obj in decoded]
    return rows_to_table(rows)


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with stable nullable dtypes (so empty batches validate too)."""
    import pandas as pd

    df = pd.DataFrame(list(rows), columns=list(TABLE_COLUMNS))
    for col in _INT_COLUMNS:
        df[col] = df[col].astype("Int64")
    for col in _FLOAT_COLUMNS:
        df[col] = df[col].astype("float64")
    for col in _BOOL_COLUMNS:
        df[col] = df[col].astype("boolean")
    for col in sorted(set(TABLE_COLUMNS) - {*_INT_COLUMNS, *_FLOAT_COLUMNS, *_BOOL_COLUMNS}):
        df[col] = df[col].astype("object")
        df[col] = df[col].where(df[col].notna(), None)
    return df


# ---------------------------------------------------------------------------------------
# The suite

_ROW_REASON: Final = "<decode_reason>"  # the decode expectation reports each row's own code
_IMAGE_CODES: Final = frozenset(
    {
        "empty_image",
        "blank_image",
        "low_counts",
        "saturated_pixels",
        "unusual_pixel_spacing",
        "missing_pixel_spacing",
        "missing_radiopharmaceutical",
        "monochrome1_image",
        "unexpected_view",
    }
)


def _row_condition(scope: str, t: CheckThresholds) -> Any:
    """The GX row condition selecting the rows an expectation of `scope` looks at."""
    from great_expectations.expectations.row_conditions import Column

    if scope == "all":
        return None
    decoded = Column("decoded") == True  # noqa: E712 (a GX condition, not a comparison)
    if scope == "decoded":
        return decoded
    return decoded & Column("modality").is_in(list(t.accepted_modalities))


@dataclass(frozen=True, slots=True)
class _Spec:
    """One expectation: its GX class, arguments, reason code and which rows it looks at.

    scope: "all" rows; "decoded" rows; "image" = decoded rows of an accepted modality (count
    statistics of a CT in Hounsfield units mean nothing, so a CT is only `not_nm_modality`).
    """

    code: str
    expectation: str  # class name in great_expectations.expectations
    kwargs: dict[str, Any]
    scope: Literal["all", "decoded", "image"] = "decoded"


def suite_specs(t: CheckThresholds) -> list[_Spec]:
    """The expectations of the suite, each with the reason code it maps to."""
    in_set, between = "ExpectColumnValuesToBeInSet", "ExpectColumnValuesToBeBetween"
    flags = ("has_patient_id", "has_study_uid", "has_series_uid", "has_sop_instance_uid")
    specs = [
        _Spec(_ROW_REASON, "ExpectColumnValuesToBeNull", {"column": "decode_reason"}, "all"),
        _Spec(
            "duplicate_bytes", in_set, {"column": "duplicate_bytes", "value_set": [False]}, "all"
        ),
        _Spec(
            "not_nm_modality", in_set, {"column": "modality", "value_set": [*t.accepted_modalities]}
        ),
        _Spec("not_nm_modality", "ExpectColumnValuesToNotBeNull", {"column": "modality"}),
        _Spec(
            "wrong_sop_class",
            in_set,
            {"column": "sop_class_uid", "value_set": [*t.accepted_sop_classes]},
        ),
        _Spec("wrong_sop_class", "ExpectColumnValuesToNotBeNull", {"column": "sop_class_uid"}),
        _Spec(
            "burned_in_annotation",
            in_set,
            {"column": "burned_in_annotation", "value_set": [False]},
        ),
        _Spec(
            "wrong_geometry",
            between,
            {"column": "rows", "min_value": t.min_matrix, "max_value": t.max_matrix},
        ),
        _Spec(
            "wrong_geometry",
            between,
            {"column": "cols", "min_value": t.min_matrix, "max_value": t.max_matrix},
        ),
        _Spec(
            "wrong_geometry",
            between,
            {"column": "field_of_view_mm", "max_value": t.max_field_of_view_mm},
        ),
        _Spec(
            "empty_image",
            between,
            {"column": "total_counts", "min_value": t.min_total_counts},
        ),
        _Spec(
            "empty_image",
            between,
            {"column": "max_count", "min_value": 0, "strict_min": True},
        ),
        _Spec(
            "blank_image",
            between,
            {"column": "zero_fraction", "max_value": t.max_zero_fraction},
        ),
        _Spec("blank_image", between, {"column": "count_cv", "min_value": t.min_count_cv}),
        *(_Spec("missing_identifier", in_set, {"column": f, "value_set": [True]}) for f in flags),
        _Spec(
            "duplicate_sop_instance",
            in_set,
            {"column": "duplicate_sop_instance", "value_set": [False]},
        ),
        _Spec("low_counts", between, {"column": "total_counts", "min_value": t.low_total_counts}),
        _Spec(
            "saturated_pixels",
            between,
            {"column": "saturated_fraction", "max_value": t.max_saturated_fraction},
        ),
        *(
            _Spec(
                "unusual_pixel_spacing",
                between,
                {
                    "column": column,
                    "min_value": t.min_pixel_spacing_mm,
                    "max_value": t.max_pixel_spacing_mm,
                },
            )
            for column in ("pixel_spacing_row_mm", "pixel_spacing_col_mm")
        ),
        _Spec(
            "unusual_pixel_spacing",
            between,
            {"column": "pixel_aspect_deviation", "max_value": t.max_pixel_aspect_deviation},
        ),
        _Spec(
            "missing_pixel_spacing",
            "ExpectColumnValuesToNotBeNull",
            {"column": "pixel_spacing_row_mm"},
        ),
        _Spec(
            "missing_radiopharmaceutical",
            in_set,
            {"column": "has_radiopharmaceutical", "value_set": [True]},
        ),
        _Spec(
            "monochrome1_image",
            in_set,
            {"column": "photometric_interpretation", "value_set": [*t.accepted_photometric]},
        ),
        _Spec("unexpected_view", in_set, {"column": "view", "value_set": [t.preferred_view]}),
    ]
    if t.require_square_matrix:
        specs.append(
            _Spec(
                "wrong_geometry",
                "ExpectColumnPairValuesToBeEqual",
                {"column_A": "rows", "column_B": "cols"},
            )
        )
    return [replace(spec, scope="image") if spec.code in _IMAGE_CODES else spec for spec in specs]


class ChecksError(RuntimeError):
    """The check step itself failed (not a file: the run). Carries no tag values."""


class ChecksInvariantError(ChecksError):
    """`accepted + quarantined == inputs` (or a related consistency rule) does not hold."""


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """The verdict for one validated table.

    `codes`: key -> every reason code (reject and warn, sorted); `rejected`: keys with at
    least one reject code -> all their codes; `warned`: accepted keys with warn codes -> those
    codes; `accepted`: keys with no reject code, in table order; `failing_values`: key ->
    code -> column -> value (plain JSON values, no identifiers); `statistics`: GX's counts
    of evaluated expectations.
    """

    keys: tuple[str, ...]
    accepted: tuple[str, ...]
    rejected: dict[str, tuple[str, ...]]
    warned: dict[str, tuple[str, ...]]
    codes: dict[str, tuple[str, ...]]
    failing_values: dict[str, dict[str, dict[str, Any]]]
    success: bool
    statistics: dict[str, Any]

    @classmethod
    def combine(cls, outcomes: Sequence[CheckOutcome]) -> CheckOutcome:
        """The outcome of several batches of one night (keys must not repeat)."""
        keys = tuple(k for o in outcomes for k in o.keys)
        if len(set(keys)) != len(keys):
            raise ChecksInvariantError("a key was checked in more than one batch")
        evaluated = sum(int(o.statistics.get("evaluated_expectations") or 0) for o in outcomes)
        successful = sum(int(o.statistics.get("successful_expectations") or 0) for o in outcomes)
        return cls(
            keys=keys,
            accepted=tuple(k for o in outcomes for k in o.accepted),
            rejected={k: v for o in outcomes for k, v in o.rejected.items()},
            warned={k: v for o in outcomes for k, v in o.warned.items()},
            codes={k: v for o in outcomes for k, v in o.codes.items()},
            failing_values={k: v for o in outcomes for k, v in o.failing_values.items()},
            success=all(o.success for o in outcomes),
            statistics={
                "batches": len(outcomes),
                "evaluated_expectations": evaluated,
                "successful_expectations": successful,
                "unsuccessful_expectations": evaluated - successful,
            },
        )

    def reason_counts(self) -> dict[str, int]:
        """Files per reason code."""
        counts = Counter(code for codes in self.codes.values() for code in codes)
        return dict(sorted(counts.items()))


def _plain(value: Any) -> Any:
    """numpy / pandas scalars -> JSON values (GX returns numpy scalars in index lists)."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _gx_context(docs_dir: Path | None) -> Any:
    """An ephemeral GX context: no analytics, no progress bars, optional local docs site."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    if docs_dir is not None:
        context.add_data_docs_site(
            site_name="local",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


_GX_LOCK = threading.Lock()  # one GX validation at a time per process


class ChecksValidator:
    """The suite inside one ephemeral GX context, built once and run on many batches.

    Each `validate` call is ONE GX validation of a whole table. With `docs_dir`, GX's data
    docs for every validation run through this validator are built into that local folder
    (one page per batch, one index). Not thread-safe: use one per thread or flow run.
    """

    def __init__(
        self, thresholds: CheckThresholds | None = None, *, docs_dir: str | Path | None = None
    ) -> None:
        import great_expectations as gx
        import great_expectations.expectations as gxe
        from great_expectations.checkpoint import UpdateDataDocsAction, ValidationAction

        self.thresholds = thresholds or CheckThresholds()
        self.docs_dir = None if docs_dir is None else Path(docs_dir)
        context = _gx_context(self.docs_dir)
        batch = (
            context.data_sources.add_pandas("scintiflow")
            .add_dataframe_asset("checks_table")
            .add_batch_definition_whole_dataframe("night")
        )
        self.specs = suite_specs(self.thresholds)
        expectations = []
        for i, spec in enumerate(self.specs):
            kwargs = dict(spec.kwargs)
            condition = _row_condition(spec.scope, self.thresholds)
            if condition is not None:
                kwargs["row_condition"] = condition
            code = spec.code
            meta = {
                "spec": i,
                "reason": code,
                "severity": "reject" if code == _ROW_REASON else severity(code),
            }
            expectations.append(getattr(gxe, spec.expectation)(meta=meta, **kwargs))
        # built whole, then added once: adding expectations one by one to a stored suite is slow
        suite = context.suites.add(
            gx.ExpectationSuite(name="scintiflow_checks", expectations=expectations)
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name="scintiflow_checks", data=batch, suite=suite)
        )
        actions: list[ValidationAction] = (
            [] if docs_dir is None else [UpdateDataDocsAction(name="docs", site_names=["local"])]
        )
        self._checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name="scintiflow_checks",
                validation_definitions=[definition],
                actions=actions,
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": ["key"],
                },
            )
        )

    def validate(self, df: pd.DataFrame, *, run_name: str | None = None) -> CheckOutcome:
        """One GX validation of the table; failures mapped to reason codes per key."""
        from great_expectations.core.run_identifier import RunIdentifier

        # GX is not thread-safe across validators either: two runs validating at once in one
        # process failed in RunIdentifier's time parsing ("offset must be a timedelta ...").
        with _GX_LOCK:
            run_id = RunIdentifier(run_name=run_name) if run_name else None
            result = self._checkpoint.run(batch_parameters={"dataframe": df}, run_id=run_id)
        (suite_result,) = result.run_results.values()
        return _outcome(df, self.specs, suite_result)


def validate_table(
    df: pd.DataFrame,
    thresholds: CheckThresholds | None = None,
    *,
    docs_dir: str | Path | None = None,
    run_name: str | None = None,
) -> CheckOutcome:
    """Run the suite over the whole table in ONE GX validation and map failures to codes.

    COMPLETE result format with `key` as the index column, so every failing row is known.
    With `docs_dir`, GX's data docs for this validation are built into that local folder.
    Raises `ChecksError` when an expectation could not be evaluated. (Builds a fresh
    `ChecksValidator`; reuse one for many batches.)
    """
    return ChecksValidator(thresholds, docs_dir=docs_dir).validate(df, run_name=run_name)


def _outcome(df: pd.DataFrame, specs: list[_Spec], suite_result: Any) -> CheckOutcome:
    keys = tuple(str(k) for k in df["key"])
    codes: dict[str, set[str]] = {k: set() for k in keys}
    values: dict[str, dict[str, dict[str, Any]]] = {}
    for res in suite_result.results:
        exc = res.exception_info or {}
        if exc.get("raised_exception"):
            raise ChecksError(f"expectation {res.expectation_config.type} could not be evaluated")
        if res.success:
            continue
        spec = specs[int(res.expectation_config.meta["spec"])]
        for hit in res.result.get("unexpected_index_list") or []:
            key = str(hit["key"])
            failing = {c: _plain(v) for c, v in hit.items() if c != "key"}
            code = str(failing.get("decode_reason")) if spec.code == _ROW_REASON else spec.code
            if key not in codes:
                raise ChecksInvariantError("GX reported a key that is not in the table")
            codes[key].add(code)
            values.setdefault(key, {}).setdefault(code, {}).update(failing)
    # belt and braces: a file that did not decode can never be accepted
    for key, reason in zip(keys, df["decode_reason"], strict=True):
        if reason is not None and reason not in codes[key]:
            raise ChecksInvariantError("a decode failure was not reported by the suite")
    ordered = {k: tuple(sorted(codes[k])) for k in keys}
    rejected = {k: c for k, c in ordered.items() if any(severity(x) == "reject" for x in c)}
    warned = {  # accepted files let through with warnings (rejected ones list all codes)
        k: tuple(x for x in c if severity(x) == "warn")
        for k, c in ordered.items()
        if k not in rejected and any(severity(x) == "warn" for x in c)
    }
    stats = suite_result.statistics
    return CheckOutcome(
        keys=keys,
        accepted=tuple(k for k in keys if k not in rejected),
        rejected=rejected,
        warned=warned,
        codes={k: c for k, c in ordered.items() if c},
        failing_values=values,
        success=bool(suite_result.success),
        statistics={k: _plain(v) for k, v in dict(stats).items()},
    )


# ---------------------------------------------------------------------------------------
# A night, end to end


def list_night(
    store: ObjectStore, night: date | str, *, exports_prefix: str = "exports"
) -> list[str]:
    """The keys of one night's exports, in key order."""
    return [info.key for info in store.list(night_prefix(night, exports_prefix))]


def check_keys(
    store: ObjectStore,
    keys: Sequence[str],
    *,
    validator: ChecksValidator | None = None,
    thresholds: CheckThresholds | None = None,
    tracker: DuplicateTracker | None = None,
    workers: int = 0,
    settings: Settings | None = None,
    run_name: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, CheckOutcome]:
    """Decode and check one batch of keys: (checks table, outcome). Writes nothing.

    The building block for batched flows: pass one `tracker` (duplicates across batches)
    and one `validator` (GX context built once; data docs for every batch) through a
    night's batches. `thresholds` is used only when no validator is given. `progress(done)`
    is called after each decoded file.
    """
    settings = settings or _settings()
    validator = validator if validator is not None else ChecksValidator(thresholds)
    tracker = tracker if tracker is not None else DuplicateTracker()
    key_bytes = settings.phi_hash_key.get_secret_value().encode()
    rows: list[dict[str, Any]] = []
    for obj in decode_objects(
        store,
        keys,
        workers=workers or settings.decode_workers,
        preferred_view=settings.preferred_view,
        patient_hash_key=key_bytes,
    ):
        rows.append(checks_row(obj, uid_hash_key=key_bytes, tracker=tracker))
        if progress is not None:
            progress(len(rows))
    table = rows_to_table(rows)
    return table, validator.validate(table, run_name=run_name)


@dataclass(frozen=True, slots=True)
class ChecksSummary:
    """What `run_checks` did. `accepted` keys go on to scoring (which decodes them again)."""

    night: str
    run_id: str
    inputs: int
    accepted: tuple[str, ...]
    warned: dict[str, tuple[str, ...]]
    quarantined: dict[str, tuple[str, ...]]
    reason_counts: dict[str, int]
    quarantine_locations: dict[str, str]
    checks_key: str
    docs_key: str
    checks_url: str
    docs_url: str
    quarantine_url: str
    table: pd.DataFrame = field(repr=False, compare=False)


def _settings() -> Settings:
    from scintiflow.settings import get_settings

    return get_settings()


def run_checks(
    store: ObjectStore,
    *,
    night: date | str,
    run_id: str | None = None,
    dest_store: ObjectStore | None = None,
    thresholds: CheckThresholds | None = None,
    workers: int = 0,
    batch_size: int = 0,
    settings: Settings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ChecksSummary:
    """Check one night: list -> decode -> table -> GX -> quarantine -> data docs -> checks.json.

    Reads `exports/<night>/` from `store`; writes quarantine copies, data docs and
    `checks.json` to `dest_store` (default: `store`) under `quarantine/<night>/` and
    `results/<night>/<run_id>/checks/`. Sources are never modified. Raises
    `ChecksInvariantError` if any input ends neither accepted nor quarantined.
    `batch_size` > 0 checks the night in batches of that many files (one GX validation and
    one data docs page per batch, duplicates tracked across batches); 0 = one batch.
    `progress(done, total)` reports decoding.
    """
    settings = settings or _settings()
    thresholds = thresholds or CheckThresholds()
    out = dest_store if dest_store is not None else store
    day = night if isinstance(night, str) else night.isoformat()
    date.fromisoformat(day)
    run_id = run_id or new_run_id()
    prefixes = settings.prefixes
    keys = list_night(store, day, exports_prefix=prefixes.exports)
    total = len(keys)
    log.info("checks: night %s run %s: %d inputs", day, run_id, total)

    base = f"{prefixes.results}/{day}/{run_id}/checks/"
    size = batch_size if batch_size > 0 else max(1, total)
    with tempfile.TemporaryDirectory(prefix="scintiflow-docs-") as tmp:
        validator = ChecksValidator(thresholds, docs_dir=tmp)
        tracker = DuplicateTracker()
        tables: list[pd.DataFrame] = []
        outcomes: list[CheckOutcome] = []
        for first in range(0, max(total, 1), size):
            batch = keys[first : first + size]
            table, outcome = check_keys(
                store,
                batch,
                validator=validator,
                tracker=tracker,
                workers=workers,
                settings=settings,
                run_name=run_id,
                progress=_offset(progress, first, total),
            )
            tables.append(table)
            outcomes.append(outcome)
        table = tables[0] if len(tables) == 1 else _concat(tables)
        outcome = outcomes[0] if len(outcomes) == 1 else CheckOutcome.combine(outcomes)
        shas = dict(zip(table["key"], table["sha256"], strict=True))
        extra = {
            "night": day,
            "run_id": run_id,
            "thresholds_fingerprint": thresholds.fingerprint(),
        }
        placed = quarantine(
            store,
            day,
            (
                RejectedFile(k, shas[k], codes, outcome.failing_values.get(k, {}))
                for k, codes in outcome.rejected.items()
            ),
            dest=out,
            check_version=CHECK_VERSION,
            prefix=prefixes.quarantine,
            extra=extra,
        )
        docs_key = _upload_docs(out, Path(tmp), base + "docs/")

    quarantined = dict(outcome.rejected)
    accepted = outcome.accepted
    if (
        len(accepted) + len(quarantined) != total
        or set(accepted) & set(quarantined)
        or set(accepted) | set(quarantined) != set(keys)
        or set(placed.locations) != set(quarantined)
    ):
        raise ChecksInvariantError(
            f"accepted ({len(accepted)}) + quarantined ({len(quarantined)}) "
            f"!= inputs ({total}) for night {day}, run {run_id}"
        )
    reason_counts = outcome.reason_counts()
    checks_key = base + "checks.json"
    document = {
        "schema": "scintiflow.checks.suite/1",
        "check_version": CHECK_VERSION,
        "night": day,
        "run_id": run_id,
        "inputs": total,
        "accepted": list(accepted),
        "warned": {k: list(v) for k, v in outcome.warned.items()},
        "quarantined": {k: list(v) for k, v in quarantined.items()},
        "quarantine": dict(sorted(placed.locations.items())),
        "counts": {
            "inputs": total,
            "accepted": len(accepted),
            "quarantined": len(quarantined),
            "warned": len(outcome.warned),
        },
        "reason_counts": reason_counts,
        "reasons": {
            code: {"severity": severity(code), "explanation": REASONS.get(code, ("", ""))[1]}
            for code in reason_counts
        },
        "thresholds": thresholds.as_dict(),
        "thresholds_fingerprint": thresholds.fingerprint(),
        "docs": docs_key,
        "gx": {"success": outcome.success, **outcome.statistics},
    }
    out.put(checks_key, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
    log.info(
        "checks: night %s run %s: %d accepted, %d quarantined, %d warned",
        day,
        run_id,
        len(accepted),
        len(quarantined),
        len(outcome.warned),
    )
    return ChecksSummary(
        night=day,
        run_id=run_id,
        inputs=total,
        accepted=accepted,
        warned=dict(outcome.warned),
        quarantined=quarantined,
        reason_counts=reason_counts,
        quarantine_locations=dict(placed.locations),
        checks_key=checks_key,
        docs_key=docs_key,
        checks_url=out.url_for(checks_key),
        docs_url=out.url_for(docs_key),
        quarantine_url=out.url_for(quarantine_prefix(day, prefixes.quarantine).rstrip("/")),
        table=table,
    )


def _offset(
    progress: Callable[[int, int], None] | None, first: int, total: int
) -> Callable[[int], None] | None:
    """A batch's progress(done) as the night's progress(first + done, total)."""
    if progress is None:
        return None
    report = progress
    return lambda done: report(first + done, total)


def _concat(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    return pd.concat(list(tables), ignore_index=True)


def _upload_docs(store: ObjectStore, folder: Path, prefix: str) -> str:
    """Upload a locally built data docs folder; returns the key of its index page."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.put(prefix + path.relative_to(folder).as_posix(), path.read_bytes())
    return prefix + "index.html"
