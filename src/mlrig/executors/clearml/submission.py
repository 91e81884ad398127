"""One submission of a ClearML pipeline: its MLflow parent run, kept on the controller's task.

Every executor runs the stages under one MLflow parent run; a ClearML pipeline's steps learn
theirs from here. Its id cannot be in a step's task: a task's script, hyperparameters,
configuration and container arguments make ClearML's step cache key (clearml#971), which must
change with the step's inputs only. So the submitter stores the submission on the pipeline's
controller task, as the configuration object `mlrig submission`, and a step's pod reads it from
its own task's parent, which is that controller (ClearML's `ClearmlJob` sets it when the
controller launches the step). A step ClearML takes from its cache runs no pod; the same stages
submitted twice have two controllers, so each step's runs go under its own submission's parent
run.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlrig.errors import EXIT_FAILED, MlrigError

#: the configuration object of the controller's task that holds the submission
SUBMISSION_CONFIGURATION = "mlrig submission"
#: what a step's stage is given, as `mlrig run` gives it to every stage (`mlrig.settings`)
PARENT_RUN_VARIABLE = "MLRIG_PARENT_RUN_ID"
PIPELINE_RUN_VARIABLE = "MLRIG_PIPELINE_RUN_ID"
#: the statuses ClearML's PipelineController gives a step that ended well (Node.status)
STEP_SUCCEEDED = frozenset({"completed", "cached"})


class Submission(BaseModel):
    """What one submission tells its controller and its steps' pods."""

    model_config = ConfigDict(frozen=True)

    pipeline_run_id: str = Field(description="the pipeline run, as the runs' tags name it")
    parent_run_id: str = Field(description="the MLflow parent run of the steps' runs")
    tracking_uri: str = Field(description="the MLflow server of the parent run (no user info)")
    controller_ends_parent_run: bool = Field(
        description="the controller ends the parent run; False: the submitter follows the "
        "pipeline (--wait) and ends it"
    )

    def stage_environment(self) -> dict[str, str]:
        """The variables that make a stage's MLflow runs children of the parent run."""
        return {
            PARENT_RUN_VARIABLE: self.parent_run_id,
            PIPELINE_RUN_VARIABLE: self.pipeline_run_id,
        }


def submission_of_step(task_id: str) -> Submission | None:
    """The submission a step's task belongs to: the one stored on its parent task, the
    pipeline's controller. None for a task with no parent, or whose parent holds none.

    Offline (CLEARML_OFFLINE_MODE), ClearML reads the tasks from the offline sessions in its
    cache folder, so a pod sees none and its runs have no parent run.

    Raises:
        MlrigError: ClearML cannot read the step's task or its controller, or the stored
            submission is not one.
    """
    from clearml import Task

    controller_id = None
    try:
        controller_id = Task.get_task(task_id=task_id).parent
        if not controller_id:
            return None
        controller = Task.get_task(task_id=controller_id)
        text = controller.get_configuration_object(SUBMISSION_CONFIGURATION)
        return Submission.model_validate_json(text) if text else None
    except ValidationError as error:
        problem = f"its {SUBMISSION_CONFIGURATION!r} is not a submission ({error.errors()[0]})"
    except Exception as error:  # the SDK raises many types for a missing task or a refusal
        problem = f"ClearML could not read it ({type(error).__name__}: {error})"
    raise MlrigError(
        f"The pipeline of step task {task_id} (controller {controller_id or 'unknown'}) does "
        f"not say its MLflow parent run: {problem}. Submit the pipeline again.",
        exit_code=EXIT_FAILED,
    )


def pipeline_outcome(step_statuses: Iterable[str]) -> str:
    """The MLflow status of a pipeline's parent run, from its steps' statuses as ClearML's
    PipelineController gives them (`Node.status`: completed, cached, failed, aborted, skipped,
    pending, queued, running): FINISHED when every step completed or was cached, KILLED when one
    was aborted and none failed, else FAILED."""
    statuses = set(step_statuses)
    if statuses <= STEP_SUCCEEDED:
        return "FINISHED"
    if "aborted" in statuses and "failed" not in statuses:
        return "KILLED"
    return "FAILED"
