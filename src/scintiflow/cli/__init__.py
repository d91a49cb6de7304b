"""`scintiflow ...`: the command line. Every verb takes URLs and prints where its outputs went.

One module per group of verbs (`data`, `checks`, `training`, `scoring`, `night`, `demo`,
`report`), registered here in the order `--help` lists them; `console` and `options` hold what
they share. Heavy imports (numpy, pydicom, boto3, torch, prefect) happen inside the verbs, so
`--help` is instant.
"""

from __future__ import annotations

import typer

from scintiflow.cli import checks, data, demo, night, report, scoring, training

app = typer.Typer(
    name="scintiflow",
    help="Nightly thyroid scintigraphy: check, score, explain and report. All paths are URLs: "
    "a folder, file://..., or s3://bucket/prefix.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _verb in (
    data.simulate,
    data.ls,
    data.montage,
    checks.check,
    training.train,
    training.study,
    scoring.score,
    night.nightly,
    night.retrain,
    scoring.drift,
    demo.demo,
    report.report,
):
    app.command()(_verb)


def main() -> None:
    """Console-script entry point."""
    app()
