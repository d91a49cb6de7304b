"""Numbers in JSON: NaN and infinities are not JSON, so they travel as null.

Every `to_dict` of the evaluation records goes through these, so a record written by one
process and read by another (a fold fit on a worker, the registry) keeps its NaNs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def json_number(value: float) -> float | None:
    """`value` as a JSON number; NaN and infinities become None."""
    value = float(value)
    return None if not math.isfinite(value) else value


def number_from_json(value: float | None) -> float:
    """Inverse of `json_number`: None becomes NaN."""
    return float("nan") if value is None else float(value)


def json_safe(obj: Any) -> Any:
    """`obj` with numpy scalars/arrays made plain, tuples made lists and NaN/inf made None."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return json_number(float(obj))
    return obj
