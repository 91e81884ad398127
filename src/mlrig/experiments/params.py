"""The schema of params.yaml: one section per step, each step reads only its own.

A step owns its section: `steps/<name>/params.py` holds its schema (the `SECTION` class), and
the project's steps' files joined make the schema of its params.yaml (`params_schema`), so the
library knows no step's params and a new step needs no edit of this module. Loading validates
everything up front, so a wrong type or an unknown key is reported with its dotted key (and a
"did you mean" for a misspelling) before any stage runs. What the library itself owns is here:
the `tune` section of `mlrig tune`, `resources`, the `drift` section of `mlrig drift`, reading
and round-tripping params.yaml, `-S` overrides.
"""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import traceback
from functools import cache
from pathlib import Path
from types import ModuleType, UnionType
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from mlrig.errors import ParamsError

TaskKind = Literal["classification", "regression"]
#: the folder of the steps, beside dvc.yaml; `steps/<name>/params.py` is a step's own schema
STEPS_DIR = "steps"
STEP_PARAMS_FILE = "params.py"
#: the pipeline, whose order of stages the schema's sections follow
DVC_YAML = "dvc.yaml"
#: what a step's params.py names: its schema, and its section's key when not the step's name
SECTION_VARIABLE = "SECTION"
SECTION_NAME_VARIABLE = "SECTION_NAME"
#: the module a step's params.py is loaded as when this process's `steps` is another folder
PRIVATE_MODULE_PREFIX = "mlrig_step_params"


class Section(BaseModel):
    """A params section: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: said once under the problems of a params error that names a key of this section
    #: (e.g. the choices a key has); nothing by default
    error_hint: ClassVar[str] = ""


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
    # `mlrig tune` checks the families' names against the train step's
    families: dict[str, SearchSpace] = Field(
        default_factory=dict, description="keyed by model family, as train.experiments names it"
    )
    experiments: dict[str, SearchSpace] = Field(default_factory=dict)


#: a Kubernetes quantity: a number with an optional SI (k, M, G...), binary (Ki, Mi, Gi...) or
#: milli (m) suffix, e.g. 500m, 2, 1.5, 512Mi, 8Gi
QUANTITY_SUFFIXES = {
    "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}  # fmt: skip
QUANTITY = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>[a-zA-Z]{0,2})")


def quantity_value(quantity: str) -> float:
    """The number a Kubernetes quantity stands for: `8Gi` is 8 * 2**30, `500m` is 0.5.

    Raises:
        ValueError: it is no quantity.
    """
    match = QUANTITY.fullmatch(quantity.strip())
    if not match or match["suffix"] not in QUANTITY_SUFFIXES:
        raise ValueError(
            f"{quantity!r} is no Kubernetes quantity: write a number with an optional suffix, "
            "e.g. 2 or 500m (CPU), 8Gi or 512Mi (memory)"
        )
    return float(match["number"]) * QUANTITY_SUFFIXES[match["suffix"]]


def _quantity(value: Any) -> Any:
    """A quantity as the text Kubernetes takes, checked (a number becomes its text)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return value  # pydantic says what it expected
    text = str(value)
    quantity_value(text)
    return text


Quantity = Annotated[str, BeforeValidator(_quantity)]


class StageResources(Section):
    """What a stage's pod needs on the cluster: the stage runs on a ClearML queue whose pods have
    at least this (`mlrig.executors.clearml.resources`)."""

    gpu: int = Field(0, ge=0, description="NVIDIA GPUs (nvidia.com/gpu)")
    cpu: Quantity | None = Field(None, description="CPU cores, as Kubernetes writes them: 2, 500m")
    memory: Quantity | None = Field(None, description="memory, as Kubernetes writes it: 8Gi, 512Mi")

    def over(self, base: StageResources) -> StageResources:
        """`base` with the keys this one sets replaced: a stage's entry over its step's."""
        return base.model_copy(update={key: getattr(self, key) for key in self.model_fields_set})

    @property
    def is_empty(self) -> bool:
        """It asks for nothing: no GPU, no CPU, no memory."""
        return not (self.gpu or self.cpu or self.memory)

    def fits_in(self, provided: StageResources) -> bool:
        """Whether pods that provide `provided` hold this (each size it names, `provided` names
        too, at least as large)."""
        if self.gpu > provided.gpu:
            return False
        for need, have in ((self.cpu, provided.cpu), (self.memory, provided.memory)):
            if need and not (have and quantity_value(need) <= quantity_value(have)):
                return False
        return True

    def describe(self) -> str:
        """`gpu 1, memory 8Gi`; `-` for nothing."""
        parts = [f"gpu {self.gpu}"] if self.gpu else []
        parts += [f"{key} {value}" for key in ("cpu", "memory") if (value := getattr(self, key))]
        return ", ".join(parts) or "-"


class ResourcesParams(Section):
    """`resources`: what a step's (`train`) or a stage's (`train@xgboost`) pod needs when the
    pipeline runs on ClearML's Kubernetes queues (`mlrig run --executor clearml`), e.g.
    `train@xgboost: {gpu: 1, memory: 8Gi}`; a stage's keys over its step's. It chooses the
    queue a stage runs on, not its result: no stage reads it, so it changes no cache key."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, StageResources] = Field(init=False)

    @property
    def entries(self) -> dict[str, StageResources]:
        """Each step's or stage's entry, by its key."""
        return dict(self.__pydantic_extra__ or {})

    def of_stage(self, stage: str, step: str) -> StageResources | None:
        """What a stage needs: its own entry over its step's (None: neither has one)."""
        own, common = self.entries.get(stage), self.entries.get(step)
        if own is None or common is None:
            return own or common
        return own.over(common)


class DriftParams(Section):
    """`mlrig drift`: when new data has drifted too far from the champion's training split.

    Each column is tested with the method Evidently's data drift preset picks for its type and
    size (up to 1000 rows: Kolmogorov-Smirnov for a numeric column, chi-square for a categorical
    one; above: Wasserstein and Jensen-Shannon distances); `threshold` is the share of drifted
    columns at which the data as a whole counts as drifted and `mlrig drift` exits 1.
    """

    threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="share of drifted columns (0 to 1) at which the data counts as drifted",
    )


class Params(Section):
    """The whole params.yaml: the base of the schema `params_schema` assembles, whose fields
    are the steps' sections and the library's own (`LIBRARY_SECTIONS`), each by its key."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


#: the sections the library owns, not a step: they follow the steps' in the schema
LIBRARY_SECTIONS: dict[str, type[Section]] = {
    "tune": TuneParams,
    "resources": ResourcesParams,
    "drift": DriftParams,
}

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


def dotted_key(
    location: tuple[str | int, ...], prefix: tuple[str, ...] = (), schema: Any = None
) -> str:
    """The params key of a pydantic error location, as a user writes it in params.yaml or -S.

    Pydantic puts the tag that chose a member of a discriminated union (an experiment's family,
    a search dimension's kind) in the location; no such key exists, so walking `schema` (the
    model the location is in) leaves it out.
    """
    parts, node = list(prefix), schema
    for part in location:
        child = _schema_child(node, part)
        if not (_is_union(node) and child is not None):  # a member's tag is no key
            parts.append(str(part))
        node = child
    return ".".join(parts)


#: how alike (difflib's ratio) a wrong key and a known one must be for a "did you mean":
#: trian/train is 0.8, while evaluate/validate (a step without params) is 0.75
TYPO_CUTOFF = 0.8


def _unwrapped(node: Any) -> Any:
    while get_origin(node) is Annotated:
        node = get_args(node)[0]
    return node


def _is_union(node: Any) -> bool:
    return get_origin(_unwrapped(node)) in (Union, UnionType)


def _schema_child(node: Any, part: str | int) -> Any:
    """The type found one step down a pydantic error location from `node`, or None."""
    node = _unwrapped(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        for name, field in node.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return _typed_extra(node)
    if get_origin(node) is dict:
        return get_args(node)[1]  # the part is a key the user chose
    if get_origin(node) in (Union, UnionType):
        for member in get_args(node):
            tags = [meta.tag for meta in get_args(member)[1:] if isinstance(meta, Tag)]
            member = _unwrapped(member)
            if part in tags or _literal_field_holds(member, part):
                return member
    return None


def _typed_extra(model: type[BaseModel]) -> Any:
    """The type of a model's extra keys when it types them (`__pydantic_extra__: dict[str, T]`),
    else None."""
    import typing

    extra = typing.get_type_hints(model).get("__pydantic_extra__")
    return get_args(extra)[1] if get_origin(extra) is dict else None


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
    return f"; did you mean {dotted_key((*parent, close[0]), prefix, schema)}?" if close else ""


def _section_hints(location: tuple[str | int, ...], schema: type[BaseModel]) -> list[str]:
    """The `error_hint` of each section on the way to a location, the schema's own first."""
    hints, node = [], schema
    for part in (*location, None):
        model = _unwrapped(node)
        if isinstance(model, type) and issubclass(model, Section) and model.error_hint:
            hints.append(model.error_hint)
        if part is None:
            break
        node = _schema_child(node, part)
    return hints


def describe_validation_error(
    error: ValidationError,
    origin: str,
    schema: type[BaseModel],
    prefix: tuple[str, ...] = (),
) -> str:
    """One line per problem, each naming the dotted params key, what is wrong and the value.

    Args:
        error: what pydantic found.
        origin: the file or override the document came from.
        schema: the model the document was validated against, which a misspelt key is matched
            against for a "did you mean"; the sections a problem is in may add a hint.
        prefix: the section the document is, when it is one (load_section).
    """
    lines, hints = [], ["Fix them in params.yaml or in your -S override."]
    for problem in error.errors():
        key = dotted_key(problem["loc"], prefix, schema)
        value = problem.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        message = problem["msg"].removeprefix("Value error, ")  # a validator's own message
        guess = _did_you_mean(problem, schema, prefix)
        lines.append(f"  {key}: {message}{shown}{guess}")
        hints += [hint for hint in _section_hints(problem["loc"], schema) if hint not in hints]
    return f"{origin} has invalid params:\n" + "\n".join(lines) + "\n" + " ".join(hints)


# --- the schema: the steps' sections and the library's own ----------------------------------


def step_sections(root: Path) -> dict[str, type[Section]]:
    """The params sections of the project's steps, by their key in params.yaml, in the order of
    dvc.yaml's stages: `SECTION` of each `steps/<name>/params.py`, keyed by its `SECTION_NAME`
    when it has one, else by the step's name.

    Found as files, so the project's folder need not be on sys.path (a scratch copy, a
    container's workspace) and the library imports no step: each is loaded by path, or by name
    when this process's `steps` package is the project's (see `_load_step_params`).

    Raises:
        ParamsError: a params.py cannot be loaded, holds no `SECTION` that is a params section,
            or keys it as another section is keyed.
    """
    steps_dir = root.resolve() / STEPS_DIR
    files = sorted(steps_dir.glob(f"*/{STEP_PARAMS_FILE}")) if steps_dir.is_dir() else []
    order = {stage: index for index, stage in enumerate(_stage_names(root))}
    files.sort(key=lambda path: order.get(path.parent.name, len(order)))  # stable: then by name
    sections: dict[str, type[Section]] = {}
    owners: dict[str, Path] = {}
    for path in files:
        module = _load_step_params(path, path.stat().st_mtime_ns)
        key, section = _declared_section(module, path)
        if key in owners or key in LIBRARY_SECTIONS:
            owner = owners.get(key, "the library (mlrig)")
            raise ParamsError(
                f"{path} keys its params section {key!r}, as {owner} does: give it another "
                f"{SECTION_NAME_VARIABLE}, one key of params.yaml belongs to one step."
            )
        sections[key], owners[key] = section, path
    return sections


def _stage_names(root: Path) -> list[str]:
    """The stages of dvc.yaml as written (a `foreach` group by its name), or none."""
    # read here, not with mlrig.dvc: every step imports this module, and its stage depends on
    # all the code the module imports
    try:
        document = YAML(typ="safe").load((root / DVC_YAML).read_text())
        return [str(name) for name in document["stages"]]
    except (OSError, YAMLError, TypeError, KeyError):
        return []  # no or a broken dvc.yaml: DVC says so, the sections keep their names' order


def _declared_section(module: ModuleType, path: Path) -> tuple[str, type[Section]]:
    """What a step's params.py declares: its section's key and schema.

    Raises:
        ParamsError: it has no `SECTION` that is a params section, or a `SECTION_NAME` that is
            no plain word.
    """
    section = getattr(module, SECTION_VARIABLE, None)
    if not (isinstance(section, type) and issubclass(section, Section)):
        raise ParamsError(
            f"{path} defines no {SECTION_VARIABLE}: set `{SECTION_VARIABLE} = <the step's params "
            "class>`, a subclass of mlrig.experiments.params.Section, so params.yaml's section "
            "can be checked."
        )
    key = getattr(module, SECTION_NAME_VARIABLE, path.parent.name)
    if not (isinstance(key, str) and key.isidentifier()):
        raise ParamsError(
            f"{path} sets {SECTION_NAME_VARIABLE} to {key!r}: it is the section's key in "
            "params.yaml, a plain word like the step's name (leave it out to use that)."
        )
    return key, section


@cache  # by file and modification time: loaded once per process unless the file changes
def _load_step_params(path: Path, modified: int) -> ModuleType:
    """A step's params.py as a module.

    When this process's `steps` package is the project's folder, it is imported by name: it is
    then the very module the step's own code imports, so the schema and the step share their
    classes (pydantic tells models apart by their class). Otherwise (a scratch copy or a
    workspace read by another checkout's mlrig) the file is loaded as a module of its own.

    Raises:
        ParamsError: the file (or what it imports) raises, naming the file and what it raised.
    """
    step = path.parent.name
    try:
        if _is_importable_steps(path.parent.parent):
            return importlib.import_module(f"{STEPS_DIR}.{step}.{path.stem}")
        name = f"{PRIVATE_MODULE_PREFIX}.{step}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None  # a .py file always has both
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # as an import does: pydantic resolves names through it
        spec.loader.exec_module(module)
        return module
    except Exception as error:  # the user's code: whatever it raises, name the file
        sys.modules.pop(f"{PRIVATE_MODULE_PREFIX}.{step}", None)
        raise ParamsError(
            f"{path} could not be loaded ({type(error).__name__}: {error}"
            f"{_raised_in(error, path)}); fix it, then run again: it holds the schema of the "
            "step's section of params.yaml."
        ) from error


def _raised_in(error: Exception, path: Path) -> str:
    """` at <file>:<line>` of the project's code that raised, when not the params.py itself
    (importing a step's params imports its package, so its modules run too)."""
    project = path.parent.parent.parent
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if Path(frame.filename).is_relative_to(project)
    ]
    if not frames or Path(frames[-1].filename) == path:
        return ""
    return f" at {Path(frames[-1].filename).relative_to(project)}:{frames[-1].lineno}"


def _is_importable_steps(steps_dir: Path) -> bool:
    """Whether `import steps` in this process finds `steps_dir` (without importing it)."""
    try:
        spec = importlib.util.find_spec(STEPS_DIR)
    except (ImportError, ValueError):
        return False
    locations = (spec.submodule_search_locations or []) if spec else []
    return any(Path(location).resolve() == steps_dir for location in locations)


def _section_field(key: str, section: type[Section]) -> tuple[str, tuple[Any, FieldInfo]]:
    """The schema's field of a section: required when the section has a required key."""
    # a key BaseModel has as an attribute (validate) is the field `<key>_`, read by its key
    name = f"{key}_" if hasattr(BaseModel, key) else key
    required = any(field.is_required() for field in section.model_fields.values())
    default = ... if required else section()
    return name, (section, Field(default, alias=key if name != key else None))


def params_schema(root: Path) -> type[Params]:
    """The schema of the project's params.yaml: its steps' sections (`step_sections`), then the
    library's own (`LIBRARY_SECTIONS`).

    Raises:
        ParamsError: a step's params.py is broken (see `step_sections`).
    """
    sections = {**step_sections(root), **LIBRARY_SECTIONS}
    fields = dict(_section_field(key, section) for key, section in sections.items())
    return create_model("Params", __base__=Params, **fields)  # type: ignore[call-overload,no-any-return]


def section_schema(root: Path, key: str) -> type[Section]:
    """The schema of one section of the project's params.yaml, by its key.

    Raises:
        ParamsError: no step of the project (nor the library) has that section.
    """
    sections = {**step_sections(root), **LIBRARY_SECTIONS}
    if key not in sections:
        raise ParamsError(
            f"No step of {root} has a {key!r} section in params.yaml (its sections: "
            f"{', '.join(sections)}); its steps/<name>/params.py defines one."
        )
    return sections[key]


def validate_params(document: Any, origin: str, root: Path) -> Params:
    """Validate a params document against the schema of the project in `root`.

    Raises:
        ParamsError: listing every wrong key with what is expected.
    """
    schema = params_schema(root)
    if isinstance(document, dict):  # a section whose keys are all commented out: the defaults
        document = {key: {} if value is None else value for key, value in document.items()}
    try:
        return schema.model_validate(document)
    except ValidationError as error:
        raise ParamsError(describe_validation_error(error, origin, schema)) from None


def load_params(path: Path) -> Params:
    """Read and validate params.yaml."""
    return validate_params(read_params_file(path), origin=str(path), root=path.parent)


def step_values(params: Params) -> dict[str, Any]:
    """Every value of the steps' sections by its dotted key, e.g. `split.seed` (what a run's
    parent MLflow run logs): a mapping is flattened, any other value (a list, null) is one."""
    flat: dict[str, Any] = {}

    def add(key: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for name, item in value.items():
                add(f"{key}.{name}", item)
        else:
            flat[key] = value

    for key, value in params.model_dump(by_alias=True, exclude=set(LIBRARY_SECTIONS)).items():
        add(key, value)
    return flat


def load_section(path: Path, name: str, schema: type[SectionT]) -> SectionT:
    """Read and validate the section of params.yaml that one step owns."""
    document = read_params_file(path)
    try:
        # a section whose keys are all commented out reads as None: it means the defaults
        return schema.model_validate(document.get(name) or {})
    except ValidationError as error:
        raise ParamsError(
            describe_validation_error(error, str(path), schema, prefix=(name,))
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
