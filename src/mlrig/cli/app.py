"""The `mlrig` app, its command groups, the console and the options they share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from mlrig import __version__

if TYPE_CHECKING:
    pass


#: options of a ClearML submission, shared by `mlrig run --executor clearml` and
#: `mlrig clearml pipeline`
ImageDigestsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--images",
        help="Digest files of pushed step images (mlrig images push --digests; the GitLab build "
        "jobs' images-<step>.json): those steps run by digest instead of their local tag.",
    ),
]
DigestsOnlyOption = Annotated[
    bool,
    typer.Option(
        "--digests-only",
        help="Refuse to submit unless every step's image comes from --images, by digest (what "
        "CI's pipeline job runs: only images its build jobs pushed).",
    ),
]
WaitOption = Annotated[
    bool,
    typer.Option(help="Follow the steps' status to the end; exit non-zero naming failed steps."),
]


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="mlrig: DVC pipeline, MLflow tracking and registry, ClearML automation, in one repo.",
)
clearml_app = typer.Typer(
    no_args_is_help=True, help="ClearML: offline sessions, and the pipeline on ClearML queues."
)
app.add_typer(clearml_app, name="clearml")
stack_app = typer.Typer(
    no_args_is_help=True, help="The local stack: PostgreSQL, S3 and an MLflow server on 127.0.0.1."
)
app.add_typer(stack_app, name="stack")
images_app = typer.Typer(
    no_args_is_help=True, help="The step images (images/step/Dockerfile, one per step)."
)
app.add_typer(images_app, name="images")
chart_app = typer.Typer(
    no_args_is_help=True,
    help="The Helm chart's pods on this machine (podman kube play of helm/mlrig, no cluster).",
)
app.add_typer(chart_app, name="chart")
ci_app = typer.Typer(no_args_is_help=True, help="What the GitLab CI jobs run (.gitlab-ci.yml).")
app.add_typer(ci_app, name="ci")
serve_app = typer.Typer(
    no_args_is_help=False,
    help="The champion's scoring server: here (mlrig serve), its status, rollouts on Kubernetes.",
)
app.add_typer(serve_app, name="serve")
console = Console(stderr=True)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mlrig {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """mlrig: DVC pipeline, MLflow tracking and registry, ClearML automation, in one repo."""

    # our own summary says where runs are; MLflow's "View run at" lines would break --json
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def use_stack(name: str) -> None:
    """Load a stack's client settings into this process's environment (12-factor)."""

    from mlrig.errors import ConfigError
    from mlrig.settings import load_settings
    from mlrig.stacks.local.manager import load_stack_environment

    if name != "local":
        raise ConfigError(
            f"Unknown stack {name!r}: `--stack local` is the one mlrig starts. For other servers "
            "set MLFLOW_TRACKING_URI, AWS_* and MLRIG_DVC_REMOTE in the environment instead."
        )
    os.environ.update(load_stack_environment(load_settings()))
