"""Which ClearML queue a stage runs on (mlrig.executors.clearml.resources): the queue its step
names, else the default, unless params.yaml's `resources` ask for more than that provides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlrig.errors import ConfigError, ParamsError
from mlrig.executors.clearml.resources import (
    place_stages,
    queue_capacities,
    read_resources,
)
from mlrig.experiments.params import ResourcesParams

STAGES = ["prepare", "train@small", "train@large", "report"]
#: what the chart's gpu-queues values render (agent.queues), as the submitter reads it
CAPACITIES = queue_capacities(
    {
        "default": {"gpu": 0, "cpu": "2", "memory": "4Gi"},
        "gpu": {"gpu": 1, "cpu": "8", "memory": "16Gi"},
        "gpu-large": {"gpu": 4, "cpu": "32", "memory": "128Gi"},
    }
)


def resources(entries: dict[str, dict[str, object]]) -> ResourcesParams:
    return ResourcesParams.model_validate(entries)


def test_a_stage_goes_to_the_smallest_queue_that_holds_it() -> None:
    placement = place_stages(
        STAGES,
        resources({"train": {"memory": "8Gi"}, "train@large": {"gpu": 2}}),
        "default",
        {},
        CAPACITIES,
    )
    assert placement.queues == {
        "prepare": "default",
        "train@small": "gpu",  # 8Gi: more than default's 4Gi, and gpu is smaller than gpu-large
        "train@large": "gpu-large",
        "report": "default",
    }
    # a stage's own entry over its step's
    assert placement.needs["train@large"].describe() == "gpu 2, memory 8Gi"  # type: ignore[union-attr]
    assert placement.needs["prepare"] is None


def test_the_default_queue_is_kept_when_it_holds_the_stage() -> None:
    placement = place_stages(
        STAGES, resources({"train": {"cpu": "1500m"}}), "default", {}, CAPACITIES
    )
    assert set(placement.queues.values()) == {"default"}


def test_a_stage_no_queue_can_hold_is_refused_naming_it_with_every_other() -> None:
    with pytest.raises(ConfigError) as refused:
        place_stages(
            STAGES,
            resources({"train@large": {"gpu": 8}, "report": {"memory": "1Ti"}}),
            "default",
            {},
            CAPACITIES,
        )
    message = str(refused.value)
    assert "train@large needs gpu 8: default provides cpu 2, memory 4Gi" in message
    assert "gpu-large provides gpu 4, cpu 32, memory 128Gi" in message
    assert "report needs memory 1Ti" in message
    assert "train@small" not in message and "prepare" not in message
    assert "agent.queues.<queue>.pod.resources" in message


def test_a_queue_a_step_names_must_hold_what_it_needs() -> None:
    needs = resources({"train": {"gpu": 1}})
    placement = place_stages(STAGES, needs, "default", {"train": "gpu-large"}, CAPACITIES)
    assert placement.queues["train@small"] == "gpu-large"
    with pytest.raises(ConfigError, match=r"its queue default \(MLRIG_CLEARML_STEP_QUEUES\)"):
        place_stages(STAGES, needs, "default", {"train@large": "default"}, CAPACITIES)
    with pytest.raises(ConfigError, match=r"its queue a100 .* is not in MLRIG_CLEARML_QUEUE_RES"):
        place_stages(STAGES, needs, "default", {"train": "a100"}, CAPACITIES)


def test_without_the_queues_resources_a_stage_that_needs_some_is_refused() -> None:
    with pytest.raises(ConfigError, match="MLRIG_CLEARML_QUEUE_RESOURCES is not set"):
        place_stages(STAGES, resources({"train": {"gpu": 1}}), "default", {}, {})
    # nothing asked for: every stage on its queue, as before
    placement = place_stages(STAGES, resources({}), "default", {"report": "cpu"}, {})
    assert placement.queues == {stage: "default" for stage in STAGES} | {"report": "cpu"}


def write_params(root: Path, section: object) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump({"resources": section}))


def test_resources_name_stages_or_steps_of_the_pipeline(tmp_path: Path) -> None:
    write_params(tmp_path, {"train@large": {"gpu": 1}, "train": {"memory": "2Gi"}})
    assert set(read_resources(tmp_path, STAGES).entries) == {"train@large", "train"}
    write_params(tmp_path, {"trian": {"gpu": 1}})
    with pytest.raises(ConfigError, match=r"trian \(did you mean train\?\)"):
        read_resources(tmp_path, STAGES)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"gpu": -1}, "resources.train.gpu: Input should be greater than or equal to 0"),
        ({"memory": "8GB"}, "resources.train.memory: '8GB' is no Kubernetes quantity"),
        ({"gpus": 1}, "did you mean resources.train.gpu?"),
    ],
)
def test_wrong_resources_are_refused_naming_the_key(
    tmp_path: Path, entry: dict[str, object], problem: str
) -> None:
    write_params(tmp_path, {"train": entry})
    with pytest.raises(ParamsError) as refused:
        read_resources(tmp_path, STAGES)
    assert problem in str(refused.value)


def test_queue_resources_that_are_no_resources_are_refused_naming_the_queue() -> None:
    with pytest.raises(ConfigError, match=r"queue 'gpu' memory: .*no Kubernetes quantity"):
        queue_capacities({"gpu": {"gpu": 1, "memory": "lots"}})
