"""The schema of params.yaml: one section per step, each step reads only its own.

Loading validates everything up front, so a wrong type or an unknown model family is reported
with its dotted key before any stage runs. The sections of the built-in steps are here; any
other step owns its section in `steps/<name>/params.py` (its `SECTION` class), which joins the
schema of the project it is in, so a new step needs no edit of this module.
"""

from __future__ import annotations

import importlib.util
import io
import posixpath
from functools import cache
from pathlib import Path, PurePosixPath
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from mlrig.errors import (
    DataError,
    ParamsError,
)

TaskKind = Literal["classification", "regression"]
BUILTIN_DATASETS = ("breast_cancer", "wine", "diabetes")
#: The folder the ingest stage depends on in dvc.yaml: a file source must live under it.
DATA_DIR = "data"
#: sources whose table mlrig makes (builtin:<name>, synthetic:<rows>), and their target column
GENERATED_SOURCES = ("builtin", "synthetic")
GENERATED_TARGET = "target"
#: the folder of the steps, beside dvc.yaml; `steps/<name>/params.py` is a step's own schema
STEPS_DIR = "steps"
STEP_PARAMS_FILE = "params.py"


class Section(BaseModel):
    """A params section: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestParams(Section):
    """Where the table comes from and what its target is."""

    source: str = Field(
        "builtin:breast_cancer",
        description="builtin:<name>, synthetic:<rows>, or a CSV/Parquet path",
    )
    target: str = Field("target", description="name of the target column in a file source")
    task: Literal["auto", "classification", "regression"] = "auto"
    seed: int = Field(42, description="seed of the synthetic generator")
    encoding: str = Field(
        "utf-8", description="text encoding of a CSV source, e.g. latin-1 or cp1252"
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(
                f"unknown text encoding {value!r}; use a name Python knows, e.g. utf-8, "
                "latin-1 or cp1252"
            ) from None
        return value

    @model_validator(mode="after")
    def _target_of_a_generated_source(self) -> IngestParams:
        # a builtin or synthetic table names its target itself: another name would be
        # saved and recorded though the pipeline never reads it
        kind = self.source.partition(":")[0]
        if kind in GENERATED_SOURCES and self.target != GENERATED_TARGET:
            raise ValueError(
                f"ingest.source {self.source} has its target in column {GENERATED_TARGET!r}, "
                f"so ingest.target must be {GENERATED_TARGET!r} (got {self.target!r}); "
                "ingest.target names the target column of a CSV or Parquet source"
            )
        return self


def check_source_tracked(source: str) -> None:
    """Refuse a file source outside `data/`, the folder the ingest stage depends on.

    DVC would not see such a file change (the next run would keep stale results), and a step
    container or pod could not read it. Paths are judged as written, relative to the project.

    Raises:
        DataError: naming the source and the commands that bring it under `data/`.
    """
    kind, _, _ = source.partition(":")
    if kind in GENERATED_SOURCES:
        return
    path = PurePosixPath(source)
    parts = PurePosixPath(posixpath.normpath(source)).parts
    if not path.is_absolute() and len(parts) > 1 and parts[0] == DATA_DIR:
        return
    copy = f"{DATA_DIR}/{path.name or 'table.csv'}"
    raise DataError(
        f"ingest.source {source} is outside the project's {DATA_DIR}/ folder, the one "
        f"dependency DVC watches for the ingest stage: a change to the file would go unseen "
        f"and the next run would keep stale results (and a step container could not read "
        f"it). Bring it in, then run on the copy: `dvc import-url {source} {copy}` (DVC "
        f"records where it came from; `dvc update {copy}.dvc` takes a new version) or "
        f"`cp {source} {DATA_DIR}/`; then mlrig run -S ingest.source={copy}"
    )


class ValidateParams(Section):
    """Expectations on the table; a table that fails one stops the pipeline."""

    min_rows: int = Field(20, ge=2)
    min_rows_per_class: int = Field(2, ge=1)
    max_classes: int = Field(100, ge=2)
    max_missing_fraction: float = Field(0.2, ge=0.0, le=1.0)


class SplitParams(Section):
    """The held-out test set."""

    test_size: float = Field(0.25, gt=0.0, lt=1.0)
    seed: int = 42


class LinearParams(Section):
    """Logistic regression (classification) or ridge (regression, alpha = 1/C)."""

    C: float = Field(1.0, gt=0.0, description="inverse regularization strength")
    max_iter: int = Field(1000, ge=1)


class RandomForestParams(Section):
    n_estimators: int = Field(200, ge=1)
    max_depth: int | None = Field(None, ge=1)
    min_samples_leaf: int = Field(1, ge=1)


class GradientBoostingParams(Section):
    """Histogram gradient boosting (handles missing values natively)."""

    learning_rate: float = Field(0.1, gt=0.0)
    max_iter: int = Field(200, ge=1)
    max_depth: int | None = Field(None, ge=1)


class KnnParams(Section):
    n_neighbors: int = Field(15, ge=1)


class BaselineParams(Section):
    """Predicts the most frequent class (classification) or the mean (regression)."""


class LinearExperiment(Section):
    family: Literal["linear"]
    params: LinearParams = LinearParams()


class RandomForestExperiment(Section):
    family: Literal["random_forest"]
    params: RandomForestParams = RandomForestParams()


class GradientBoostingExperiment(Section):
    family: Literal["gradient_boosting"]
    params: GradientBoostingParams = GradientBoostingParams()


class KnnExperiment(Section):
    family: Literal["knn"]
    params: KnnParams = KnnParams()


class BaselineExperiment(Section):
    family: Literal["baseline"]
    params: BaselineParams = BaselineParams()


Experiment = Annotated[
    LinearExperiment
    | RandomForestExperiment
    | GradientBoostingExperiment
    | KnnExperiment
    | BaselineExperiment,
    Field(discriminator="family"),
]
MODEL_FAMILIES = ("linear", "random_forest", "gradient_boosting", "knn", "baseline")
FamilyName = Literal["linear", "random_forest", "gradient_boosting", "knn", "baseline"]
#: each family's params model: what `tune` may search over for it
FAMILY_PARAMS: dict[str, type[Section]] = {
    "linear": LinearParams,
    "random_forest": RandomForestParams,
    "gradient_boosting": GradientBoostingParams,
    "knn": KnnParams,
    "baseline": BaselineParams,
}


class TrainParams(Section):
    """One DVC stage per experiment (`train@<name>`), so each is cached on its own."""

    seed: int = 42
    experiments: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")], Experiment] = Field(
        min_length=1
    )


class CompareParams(Section):
    """How the champion is chosen and where it is registered."""

    metric: str = Field("auto", description="auto: f1 for classification, rmse for regression")
    registered_model: str = Field("auto", description="auto: mlrig-<dataset name>")


class IntRange(Section):
    """`{int: [low, high]}`: integers from low to high, both included."""

    bounds: tuple[int, int] = Field(alias="int")
    step: int = Field(1, ge=1, description="sample low, low + step, ... up to high")

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        _check_bounds(*self.bounds, log=False)
        return self


class FloatRange(Section):
    """`{float: [low, high]}`: real numbers from low to high."""

    bounds: tuple[float, float] = Field(alias="float")
    log: bool = Field(False, description="sample on a log scale (low must be above 0)")

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        _check_bounds(*self.bounds, self.log)
        return self


class Choice(Section):
    """`{choice: [a, b, ...]}`: one of the listed values (null for a param's None)."""

    choice: list[bool | int | float | str | None] = Field(min_length=1)


def _check_bounds(low: float, high: float, log: bool) -> None:
    if low >= high:
        raise ValueError(f"the range [{low}, {high}] is empty: low must be below high")
    if log and low <= 0:
        raise ValueError(f"a log scale needs low above 0 (got {low})")


DIMENSION_KINDS = ("int", "float", "choice")


def _dimension_kind(value: Any) -> str | None:
    """Which kind of search dimension a value is: the one key of int, float, choice it has."""
    if isinstance(value, BaseModel):
        return {IntRange: "int", FloatRange: "float", Choice: "choice"}.get(type(value))
    if isinstance(value, dict):
        kinds = [kind for kind in DIMENSION_KINDS if kind in value]
        return kinds[0] if len(kinds) == 1 else None
    return None


#: one searched param: `{int: [2, 16]}`, `{float: [0.001, 100], log: true}`, `{choice: [...]}`
Dimension = Annotated[
    Annotated[IntRange, Tag("int")]
    | Annotated[FloatRange, Tag("float")]
    | Annotated[Choice, Tag("choice")],
    Discriminator(
        _dimension_kind,
        custom_error_type="search_dimension",
        custom_error_message=(
            "a search dimension is one of {int: [low, high]}, {float: [low, high]} "
            "(add log: true for a log scale) or {choice: [a, b, ...]}"
        ),
    ),
]
SearchSpace = dict[str, Dimension]


class TuneParams(Section):
    """`mlrig tune`: the search space of each family or experiment, and how trials are scored.

    An experiment's own space (`experiments.<name>`) replaces its family's (`families.<family>`);
    the params a space leaves out keep the experiment's values.
    """

    trials: int = Field(20, ge=1, description="trials of a search unless --trials is given")
    cv_folds: int = Field(
        5, ge=2, description="folds of the cross-validation on the train split scoring a trial"
    )
    families: dict[FamilyName, SearchSpace] = Field(default_factory=dict)
    experiments: dict[str, SearchSpace] = Field(default_factory=dict)


class ReportParams(Section):
    title: str = "mlrig experiment report"


class Params(Section):
    """The whole params.yaml."""

    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    split: SplitParams = SplitParams()
    train: TrainParams
    compare: CompareParams = CompareParams()
    tune: TuneParams = TuneParams()
    report: ReportParams = ReportParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _source_tracked(self) -> Params:
        # here, not on IngestParams: the ingest step reads any path it is given (its tests do)
        check_source_tracked(self.ingest.source)
        return self


SectionT = TypeVar("SectionT", bound=BaseModel)


def round_trip_yaml() -> YAML:
    """The YAML of the project's files: comments, key order, quotes and long lines kept."""
    yaml = YAML()  # round-trip mode keeps the user's comments and key order
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # a long command line stays on its line
    return yaml


def read_params_file(path: Path) -> Any:
    """Read params.yaml as a round-trip document (comments kept).

    Raises:
        ParamsError: the file is missing or not valid YAML.
    """
    try:
        text = path.read_text()
    except OSError as error:
        raise ParamsError(f"Cannot read {path}: {error.strerror}. Restore it from git.") from None
    try:
        document = round_trip_yaml().load(text)
    except YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {error}. Fix the file.") from None
    if not isinstance(document, dict):
        raise ParamsError(f"{path} must hold a mapping of step names to their params.")
    return document


def dotted_key(location: tuple[str | int, ...], prefix: tuple[str, ...] = ()) -> str:
    """The params key of a pydantic error location, as a user writes it in params.yaml or -S.

    Pydantic puts the discriminator (the family) after the experiment name; no such key exists.
    """
    parts = [*prefix, *map(str, location)]
    for index in range(len(parts) - 2, 1, -1):
        if parts[index - 2] == "experiments" and parts[index] in MODEL_FAMILIES:
            del parts[index]
    # nor the kind of a search dimension (tune.families.<family>.<param>.<kind>.<kind>)
    if parts[:1] == ["tune"] and len(parts) > 4 and parts[4] in DIMENSION_KINDS:
        del parts[4]
    return ".".join(parts)


#: how alike (difflib's ratio) a wrong key and a known one must be for a "did you mean":
#: trian/train is 0.8, while evaluate/validate (a step without params) is 0.75
TYPO_CUTOFF = 0.8


def _schema_child(node: Any, part: str | int) -> Any:
    """The type found one step down a pydantic error location from `node`, or None."""
    while get_origin(node) is Annotated:
        node = get_args(node)[0]
    if isinstance(node, type) and issubclass(node, BaseModel):
        for name, field in node.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    if get_origin(node) is dict:
        return get_args(node)[1]  # the part is a key the user chose
    if get_origin(node) in (Union, UnionType):
        for member in get_args(node):
            tags = [meta.tag for meta in get_args(member)[1:] if isinstance(meta, Tag)]
            while get_origin(member) is Annotated:
                member = get_args(member)[0]
            if part in tags or _literal_field_holds(member, part):
                return member
    return None


def _literal_field_holds(model: Any, value: str | int) -> bool:
    """Whether a model has a Literal field (a discriminator) that only `value` satisfies."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return False
    return any(
        get_origin(field.annotation) is Literal and get_args(field.annotation) == (value,)
        for field in model.model_fields.values()
    )


def _keys_at(schema: type[BaseModel], location: tuple[str | int, ...]) -> list[str]:
    """The keys params.yaml may hold at a location of the schema (none if it is no section)."""
    node: Any = schema
    for part in location:
        node = _schema_child(node, part)
    if node is not None and get_origin(node) in (Union, UnionType):
        # an optional section, e.g. `max_depth: int | None` holds no keys, a model does
        node = next((arg for arg in get_args(node) if isinstance(arg, type)), None)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return [field.alias or name for name, field in node.model_fields.items()]
    return []


def _did_you_mean(problem: Any, schema: type[BaseModel], prefix: tuple[str, ...]) -> str:
    """`; did you mean <dotted key>?` for a misspelt key, or nothing."""
    from difflib import get_close_matches

    location = tuple(problem["loc"])
    if problem["type"] == "extra_forbidden" and location:
        wrong, known = str(location[-1]), _keys_at(schema, location[:-1])
        parent = location[:-1]
    elif problem["type"] == "union_tag_not_found" and isinstance(problem.get("input"), dict):
        # the discriminator is missing: is one of the given keys a misspelling of it?
        wanted = problem["ctx"]["discriminator"].strip("'")
        given = map(str, problem["input"])
        wrong = next(iter(get_close_matches(wanted, given, n=1, cutoff=TYPO_CUTOFF)), "")
        known, parent = [wanted], location
    else:
        return ""
    close = get_close_matches(wrong, known, n=1, cutoff=TYPO_CUTOFF) if wrong else []
    return f"; did you mean {dotted_key((*parent, close[0]), prefix)}?" if close else ""


def describe_validation_error(
    error: ValidationError,
    origin: str,
    prefix: tuple[str, ...] = (),
    schema: type[BaseModel] | None = None,
) -> str:
    """One line per problem, each naming the dotted params key, what is wrong and the value.

    Args:
        error: what pydantic found.
        origin: the file or override the document came from.
        prefix: the section the document is, when it is one (load_section).
        schema: the model the document was validated against (default: Params), which a
            misspelt key is matched against for a "did you mean".
    """
    lines = []
    for problem in error.errors():
        key = dotted_key(problem["loc"], prefix)
        value = problem.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        message = problem["msg"].removeprefix("Value error, ")  # a validator's own message
        hint = _did_you_mean(problem, schema or Params, prefix)
        lines.append(f"  {key}: {message}{shown}{hint}")
    families = ", ".join(MODEL_FAMILIES)
    return (
        f"{origin} has invalid params:\n" + "\n".join(lines) + "\n"
        f"Fix them in params.yaml or in your -S override. Model families: {families}."
    )


def step_sections(root: Path) -> dict[str, type[Section]]:
    """The params sections the project's own steps define: `SECTION` of `steps/<name>/params.py`.

    Loaded from the file, not imported by name: the project's folder need not be on sys.path
    (a scratch copy, a container's workspace), and the library imports no step.

    Raises:
        ParamsError: a params.py holds no `SECTION` that is a params section.
    """
    steps_dir = root.resolve() / STEPS_DIR
    files = sorted(steps_dir.glob(f"*/{STEP_PARAMS_FILE}")) if steps_dir.is_dir() else []
    return _step_sections(tuple((path, path.stat().st_mtime_ns) for path in files))


@cache  # by file and modification time: loaded once per process unless a file changes
def _step_sections(files: tuple[tuple[Path, int], ...]) -> dict[str, type[Section]]:
    sections: dict[str, type[Section]] = {}
    for path, _ in files:
        name = path.parent.name
        spec = importlib.util.spec_from_file_location(f"mlrig_step_params.{name}", path)
        assert spec is not None and spec.loader is not None  # a .py file always has both
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # the user's code: whatever it raises, name the file
            raise ParamsError(
                f"{path} could not be loaded ({type(error).__name__}: {error}); fix it, then "
                "run again: it holds the schema of the step's section of params.yaml."
            ) from error
        section = getattr(module, "SECTION", None)
        if not (isinstance(section, type) and issubclass(section, Section)):
            raise ParamsError(
                f"{path} defines no SECTION: set `SECTION = <the step's params class>`, a "
                "subclass of mlrig.experiments.params.Section, so params.yaml's section can be "
                "checked."
            )
        sections[name] = section
    return sections


def params_schema(root: Path | None) -> type[Params]:
    """The schema of the project's params.yaml: the built-in sections and its steps' own."""
    extra = {
        name: (section, section())
        for name, section in (step_sections(root) if root else {}).items()
        if name not in Params.model_fields and name != "validate"
    }
    if not extra:
        return Params
    return create_model("Params", __base__=Params, **extra)  # type: ignore[call-overload,no-any-return]


def validate_params(document: Any, origin: str = "params.yaml", root: Path | None = None) -> Params:
    """Validate a params document against the schema (with the steps' own sections of `root`).

    Raises:
        ParamsError: listing every wrong key with what is expected.
    """
    schema = params_schema(root)
    if isinstance(document, dict):  # a section whose keys are all commented out: the defaults
        document = {key: {} if value is None else value for key, value in document.items()}
    try:
        return schema.model_validate(document)
    except ValidationError as error:
        raise ParamsError(describe_validation_error(error, origin, schema=schema)) from None


def load_params(path: Path) -> Params:
    """Read and validate params.yaml."""
    return validate_params(read_params_file(path), origin=str(path), root=path.parent)


def load_section(path: Path, name: str, schema: type[SectionT]) -> SectionT:
    """Read and validate the section of params.yaml that one step owns."""
    document = read_params_file(path)
    try:
        # a section whose keys are all commented out reads as None: it means the defaults
        return schema.model_validate(document.get(name) or {})
    except ValidationError as error:
        raise ParamsError(
            describe_validation_error(error, str(path), prefix=(name,), schema=schema)
        ) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `key.path=value` as `dvc exp run -S` does; the value is parsed as YAML.

    Raises:
        ParamsError: when the text has no `=` or an empty key.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ParamsError(
            f"Override {text!r} is not of the form key.path=value, e.g. split.seed=7."
        )
    try:
        value = round_trip_yaml().load(raw) if raw.strip() else ""
    except YAMLError:
        value = raw
    return key.strip().split("."), value


def set_value(document: Any, keys: list[str], value: Any, what: str) -> None:
    """Set the value at a key path of a params document, creating mappings on the way.

    Args:
        what: how an error names the change, e.g. "Override 'split.seed.x=1'".

    Raises:
        ParamsError: a key on the path holds a value, not a section.
    """
    node = document
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            path = ".".join(keys[: depth + 1])
            raise ParamsError(f"{what}: {path} is a value, not a section.")
        node = child
    node[keys[-1]] = value


def apply_overrides(document: Any, overrides: list[str]) -> Any:
    """Set each `key.path=value` in the params document, creating mappings on the way."""
    for text in overrides:
        keys, value = parse_override(text)
        set_value(document, keys, value, f"Override {text!r}")
    return document


def dump_params(document: Any) -> str:
    """Serialize a round-trip params document back to YAML text."""
    buffer = io.StringIO()
    round_trip_yaml().dump(document, buffer)
    return buffer.getvalue()


PARAMS_FILE = "params.yaml"
