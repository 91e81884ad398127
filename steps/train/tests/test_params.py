"""Train's section of params.yaml (steps/train/params.py): experiments by model family, each
family's params, and errors that name the key as params.yaml writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest

from mlrig.errors import EXIT_BAD_INPUT, ParamsError
from mlrig.experiments.params import load_section
from steps.train.params import (
    FAMILY_PARAMS,
    MODEL_FAMILIES,
    Experiment,
    LinearParams,
    TrainParams,
)

FAMILIES = "linear, random_forest, gradient_boosting, knn, baseline, xgboost, lightgbm, estimator"


def train_error(tmp_path: Path, experiments: dict[str, Any]) -> str:
    """What the train step says of a params.yaml whose train section has these experiments."""
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps({"train": {"experiments": experiments}}))  # JSON is YAML
    with pytest.raises(ParamsError) as caught:
        load_section(path, "train", TrainParams)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return str(caught.value)


def test_each_family_has_its_params_schema() -> None:
    members = get_args(get_args(Experiment)[0])  # Annotated[the union, its discriminator]
    tags = [get_args(member.model_fields["family"].annotation)[0] for member in members]

    assert tags == list(MODEL_FAMILIES) == list(FAMILY_PARAMS)
    assert [member.model_fields["params"].annotation for member in members] == list(
        FAMILY_PARAMS.values()
    )


@pytest.mark.parametrize(
    ("family", "params", "message"),
    [
        ("xgboost", {"extra": {"seed": 1}}, "params: extra sets seed, which mlrig sets itself"),
        ("lightgbm", {"extra": {"learning_rate": 0.2}}, "params: extra sets learning_rate, a"),
        ("xgboost", {"validation_fraction": 0.9}, "params.validation_fraction: Input should be"),
        ("lightgbm", {"subsample": 0.0}, "params.subsample: Input should be greater than 0"),
        ("xgboost", {"num_leaves": 8}, "params.num_leaves: Extra inputs are not permitted"),
        ("lightgbm", {"early_stopping_rounds": 0}, "params.early_stopping_rounds: Input should"),
    ],
)
def test_booster_params_are_checked_by_their_key(
    tmp_path: Path, family: str, params: dict[str, Any], message: str
) -> None:
    text = train_error(tmp_path, {"boost": {"family": family, "params": params}})

    assert f"  train.experiments.boost.{message}" in text


def test_an_estimator_experiment_needs_its_class_and_takes_any_params(tmp_path: Path) -> None:
    message = train_error(tmp_path, {"own": {"family": "estimator", "params": {"C": 2.0}}})
    assert "  train.experiments.own.class: Field required" in message

    train = TrainParams.model_validate(
        {"experiments": {"own": {"family": "estimator", "class": "a.B", "params": {"C": 2}}}}
    )
    own = train.experiments["own"]
    assert own.params.model_dump() == {"C": 2} and own.params.class_path == "a.B"


def test_an_experiment_takes_its_familys_defaults() -> None:
    train = TrainParams.model_validate({"experiments": {"lin": {"family": "linear"}}})

    assert train.seed == 42
    assert train.experiments["lin"].params == LinearParams(C=1.0, max_iter=1000)


def test_unknown_model_family_names_the_experiment_and_the_families(tmp_path: Path) -> None:
    message = train_error(tmp_path, {"boosted": {"family": "catboost"}})

    assert "  train.experiments.boosted: Input tag 'catboost'" in message
    assert message.endswith(f"Model families: {FAMILIES}.")


def test_experiment_without_family(tmp_path: Path) -> None:
    message = train_error(tmp_path, {"forest": {"params": {}}})

    expected = "  train.experiments.forest: Unable to extract tag using discriminator 'family'"
    assert expected in message


def test_at_least_one_experiment(tmp_path: Path) -> None:
    message = train_error(tmp_path, {})

    assert "  train.experiments: Dictionary should have at least 1 item" in message


def test_experiment_name_must_be_a_plain_word(tmp_path: Path) -> None:
    message = train_error(tmp_path, {"my model": {"family": "knn"}})

    assert "train.experiments.my model" in message
    assert "(got 'my model')" in message


def test_wrong_parameter_of_a_family(tmp_path: Path) -> None:
    message = train_error(tmp_path, {"rf": {"family": "random_forest", "params": {"C": 1.0}}})

    assert "  train.experiments.rf.params.C: Extra inputs are not permitted (got 1.0)" in message


def test_model_param_error_names_the_key_as_written_in_params_yaml(tmp_path: Path) -> None:
    message = train_error(
        tmp_path, {"rf": {"family": "random_forest", "params": {"n_estimators": "many"}}}
    )

    assert "  train.experiments.rf.params.n_estimators: " in message


def test_an_experiment_named_like_a_family_keeps_its_name(tmp_path: Path) -> None:
    """The family pydantic puts in the error's location is dropped, the experiment's name kept."""
    message = train_error(tmp_path, {"knn": {"family": "linear", "params": {"C": -1}}})

    assert "  train.experiments.knn.params.C: Input should be greater than 0 (got -1)" in message


def test_experiment_name_containing_validate_is_kept(tmp_path: Path) -> None:
    message = train_error(tmp_path, {"cross_validate_rf": {"family": "xgb"}})

    assert "train.experiments.cross_validate_rf" in message
