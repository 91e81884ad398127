"""Which ClearML queue each stage runs on: the queue its step or stage names, else the default,
unless the stage needs more than that: then a queue whose pods provide it.

A stage says what its pod needs in params.yaml (`resources`, `mlrig.experiments.params`), the
submitter what each queue's pods provide (MLRIG_CLEARML_QUEUE_RESOURCES, which the chart renders
from `agent.queues`). A stage no queue can hold is refused before anything is submitted. The
queue is no input of the stage: its result, input key and ClearML cache key stay the same on
any queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlrig.dvc.dag import step_of
from mlrig.errors import ConfigError
from mlrig.experiments.params import (
    PARAMS_FILE,
    ResourcesParams,
    StageResources,
    load_section,
)

#: the params.yaml section and the setting this module reads
RESOURCES_SECTION = "resources"
QUEUE_RESOURCES_SETTING = "MLRIG_CLEARML_QUEUE_RESOURCES"
STEP_QUEUES_SETTING = "MLRIG_CLEARML_STEP_QUEUES"


def queue_capacities(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, StageResources]:
    """What each queue's pods provide, from MLRIG_CLEARML_QUEUE_RESOURCES.

    Raises:
        ConfigError: a queue's entry is not {gpu, cpu, memory}.
    """
    capacities = {}
    for queue, provided in raw.items():
        try:
            capacities[queue] = StageResources.model_validate(provided)
        except ValidationError as error:
            problem = error.errors()[0]
            raise ConfigError(
                f"{QUEUE_RESOURCES_SETTING} gives queue {queue!r} "
                f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}. Each queue is "
                '{"gpu": N, "cpu": "2", "memory": "16Gi"}: take it from the chart\'s ConfigMap '
                "<release>-mlrig-agent (key queue-resources.json)."
            ) from None
    return capacities


def read_resources(root: Path, stages: list[str]) -> ResourcesParams:
    """The `resources` section of the project's params.yaml (empty without one).

    Raises:
        ParamsError: it is not valid.
        ConfigError: it names a step or stage the pipeline does not have.
    """
    if not (root / PARAMS_FILE).is_file():
        return ResourcesParams()
    resources = load_section(root / PARAMS_FILE, RESOURCES_SECTION, ResourcesParams)
    known = set(stages) | {step_of(stage) for stage in stages}
    unknown = sorted(set(resources.entries) - known)
    if unknown:
        guesses = [
            f"{name} (did you mean {close[0]}?)" if (close := get_close_matches(name, known, 1))
            else name
            for name in unknown
        ]  # fmt: skip
        raise ConfigError(
            f"params.yaml's {RESOURCES_SECTION} names {', '.join(guesses)}, which dvc.yaml has "
            "no stage or step of: key each entry by a step (train) or a stage (train@xgboost)."
        )
    return resources


@dataclass(frozen=True)
class Placement:
    """Where the stages run: each stage's queue and what it needs (None: nothing declared)."""

    queues: dict[str, str]
    needs: dict[str, StageResources | None]


def place_stages(
    stages: list[str],
    resources: ResourcesParams,
    default_queue: str,
    step_queues: Mapping[str, str],
    capacities: Mapping[str, StageResources],
) -> Placement:
    """Each stage's queue: the one its stage or step names (MLRIG_CLEARML_STEP_QUEUES), else the
    default, when that provides what the stage needs; a stage that needs more than the default
    provides goes to the smallest queue that provides it (fewest GPUs, then least memory and CPU).

    Raises:
        ConfigError: naming every stage no queue can hold, what it needs and what each queue
            provides.
    """
    queues, needs, refused = {}, {}, []
    for stage in stages:
        needs[stage] = resources.of_stage(stage, step_of(stage))
        named = step_queues.get(stage) or step_queues.get(step_of(stage))
        queue, problem = choose_queue(needs[stage], named, default_queue, capacities)
        if problem:
            refused.append(f"  {stage} needs {needs[stage].describe()}: {problem}")  # type: ignore[union-attr]
        queues[stage] = queue
    if refused:
        raise ConfigError(
            "No ClearML queue can hold stage(s):\n" + "\n".join(refused) + "\nGive a queue these "
            "resources (the chart's agent.queues.<queue>.pod.resources, then "
            f"{QUEUE_RESOURCES_SETTING} from its ConfigMap), or ask for less in params.yaml's "
            f"{RESOURCES_SECTION}."
        )
    return Placement(queues=queues, needs=needs)


def choose_queue(
    needs: StageResources | None,
    named: str | None,
    default_queue: str,
    capacities: Mapping[str, StageResources],
) -> tuple[str, str | None]:
    """A stage's queue, and why none fits (None: it fits)."""
    if needs is None or needs.is_empty:
        return named or default_queue, None
    if not capacities:
        return named or default_queue, (
            f"no queue says what its pods provide ({QUEUE_RESOURCES_SETTING} is not set)"
        )
    provided = "; ".join(
        f"{queue} provides {have.describe()}" for queue, have in capacities.items()
    )
    if named:
        if named in capacities and needs.fits_in(capacities[named]):
            return named, None
        where = f"its queue {named} ({STEP_QUEUES_SETTING}) "
        if named not in capacities:
            return named, where + f"is not in {QUEUE_RESOURCES_SETTING} ({provided})"
        return named, where + f"provides {capacities[named].describe()}"
    fitting = [queue for queue, have in capacities.items() if needs.fits_in(have)]
    if default_queue in fitting:
        return default_queue, None
    if not fitting:
        return default_queue, provided
    return min(fitting, key=lambda queue: queue_size(capacities[queue], queue)), None


def queue_size(provided: StageResources, name: str) -> tuple[int, float, float, str]:
    """How much a queue's pods hold, to prefer the smallest that fits (then by name)."""
    from mlrig.experiments.params import quantity_value

    return (
        provided.gpu,
        quantity_value(provided.memory) if provided.memory else 0.0,
        quantity_value(provided.cpu) if provided.cpu else 0.0,
        name,
    )
