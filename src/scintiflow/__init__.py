"""scintiflow: nightly thyroid scintigraphy scoring.

The domain library. It never imports Prefect; `tasks/` and `flows/` wrap it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scintiflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

CLASSES: tuple[str, ...] = ("normal", "graves", "subacute_thyroiditis", "thyroid_tumor")
"""The four diagnostic classes, in the order every model output uses."""
