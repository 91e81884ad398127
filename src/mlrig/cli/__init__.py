"""The `mlrig` command line: one module per command group, each thin (it parses and prints; the
library does the work). Heavy libraries load inside commands, so `--help` stays fast."""

# each module registers its commands on the app as it is imported, in the order --help lists them
# isort: off
from mlrig.cli import run, tune, drift, reproduce, stage, images, ci, chart, results, doctor
from mlrig.cli import clearml, stack, serve

# isort: on
from mlrig.cli.app import app

__all__ = ["app", "chart", "ci", "clearml", "doctor", "images", "results", "run", "stack"]
__all__ += ["drift", "reproduce", "serve", "stage", "tune"]
