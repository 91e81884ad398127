"""params.yaml: the schema assembled from the steps' own, error texts naming the dotted key,
`-S` overrides, metric choice.

The schema is the repository's: its steps' sections (steps/<name>/params.py, each step's own
tests check its section's rules) and the library's own `tune`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlrig.errors import EXIT_BAD_INPUT, ParamsError
from mlrig.experiments.metrics import is_better, primary_metric
from mlrig.experiments.params import (
    PRIVATE_MODULE_PREFIX,
    DriftParams,
    ResourcesParams,
    TuneParams,
    apply_overrides,
    dump_params,
    load_params,
    load_section,
    params_schema,
    parse_override,
    read_params_file,
    section_schema,
    step_values,
    validate_params,
)
from steps.ingest.params import IngestParams
from steps.register.params import CompareParams
from steps.split.params import SplitParams
from steps.train.params import KnnParams, LinearParams, TrainParams
from steps.validate.params import ValidateParams
from tests.support.project import REPO_ROOT

REPO_PARAMS = REPO_ROOT / "params.yaml"


def minimal(**sections: Any) -> dict[str, Any]:
    """The smallest valid params document (train is the one required section), plus `sections`."""
    return {"train": {"experiments": {"base": {"family": "baseline"}}}, **sections}


def params_error(document: Any, origin: str = "params.yaml", root: Path = REPO_ROOT) -> str:
    with pytest.raises(ParamsError) as caught:
        validate_params(document, origin, root)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return str(caught.value)


def write_step_params(root: Path, step: str, source: str) -> Path:
    """`steps/<step>/params.py` of a scratch project, holding `source`."""
    path = root / "steps" / step / "params.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return path


SECTION_SOURCE = """
from pydantic import Field

from mlrig.experiments.params import Section


class FeaturizeParams(Section):
    columns: int = Field(3, ge=1)


SECTION = FeaturizeParams
"""


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
    params = validate_params(minimal(), "params.yaml", REPO_ROOT)

    assert params.ingest == IngestParams()
    assert params.ingest.task == "auto"
    assert params.validate_ == ValidateParams()
    assert (params.split.test_size, params.split.seed) == (0.25, 42)
    assert params.compare.metric == "auto"
    assert params.train.experiments["base"].family == "baseline"


def test_validate_section_is_read_by_its_yaml_name() -> None:
    params = validate_params(
        minimal(validate={"min_rows": 50, "max_missing_fraction": 0.5}), "params.yaml", REPO_ROOT
    )

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
        validate_params(minimal(), "params.yaml", tmp_path)

    assert str(params_file) in str(raised.value)
    assert expected in str(raised.value)


@pytest.fixture
def scratch_steps_importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`import steps` finds tmp_path's steps, as in a process started in that project."""
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "__init__.py").write_text("")
    for name in [name for name in sys.modules if name.split(".")[0] == "steps"]:
        monkeypatch.delitem(sys.modules, name)  # put back afterwards
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in [name for name in sys.modules if name.startswith("steps.featurize")]:
        del sys.modules[name]


@pytest.mark.usefixtures("scratch_steps_importable")
def test_a_step_of_this_processs_steps_is_imported_with_its_package(tmp_path: Path) -> None:
    """When `steps` is the project's, a step's params module is the one its code imports, so
    the step's package runs too: code of it that raises is named with the params.py."""
    params_file = write_step_params(tmp_path, "featurize", SECTION_SOURCE)
    (params_file.parent / "__init__.py").write_text("from steps.featurize.featurize import x\n")
    (params_file.parent / "featurize.py").write_text("x = 1\ny = undefined_name\n")

    with pytest.raises(ParamsError) as raised:
        validate_params({}, "params.yaml", tmp_path)

    message = str(raised.value)
    assert message.startswith(f"{params_file} could not be loaded (NameError: ")
    assert "at steps/featurize/featurize.py:2)" in message
    (params_file.parent / "featurize.py").write_text("x = 1\n")
    params = validate_params({"featurize": {"columns": 4}}, "params.yaml", tmp_path)
    assert type(params.featurize) is sys.modules["steps.featurize.params"].FeaturizeParams


def test_every_problem_is_listed() -> None:
    document = minimal(split={"seed": "x"}, ingest={"task": "clustering"})

    message = params_error(document)

    problem_lines = [line for line in message.splitlines() if line.startswith("  ")]
    assert len(problem_lines) == 2
    assert any(line.startswith("  split.seed:") for line in problem_lines)
    assert any(
        line.startswith("  ingest.task:") and "'clustering'" in line for line in problem_lines
    )


def test_a_section_with_a_required_key_is_required() -> None:
    """train has no default experiments: its section must be there."""
    assert "  train: Field required" in params_error({})


def test_an_error_in_one_section_gets_that_sections_hint_alone() -> None:
    """train's hint (the model families) is said under train's problems, not split's."""
    assert "Model families: linear, random_forest" in params_error(
        {"train": {"experiments": {"boosted": {"family": "catboost"}}}}
    )
    assert "Model families" not in params_error(minimal(split={"seed": "x"}))


# --- the schema is assembled from the steps' own ---------------------------------------------


def test_each_step_owns_its_section_in_the_pipelines_order_then_the_librarys() -> None:
    schema = params_schema(REPO_ROOT)

    sections = {
        field.alias or name: field.annotation for name, field in schema.model_fields.items()
    }

    assert list(sections) == [
        "ingest", "validate", "split", "train", "compare", "report", "tune", "resources",
        "drift",
    ]  # fmt: skip
    # the very classes the steps import: pydantic tells models apart by class
    assert sections["ingest"] is IngestParams
    assert sections["train"] is TrainParams
    assert sections["compare"] is CompareParams  # register's, keyed by its SECTION_NAME
    assert sections["tune"] is TuneParams
    assert sections["resources"] is ResourcesParams
    assert sections["drift"] is DriftParams
    assert section_schema(REPO_ROOT, "split") is SplitParams


def test_a_validated_section_is_the_steps_own_class() -> None:
    params = load_params(REPO_PARAMS)

    assert type(params.train.experiments["knn"].params) is KnnParams
    assert params.validate_ == ValidateParams()


def test_an_unknown_section_has_no_schema() -> None:
    with pytest.raises(ParamsError, match="'evaluate' section") as caught:
        section_schema(REPO_ROOT, "evaluate")

    assert "ingest, validate, split, train, compare, report, tune" in str(caught.value)


def test_a_step_of_another_folder_is_loaded_from_its_file(tmp_path: Path) -> None:
    """A project whose `steps` is not this process's (a scratch copy) keeps its own schema."""
    write_step_params(tmp_path, "featurize", SECTION_SOURCE)

    params = validate_params({"featurize": {"columns": 5}}, "params.yaml", tmp_path)

    assert params.featurize.columns == 5
    assert type(params.featurize).__module__ == f"{PRIVATE_MODULE_PREFIX}.featurize"
    assert f"{PRIVATE_MODULE_PREFIX}.featurize" in sys.modules
    assert "  featurize.columns: Input should be greater than or equal to 1 (got 0)" in (
        params_error({"featurize": {"columns": 0}}, root=tmp_path)
    )


def test_a_section_name_keys_a_steps_section(tmp_path: Path) -> None:
    write_step_params(tmp_path, "featurize", SECTION_SOURCE + 'SECTION_NAME = "features"\n')

    params = validate_params({"features": {"columns": 2}}, "params.yaml", tmp_path)

    assert params.features.columns == 2
    assert "  featurize: Extra inputs are not permitted" in params_error(
        {"featurize": {}}, root=tmp_path
    )


@pytest.mark.parametrize(
    ("section_name", "expected"),
    [
        ('"tune"', "keys its params section 'tune', as the library (mlrig) does"),
        ('"featurize"', "keys its params section 'featurize', as {first} does"),
        ('"two words"', "sets SECTION_NAME to 'two words': it is the section's key"),
        ("3", "sets SECTION_NAME to 3"),
    ],
)
def test_a_section_keyed_as_another_or_not_by_a_word_is_refused(
    tmp_path: Path, section_name: str, expected: str
) -> None:
    first = write_step_params(tmp_path, "featurize", SECTION_SOURCE)
    second = write_step_params(
        tmp_path, "select", SECTION_SOURCE + f"SECTION_NAME = {section_name}\n"
    )

    with pytest.raises(ParamsError) as raised:
        validate_params({}, "params.yaml", tmp_path)

    assert str(second) in str(raised.value)
    assert expected.format(first=first) in str(raised.value)


def test_a_steps_section_with_a_required_key_is_required(tmp_path: Path) -> None:
    write_step_params(
        tmp_path, "featurize", SECTION_SOURCE.replace("Field(3, ge=1)", "Field(ge=1)")
    )

    assert "  featurize: Field required" in params_error({}, root=tmp_path)


def test_the_steps_values_are_flat_by_dotted_key_without_the_librarys() -> None:
    values = step_values(load_params(REPO_PARAMS))

    assert values["ingest.source"] == "builtin:breast_cancer"
    assert values["validate.min_rows"] == 20
    assert values["split.test_size"] == 0.25
    assert values["train.experiments.random_forest.params.max_depth"] == 8
    assert values["train.experiments.gradient_boosting.params.max_depth"] is None
    assert values["compare.metric"] == "auto"
    assert not any(key.startswith("tune.") for key in values)


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
    params = validate_params(document, "params.yaml", REPO_ROOT)

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
    written = read_params_file(tmp_path / "params.yaml")
    assert validate_params(written, "params.yaml", REPO_ROOT).split.seed == 7


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
