"""params.yaml: the schema, error texts naming the dotted key, `-S` overrides, metric choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlrig.errors import EXIT_BAD_INPUT, DataError, ParamsError
from mlrig.experiments.metrics import is_better, primary_metric
from mlrig.experiments.params import (
    IngestParams,
    KnnParams,
    LinearParams,
    ValidateParams,
    apply_overrides,
    dump_params,
    load_params,
    load_section,
    parse_override,
    read_params_file,
    validate_params,
)

REPO_PARAMS = Path(__file__).parents[3] / "params.yaml"
FAMILIES = "linear, random_forest, gradient_boosting, knn, baseline"


def minimal(**sections: Any) -> dict[str, Any]:
    """The smallest valid params document (train is the one required section), plus `sections`."""
    return {"train": {"experiments": {"base": {"family": "baseline"}}}, **sections}


def params_error(document: Any, origin: str = "params.yaml") -> str:
    with pytest.raises(ParamsError) as caught:
        validate_params(document, origin=origin)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return str(caught.value)


# --- the schema ------------------------------------------------------------------------------


def test_repository_params_yaml_is_valid() -> None:
    params = load_params(REPO_PARAMS)

    assert params.ingest.source == "builtin:breast_cancer"
    assert params.validate_.min_rows == 20
    assert params.split.test_size == 0.25
    assert list(params.train.experiments) == [
        "linear_c0_1",
        "linear_c10",
        "random_forest",
        "gradient_boosting",
        "knn",
        "baseline",
    ]
    assert params.train.experiments["linear_c10"].params == LinearParams(C=10.0)
    assert params.train.experiments["knn"].params == KnnParams(n_neighbors=15)


def test_missing_sections_take_their_defaults() -> None:
    params = validate_params(minimal())

    assert params.ingest == IngestParams()
    assert params.ingest.task == "auto"
    assert params.validate_ == ValidateParams()
    assert (params.split.test_size, params.split.seed) == (0.25, 42)
    assert params.compare.metric == "auto"
    assert params.train.experiments["base"].family == "baseline"


def test_validate_section_is_read_by_its_yaml_name() -> None:
    params = validate_params(minimal(validate={"min_rows": 50, "max_missing_fraction": 0.5}))

    assert params.validate_.min_rows == 50
    assert params.validate_.max_missing_fraction == 0.5


def test_wrong_type_names_the_dotted_key_and_the_value() -> None:
    message = params_error(minimal(split={"test_size": "big"}), origin="-S override")

    assert message.startswith("-S override has invalid params:\n")
    assert "  split.test_size: Input should be a valid number" in message
    assert "(got 'big')" in message


def test_out_of_range_value_names_the_key_and_the_bound() -> None:
    message = params_error(minimal(split={"test_size": 1.5}))

    assert "  split.test_size: Input should be less than 1 (got 1.5)" in message


def test_validate_section_errors_use_the_yaml_name() -> None:
    message = params_error(minimal(validate={"min_rows": "many"}))

    assert "  validate.min_rows: Input should be a valid integer" in message
    assert "(got 'many')" in message


def test_unknown_key_is_an_error() -> None:
    message = params_error(minimal(ingest={"sourse": "builtin:wine"}))

    assert "  ingest.sourse: Extra inputs are not permitted (got 'builtin:wine')" in message


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("trian.seed=1", "  trian: Extra inputs are not permitted; did you mean train?"),
        (
            "train.experiments.knn.famly=knn",
            "  train.experiments.knn.famly: Extra inputs are not permitted (got 'knn'); "
            "did you mean train.experiments.knn.family?",
        ),
        (
            "train.experiments.knn.params.n_neighbours=3",
            "  train.experiments.knn.params.n_neighbours: Extra inputs are not permitted (got 3); "
            "did you mean train.experiments.knn.params.n_neighbors?",
        ),
        (
            "validat.min_rows=3",
            "  validat: Extra inputs are not permitted; did you mean validate?",
        ),
        (
            "train.experiments.knn5.famly=knn",
            "  train.experiments.knn5: Unable to extract tag using discriminator 'family'; "
            "did you mean train.experiments.knn5.family?",
        ),
    ],
)
def test_a_misspelt_key_gets_a_did_you_mean(override: str, line: str) -> None:
    document = apply_overrides(read_params_file(REPO_PARAMS), [override])

    assert line in params_error(document).splitlines()


def test_a_key_like_no_known_one_gets_no_guess() -> None:
    message = params_error(minimal(evaluate={"threshold": 0.5}, split={"sed": 1}))

    assert "  evaluate: Extra inputs are not permitted" in message.splitlines()
    assert "did you mean split.seed?" in message


def test_a_misspelt_key_of_one_section_gets_a_did_you_mean(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("ingest:\n  taget: label\n")

    with pytest.raises(ParamsError, match=r"ingest.taget: .*; did you mean ingest.target\?"):
        load_section(path, "ingest", IngestParams)


@pytest.mark.parametrize("source", ["builtin:breast_cancer", "synthetic:100"])
def test_a_target_other_than_a_generated_sources_own_is_refused(source: str) -> None:
    document = apply_overrides(
        read_params_file(REPO_PARAMS), [f"ingest.source={source}", "ingest.target=nope"]
    )

    message = params_error(document, origin="params.yaml with -S overrides")

    assert f"ingest.source {source} has its target in column 'target'" in message
    assert "so ingest.target must be 'target' (got 'nope')" in message


def test_a_file_source_takes_any_target() -> None:
    document = minimal(ingest={"source": "data/flowers.csv", "target": "species"})

    assert validate_params(document).ingest.target == "species"


def test_unknown_section_is_an_error() -> None:
    message = params_error(minimal(evaluate={"threshold": 0.5}))

    assert "  evaluate: Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("SECTION = dict\n", "defines no SECTION"),
        (
            "from mlrig.experiments.params import Section\nclass P(Section):\n    x: int = \n",
            "SyntaxError",
        ),
        ("import not_a_module_here\n", "ModuleNotFoundError"),
    ],
)
def test_a_broken_step_params_file_is_named(tmp_path: Path, source: str, expected: str) -> None:
    params_file = tmp_path / "steps" / "featurize" / "params.py"
    params_file.parent.mkdir(parents=True)
    params_file.write_text(source)

    with pytest.raises(ParamsError) as raised:
        validate_params(minimal(), root=tmp_path)

    assert str(params_file) in str(raised.value)
    assert expected in str(raised.value)


def test_every_problem_is_listed() -> None:
    document = minimal(split={"seed": "x"}, ingest={"task": "clustering"})

    message = params_error(document)

    problem_lines = [line for line in message.splitlines() if line.startswith("  ")]
    assert len(problem_lines) == 2
    assert any(line.startswith("  split.seed:") for line in problem_lines)
    assert any(
        line.startswith("  ingest.task:") and "'clustering'" in line for line in problem_lines
    )


def test_unknown_model_family_names_the_experiment_and_the_families() -> None:
    message = params_error({"train": {"experiments": {"boosted": {"family": "xgboost"}}}})

    assert "  train.experiments.boosted: Input tag 'xgboost'" in message
    assert message.endswith(f"Model families: {FAMILIES}.")


def test_experiment_without_family() -> None:
    message = params_error({"train": {"experiments": {"forest": {"params": {}}}}})

    expected = "  train.experiments.forest: Unable to extract tag using discriminator 'family'"
    assert expected in message


def test_train_section_is_required_with_at_least_one_experiment() -> None:
    assert "  train: Field required" in params_error({})
    assert "  train.experiments: Dictionary should have at least 1 item" in params_error(
        {"train": {"experiments": {}}}
    )


def test_experiment_name_must_be_a_plain_word() -> None:
    message = params_error({"train": {"experiments": {"my model": {"family": "knn"}}}})

    assert "train.experiments.my model" in message
    assert "(got 'my model')" in message


def test_wrong_parameter_of_a_family() -> None:
    message = params_error(
        {"train": {"experiments": {"rf": {"family": "random_forest", "params": {"C": 1.0}}}}}
    )

    assert "params.C: Extra inputs are not permitted (got 1.0)" in message


def test_model_param_error_names_the_key_as_written_in_params_yaml() -> None:
    document = {
        "train": {
            "experiments": {"rf": {"family": "random_forest", "params": {"n_estimators": "many"}}}
        }
    }

    message = params_error(document)

    assert "  train.experiments.rf.params.n_estimators: " in message


def test_experiment_name_containing_validate_is_kept() -> None:
    message = params_error({"train": {"experiments": {"cross_validate_rf": {"family": "xgb"}}}})

    assert "train.experiments.cross_validate_rf" in message


# --- reading params.yaml and one section of it -----------------------------------------------


def test_read_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"

    with pytest.raises(ParamsError, match="Restore it from git") as caught:
        read_params_file(path)

    assert str(caught.value).startswith(f"Cannot read {path}: ")


def test_read_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("split:\n  seed: [1, 2\n")

    with pytest.raises(ParamsError) as caught:
        read_params_file(path)

    assert str(caught.value).startswith(f"{path} is not valid YAML: ")


def test_read_a_list_instead_of_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("- ingest\n- split\n")

    with pytest.raises(ParamsError) as caught:
        read_params_file(path)

    assert str(caught.value) == f"{path} must hold a mapping of step names to their params."


def test_load_section_reads_one_section(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("validate:\n  min_rows: 50\ntrain: not even checked\n")

    section = load_section(path, "validate", ValidateParams)

    assert section == ValidateParams(min_rows=50)


def test_load_section_defaults_when_the_section_is_absent(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("split:\n  seed: 1\n")

    assert load_section(path, "ingest", IngestParams) == IngestParams()


def test_load_section_error_names_file_and_section(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("validate:\n  min_rows: lots\n")

    with pytest.raises(ParamsError) as caught:
        load_section(path, "validate", ValidateParams)

    message = str(caught.value)
    assert message.startswith(f"{path} has invalid params:\n")
    assert "validate.min_rows: Input should be a valid integer" in message
    assert "(got 'lots')" in message


def test_load_section_error_names_the_dotted_key(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("validate:\n  min_rows: lots\n")

    with pytest.raises(ParamsError) as caught:
        load_section(path, "validate", ValidateParams)

    assert "  validate.min_rows: " in str(caught.value)


def test_load_section_defaults_when_the_section_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("ingest:\n  # source: builtin:wine\n")

    assert load_section(path, "ingest", IngestParams) == IngestParams()


# --- -S overrides ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "keys", "value"),
    [
        ("split.seed=7", ["split", "seed"], 7),
        ("split.test_size=0.3", ["split", "test_size"], 0.3),
        ("ingest.source=builtin:wine", ["ingest", "source"], "builtin:wine"),
        ("ingest.source=synthetic:1_000", ["ingest", "source"], "synthetic:1_000"),
        ("ingest.target= label ", ["ingest", "target"], "label"),
        (" compare.metric =rmse", ["compare", "metric"], "rmse"),
        (
            "train.experiments.rf.params.max_depth=null",
            ["train", "experiments", "rf", "params", "max_depth"],
            None,
        ),
        ("report.title=a=b", ["report", "title"], "a=b"),
        ("report.title=", ["report", "title"], ""),
        ("report.title=[draft", ["report", "title"], "[draft"),
    ],
)
def test_parse_override(text: str, keys: list[str], value: Any) -> None:
    parsed_keys, parsed_value = parse_override(text)

    assert parsed_keys == keys
    assert parsed_value == value
    assert isinstance(parsed_value, type(value))  # "7" is the number 7, not the text


@pytest.mark.parametrize("text", ["split.seed", "=7", "  =7", ""])
def test_parse_override_rejects_text_without_key_and_value(text: str) -> None:
    with pytest.raises(ParamsError) as caught:
        parse_override(text)

    assert str(caught.value) == (
        f"Override {text!r} is not of the form key.path=value, e.g. split.seed=7."
    )


def test_apply_overrides_sets_values_and_creates_sections() -> None:
    document = read_params_file(REPO_PARAMS)

    apply_overrides(
        document,
        [
            "split.seed=7",
            "ingest.source=builtin:wine",
            "train.experiments.knn5.family=knn",
            "train.experiments.knn5.params.n_neighbors=5",
        ],
    )
    params = validate_params(document)

    assert params.split.seed == 7
    assert params.ingest.source == "builtin:wine"
    assert params.train.experiments["knn5"].params == KnnParams(n_neighbors=5)
    assert len(params.train.experiments) == 7


def test_override_with_a_wrong_type_is_reported_by_key() -> None:
    document = apply_overrides(minimal(), ["split.test_size=abc"])

    message = params_error(document, origin="-S split.test_size=abc")

    assert "  split.test_size: Input should be a valid number" in message
    assert "(got 'abc')" in message


def test_apply_overrides_refuses_to_descend_into_a_value() -> None:
    document = minimal(split={"seed": 42})

    with pytest.raises(ParamsError) as caught:
        apply_overrides(document, ["split.seed.value=1"])

    assert str(caught.value) == (
        "Override 'split.seed.value=1': split.seed is a value, not a section."
    )
    assert document["split"] == {"seed": 42}


def test_dump_params_round_trips_the_file_unchanged() -> None:
    text = REPO_PARAMS.read_text()

    assert dump_params(read_params_file(REPO_PARAMS)) == text


def test_dump_after_override_changes_only_that_line(tmp_path: Path) -> None:
    original = REPO_PARAMS.read_text().splitlines()
    document = apply_overrides(read_params_file(REPO_PARAMS), ["split.seed=7"])

    dumped = dump_params(document)
    changed = [
        (before, after)
        for before, after in zip(original, dumped.splitlines(), strict=True)
        if before != after
    ]

    assert changed == [("  seed: 42", "  seed: 7")]
    comments = [line for line in original if line.lstrip().startswith("#")]
    assert len(comments) > 10
    assert all(comment in dumped.splitlines() for comment in comments)
    (tmp_path / "params.yaml").write_text(dumped)
    assert load_params(tmp_path / "params.yaml").split.seed == 7


# --- which metric decides, and which way is better --------------------------------------------


@pytest.mark.parametrize(
    ("configured", "task", "metric"),
    [
        ("auto", "classification", "f1"),
        ("auto", "regression", "rmse"),
        ("roc_auc", "classification", "roc_auc"),
        ("log_loss", "classification", "log_loss"),
        ("r2", "regression", "r2"),
        ("mae", "regression", "mae"),
    ],
)
def test_primary_metric(configured: str, task: str, metric: str) -> None:
    assert primary_metric(configured, task) == metric


@pytest.mark.parametrize(
    ("configured", "task", "choices"),
    [
        ("rmse", "classification", "accuracy, precision, recall, f1, roc_auc, log_loss"),
        ("f1", "regression", "rmse, mae, r2"),
        ("auc", "classification", "accuracy, precision, recall, f1, roc_auc, log_loss"),
    ],
)
def test_primary_metric_rejects_a_metric_of_the_other_task(
    configured: str, task: str, choices: str
) -> None:
    with pytest.raises(ParamsError) as caught:
        primary_metric(configured, task)

    assert str(caught.value) == (
        f"compare.metric is {configured!r}, which is not a {task} metric. "
        f"Use auto or one of: {choices}."
    )


@pytest.mark.parametrize(
    ("candidate", "incumbent", "metric", "better"),
    [
        (0.91, 0.90, "f1", True),
        (0.89, 0.90, "f1", False),
        (0.90, 0.90, "f1", False),
        (0.80, 0.70, "r2", True),
        (0.99, 0.98, "roc_auc", True),
        (1.0, 2.0, "rmse", True),
        (2.0, 1.0, "rmse", False),
        (1.5, 1.5, "rmse", False),
        (0.2, 0.3, "log_loss", True),
        (0.4, 0.3, "mae", False),
    ],
)
def test_is_better(candidate: float, incumbent: float, metric: str, better: bool) -> None:
    assert is_better(candidate, incumbent, metric) is better


# --- the data source must be something DVC watches -------------------------------------------


@pytest.mark.parametrize(
    ("source", "copy"),
    [
        ("/srv/exports/table.csv", "data/table.csv"),
        ("exports/table.parquet", "data/table.parquet"),
        ("table.csv", "data/table.csv"),
        ("data/../table.csv", "data/table.csv"),
    ],
)
def test_a_file_source_outside_data_is_refused_with_the_commands_that_bring_it_in(
    source: str, copy: str
) -> None:
    with pytest.raises(DataError) as caught:
        validate_params(minimal(ingest={"source": source}))

    message = str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert f"dvc import-url {source} {copy}" in message
    assert f"cp {source} data/" in message
    assert f"-S ingest.source={copy}" in message


@pytest.mark.parametrize(
    "source", ["data/flowers.csv", "./data/sub/flowers.parquet", "builtin:wine", "synthetic:50"]
)
def test_sources_under_data_and_generated_ones_are_accepted(source: str) -> None:
    assert validate_params(minimal(ingest={"source": source})).ingest.source == source
