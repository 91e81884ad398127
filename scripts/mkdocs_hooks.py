"""mkdocs hook: the reference pages are generated from the code at every build.

docs/reference/{cli,settings,params}.md hold their prose and a marker, `<!-- generated: NAME -->`,
which this hook replaces with what the code says today: the CLI by Typer's own generator (`typer
mlrig.cli utils docs`), the settings from the fields of `mlrig.settings.Settings`, the params from
the schema in `mlrig.experiments.params`. Nothing generated is committed, so no page can go stale; a
marker missing from its page fails the build.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from mkdocs.exceptions import PluginError
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- generated: {name} -->"
TYPER_DOCS_OPTIONS = ("--name", "mlrig", "--output")
#: how a reader says the Python types of the settings and params
TYPE_WORDS = {"Path": "path", "str": "text", "NoneType": "null", "SecretStr": "text (secret)"}
FENCE = re.compile(r"^(```|~~~)")


def demoted_headings(markdown: str) -> str:
    """Every heading one level down (outside code blocks), so the page keeps its own title."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        lines.append(f"#{line}" if not fenced and line.startswith("#") else line)
    return "\n".join(lines) + "\n"


def cli_reference() -> str:
    """The Typer app's Markdown, as `typer mlrig.cli utils docs --name mlrig` writes it."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "cli.md"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "typer",
                "mlrig.cli",
                "utils",
                "docs",
                *TYPER_DOCS_OPTIONS,
                str(output),
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        return demoted_headings(output.read_text())


def type_name(annotation: Any) -> str:
    """A type as a reader of params.yaml or of the environment would say it."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    origin, arguments = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in arguments)
    if origin in (typing.Union, types.UnionType):
        named = [type_name(argument) for argument in arguments if argument is not type(None)]
        optional = " or null" if type(None) in arguments else ""
        return " \\| ".join(dict.fromkeys(named)) + optional  # experiments: one word
    if origin is dict:
        return f"mapping of {type_name(arguments[0])} to {type_name(arguments[1])}"
    if origin in (list, tuple):
        inner = ", ".join(type_name(argument) for argument in arguments if argument is not ...)
        return f"[{inner}]"
    if is_section(annotation):
        # the schema's classes by what they are in params.yaml (each described below)
        name = annotation.__name__
        return "an experiment" if name.endswith("Experiment") else "a search dimension"
    if isinstance(annotation, type):
        return TYPE_WORDS.get(annotation.__name__, annotation.__name__)
    return str(annotation)


#: each bound pydantic keeps in a field's metadata: its attribute and how it reads
CONSTRAINTS: dict[type, tuple[str, str]] = {
    annotated_types.Ge: ("ge", "≥ {}"),
    annotated_types.Gt: ("gt", "> {}"),
    annotated_types.Le: ("le", "≤ {}"),
    annotated_types.Lt: ("lt", "< {}"),
    annotated_types.MinLen: ("min_length", "{} or more entries"),
}


def constraints(field: FieldInfo) -> str:
    """The bounds pydantic checks on a field (`ge=2` reads `≥ 2`)."""
    said = []
    for rule in field.metadata:
        for kind, (attribute, text) in CONSTRAINTS.items():
            if isinstance(rule, kind):
                said.append(text.format(getattr(rule, attribute)))
        if getattr(rule, "pattern", None):
            said.append(f"matches `{rule.pattern}`")
    return ", ".join(said)


def default_of(field: FieldInfo) -> str:
    """The default as it would be written in YAML, or `required`."""
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_reference() -> str:
    """One row per field of `Settings`: its environment variable, type, default and meaning."""
    from mlrig.settings import Settings

    rows = [
        "| variable | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for field in Settings.model_fields.values():
        rows.append(
            f"| `{field.alias}` | {type_name(field.annotation)} | {default_of(field)} "
            f"| {cell(field.description or '')} |"
        )
    return "\n".join(rows) + "\n"


def is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def docstring(model: type[BaseModel]) -> str:
    """A schema class's own docstring (pydantic's BaseModel's is not the section's)."""
    text = model.__dict__.get("__doc__") or ""
    return " ".join(text.split())


def fields_table(model: type[BaseModel], prefix: str) -> str:
    """The keys of one section, each with its type, default, bounds and description."""
    rows = ["| key | type | default | bounds | description |", "| --- | --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        key = field.alias or name
        rows.append(
            f"| `{prefix}{key}` | {type_name(field.annotation)} | {default_of(field)} "
            f"| {constraints(field)} | {cell(field.description or '')} |"
        )
    return "\n".join(rows) + "\n"


def section_text(title: str, model: type[BaseModel], prefix: str, level: int = 2) -> str:
    heading = "#" * level
    about = docstring(model)
    parts = [f"{heading} `{title}`\n", f"{about}\n" if about else ""]
    plain = [name for name, field in model.model_fields.items() if not is_section(field.annotation)]
    if plain:
        parts.append(fields_table(model, prefix))
    return "\n".join(part for part in parts if part)


def params_reference() -> str:
    """Each section of params.yaml from the schema, the model families and the search space."""
    from mlrig.experiments import params

    parts = []
    for name, field in params.params_schema(ROOT).model_fields.items():
        key = field.alias or name
        model = field.annotation
        if not is_section(model):
            continue
        parts.append(section_text(key, model, f"{key}."))
        if model is params.TrainParams:
            parts.append(families_text(params))
        if model is params.TuneParams:
            parts.append(dimensions_text(params))
    committed = (ROOT / "params.yaml").read_text()
    parts.append(f"## The committed `params.yaml`\n\n```yaml\n{committed}```\n")
    return "\n".join(parts)


def families_text(params: types.ModuleType) -> str:
    """`train.experiments.<name>`: a family and its params, one table per family."""
    parts = [
        "### `train.experiments.<name>`\n",
        "One experiment: `family` (one of "
        + ", ".join(f"`{family}`" for family in params.MODEL_FAMILIES)
        + ") and `params`, the family's own (below; any left out take their default).\n",
    ]
    for family, model in params.FAMILY_PARAMS.items():
        parts.append(f"#### `{family}`\n")
        if about := docstring(model):
            parts.append(f"{about}\n")
        if model.model_fields:
            parts.append(fields_table(model, "params."))
        else:
            parts.append("No params.\n")
    return "\n".join(parts)


def dimensions_text(params: types.ModuleType) -> str:
    """The search dimensions a `tune` space is made of."""
    parts = [
        "### Search dimensions\n",
        "Each key of `tune.families.<family>` or `tune.experiments.<name>` is a param of the "
        "family, and its value one of these:\n",
    ]
    for model in (params.IntRange, params.FloatRange, params.Choice):
        parts.append(f"#### {docstring(model)}\n")
        parts.append(fields_table(model, ""))
    return "\n".join(parts)


GENERATORS: dict[str, Callable[[], str]] = {
    "reference/cli.md": cli_reference,
    "reference/settings.md": settings_reference,
    "reference/params.md": params_reference,
}


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Put the generated reference in place of its marker."""
    source = page.file.src_uri
    generate = GENERATORS.get(source)
    if generate is None:
        return markdown
    marker = MARKER.format(name=Path(source).stem)
    if marker not in markdown:
        raise PluginError(f"docs/{source} lost its marker {marker}: the reference goes there")
    return markdown.replace(marker, generate())
