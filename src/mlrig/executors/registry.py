"""The executors of `mlrig run`, by name: `--executor` takes its choices from `EXECUTORS`.

An entry says what the executor is and how it is loaded; its implementation is imported only
when it is chosen (ZenML's flavors), so `mlrig run` on a laptop never imports ClearML.
`mlrig.run` does what every run needs once, whatever the executor: the checkout's lock,
the params and the preflight, the MLflow parent run, the push. An executor that runs stages
from here gets a `StageRequest` and runs them; ClearML hands the whole pipeline to its queues
instead (`submits`), under the same lock, params check and preflight (`mlrig.cli`).

A new executor is a class with `plan`, `prepare` and `run_stages` (`StageExecutor`) and an
entry here; docs/contributing.md says what else it touches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlrig.errors import ConfigError
from mlrig.executors.base import Executor, StageExecutor

if TYPE_CHECKING:  # the CLI imports this module for --executor's choices: it stays light
    from mlrig.settings import Settings


@dataclass(frozen=True)
class ExecutorEntry:
    """One executor of `mlrig run --executor`."""

    name: str
    help: str
    load: Callable[[Settings], Executor]
    submits: bool = False  # hands the pipeline to a scheduler's queues instead of running it


def local_executor(settings: Settings) -> Executor:
    from mlrig.executors.local import LocalExecutor

    return LocalExecutor(settings)


def containers_executor(settings: Settings) -> Executor:
    from mlrig.executors.containers import ContainersExecutor

    return ContainersExecutor(settings)


def clearml_executor(settings: Settings) -> Executor:
    from mlrig.executors.clearml.submit import ClearMLExecutor

    return ClearMLExecutor(settings)


EXECUTORS: Mapping[str, ExecutorEntry] = {
    entry.name: entry
    for entry in (
        ExecutorEntry(
            "local",
            "each stage by dvc repro here, its step in the warm server",
            local_executor,
        ),
        ExecutorEntry(
            "containers",
            "each stage in its step image, data through the DVC remote, results through the "
            "MLflow server (make images first)",
            containers_executor,
        ),
        ExecutorEntry(
            "clearml",
            "submit the pipeline to ClearML queues, each stage a step in its image",
            clearml_executor,
            submits=True,
        ),
    )
}


def executor_entry(name: str) -> ExecutorEntry:
    """The entry of an executor by name.

    Raises:
        ConfigError: no executor has this name.
    """
    try:
        return EXECUTORS[name]
    except KeyError:
        raise ConfigError(
            f"No executor is named {name!r}: choose one of {', '.join(EXECUTORS)}."
        ) from None


def stage_executor(name: str, settings: Settings) -> StageExecutor:
    """The executor `mlrig.run` runs the stages with.

    Raises:
        ConfigError: no executor has this name, or it submits the pipeline instead.
    """
    entry = executor_entry(name)
    executor = entry.load(settings)
    if entry.submits or not isinstance(executor, StageExecutor):
        raise ConfigError(f"--executor {name} submits the pipeline: it runs no stage here.")
    return executor
