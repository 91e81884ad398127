"""`python -m mlrig`: the same as the `mlrig` command."""

from mlrig.cli import app

app()
