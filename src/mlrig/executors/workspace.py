"""One DVC stage in a fresh workspace, the way a step container or a pod runs it (`mlrig-stage`).

The workspace holds the project's files at the commit (dvc.yaml, params.yaml, dvc.lock, the
code) but no data: the stage's inputs come from the DVC remote and its outputs go back there,
with the run-cache, so the next stage (in another container) can pull them. Every setting comes
from the environment; a missing one stops the stage before it starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mlrig import progress
from mlrig.dvc.commands import dvc_in_process
from mlrig.dvc.remote import STAGE_REMOTE_NAME, is_s3_url, stage_remote, write_workspace_config
from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError
from mlrig.executors.timeline import Timeline
from mlrig.settings import Settings

#: what a stage container must be given, and what each setting is for
REQUIRED_SETTINGS = {
    "MLFLOW_TRACKING_URI": "the MLflow server the stage logs to, e.g. http://mlflow:5000",
    "MLRIG_DVC_REMOTE_URL": "the DVC remote for inputs and outputs, e.g. s3://mlrig-dvc",
}
S3_SETTINGS = {
    "AWS_ACCESS_KEY_ID": "the S3 access key of the DVC remote",
    "AWS_SECRET_ACCESS_KEY": "the S3 secret key of the DVC remote",
}


def missing_settings(environment: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The required settings absent from `environment`, each with what it is for."""
    required = dict(REQUIRED_SETTINGS)
    if is_s3_url(environment.get("MLRIG_DVC_REMOTE_URL")):
        required |= S3_SETTINGS
    return {name: why for name, why in required.items() if not environment.get(name)}


def require_settings() -> None:
    """Raises ConfigError naming every required setting that is not set."""
    missing = missing_settings(os.environ)
    if missing:
        lines = "\n".join(f"  {name}: {why}" for name, why in missing.items())
        raise ConfigError(
            "A stage container takes its settings from the environment, and these are not set:\n"
            f"{lines}\nPass them to the container (mlrig run --executor containers does)."
        )


def configure_workspace(settings: Settings) -> None:
    """Point the workspace at the remote from the environment (.dvc/config.local, not the image).

    Raises:
        ConfigError: DVC refuses the remote's settings.
    """
    from dvc.exceptions import DvcException

    remote = stage_remote(settings)
    try:
        # a workspace copy, not a clone: no git
        write_workspace_config(settings.root, remote, no_scm=not (settings.root / ".git").exists())
    except DvcException as error:
        raise ConfigError(
            f"Could not point the workspace at the DVC remote {remote.url}: {error}. Check "
            "MLRIG_DVC_REMOTE_URL and AWS_ENDPOINT_URL."
        ) from None


def pull_inputs(
    settings: Settings, name: str, on_phase: Callable[[str], None] = lambda phase: None
) -> None:
    """Pull the stage's inputs from the workspace's remote (`configure_workspace` set it), in
    this process, reading dvc.yaml and dvc.lock once (see `mlrig.dvc.outputs`).

    Raises:
        ConfigError: the stage does not exist.
        MlrigError: pulling failed.
    """
    from mlrig.dvc.outputs import pull_stage_inputs

    on_phase(f"pulling the inputs of {name}")
    missing = pull_stage_inputs(settings.root, name, STAGE_REMOTE_NAME)
    if missing:
        raise MlrigError(
            f"Could not pull the inputs of stage {name!r} ({', '.join(missing)}) from "
            f"{settings.dvc_remote_url}. Were the stages before it run and pushed there?",
            exit_code=EXIT_FAILED,
        )


def run_stage(
    settings: Settings,
    name: str,
    *,
    force: bool = False,
    on_phase: Callable[[str], None] = lambda phase: None,
    timeline: Timeline | None = None,
) -> None:
    """Pull the stage's inputs, run it (or restore it from the run-cache), push its outputs.

    Args:
        timeline: marked as each phase ends (where the stage's time goes).

    Raises:
        ConfigError: a setting is missing, or the stage does not exist.
        MlrigError: pulling, running or pushing failed; the message says which.
    """
    marks = timeline or Timeline()
    require_settings()
    configure_workspace(settings)
    marks.mark("dvc import, remote config")
    pull_inputs(settings, name, on_phase)
    marks.mark("pull inputs")
    on_phase(f"running {name}")
    progress.phase(None)  # the step's own process says what it does, and what it costs
    # --pull: a stage in the remote run-cache is restored instead of run; a forced stage is
    # not restored, and --pull would download the remote's whole run-cache for nothing
    repro = ["repro", "--single-item", *(["--force"] if force else ["--pull"]), name]
    if dvc_in_process(*repro) != 0:
        raise MlrigError(f"Stage {name!r} failed (see the log above).", exit_code=EXIT_FAILED)
    marks.mark("run stage")
    on_phase(f"pushing the outputs of {name}")
    if dvc_in_process("push", "--run-cache", "--remote", STAGE_REMOTE_NAME, name) != 0:
        raise MlrigError(
            f"Stage {name!r} ran, but pushing its outputs to {settings.dvc_remote_url} failed.",
            exit_code=EXIT_FAILED,
        )
    marks.mark("push outputs")
