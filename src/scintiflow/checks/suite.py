"""The Great Expectations suite over the checks table, and its verdicts.

Each expectation maps to a reason code (`scintiflow.checks.reasons.REASONS`). Great
Expectations is imported lazily (it takes seconds); so is pandas.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from scintiflow.checks.reasons import severity
from scintiflow.checks.thresholds import CheckThresholds

if TYPE_CHECKING:
    # pandas ships no type stubs here; "unused-ignore" keeps this quiet once they exist
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]


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
