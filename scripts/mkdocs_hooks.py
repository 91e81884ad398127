"""mkdocs hook: the reference pages are generated from the code at every build.

docs/reference/{cli,settings,params}.md hold their prose and a marker, `<!-- generated: NAME -->`,
which this hook replaces with what the code says today: the CLI by Typer's own generator (`typer
mlrig.cli utils docs`), the settings from the fields of `mlrig.settings.Settings`, the params from
the project's schema (`mlrig.experiments.params.params_schema`: the steps' own sections, from
`steps/<name>/params.py`, and the library's). Nothing generated is committed, so no page can go
stale; a marker missing from its page fails the build.
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
    if annotation is Any:
        return "any value"
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


def fields_table(
    model: type[BaseModel], prefix: str, fields: dict[str, FieldInfo] | None = None
) -> str:
    """The keys of one section (or those of `fields`), each with its type, default, bounds and
    description."""
    rows = ["| key | type | default | bounds | description |", "| --- | --- | --- | --- | --- |"]
    for name, field in (model.model_fields if fields is None else fields).items():
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
    """Each section of params.yaml from the project's schema (its steps' sections and the
    library's own), the choices a section holds, the search space, the committed file."""
    from mlrig.experiments import params

    parts = []
    for name, field in params.params_schema(ROOT).model_fields.items():
        key = field.alias or name
        model = field.annotation
        if not is_section(model):
            continue
        parts.append(section_text(key, model, f"{key}."))
        for choice_key, choice in keyed_choices(model):
            parts.append(choices_text(f"{key}.{choice_key}", choice))
        if model is params.TuneParams:
            parts.append(dimensions_text(params))
        if model is params.ResourcesParams:
            parts.append(f"### `{key}.<step or stage>`\n\n{docstring(params.StageResources)}\n")
            parts.append(fields_table(params.StageResources, f"{key}.<step or stage>."))
    committed = (ROOT / "params.yaml").read_text()
    parts.append(f"## The committed `params.yaml`\n\n```yaml\n{committed}```\n")
    return "\n".join(parts)


def keyed_choices(model: type[BaseModel]) -> list[tuple[str, Any]]:
    """The keys of a section that map names to choices told apart by one key of theirs (a
    discriminated union of sections, like train's experiments by `family`)."""
    found = []
    for name, field in model.model_fields.items():
        if get_origin(field.annotation) is dict:
            value = get_args(field.annotation)[1]
            if discriminator_of(value):
                found.append((field.alias or name, value))
    return found


def discriminator_of(annotation: Any) -> str | None:
    """The key that picks the member of a discriminated union of sections, else None."""
    if get_origin(annotation) is not Annotated:
        return None
    members = get_args(get_args(annotation)[0])
    for meta in get_args(annotation)[1:]:
        key = getattr(meta, "discriminator", None)
        if isinstance(key, str) and members and all(is_section(member) for member in members):
            return key
    return None


def choices_text(key: str, choice: Any) -> str:
    """`<key>.<name>`: which key picks a choice, then each choice with its own keys."""
    discriminator = discriminator_of(choice)
    members = get_args(get_args(choice)[0])
    tags = [get_args(member.model_fields[discriminator].annotation)[0] for member in members]
    others = {
        f"`{field.alias or name}`": None
        for member in members
        for name, field in member.model_fields.items()
        if name != discriminator
    }
    parts = [
        f"### `{key}.<name>`\n",
        f"Each entry: `{discriminator}` (one of "
        + ", ".join(f"`{tag}`" for tag in tags)
        + f") and {', '.join(others) or 'nothing else'}, that choice's own "
        "(below; any left out take their default).\n",
    ]
    for tag, member in zip(tags, members, strict=True):
        parts.append(f"#### `{tag}`\n")
        parts += choice_text(member, discriminator)
    return "\n".join(parts)


def choice_text(member: type[BaseModel], discriminator: str) -> list[str]:
    """One choice: what it is and its keys, those of a section it holds by that section's key."""
    fields = {name: field for name, field in member.model_fields.items() if name != discriminator}
    nested = {name: field for name, field in fields.items() if is_section(field.annotation)}
    about = docstring(member) or " ".join(docstring(field.annotation) for field in nested.values())
    parts = [f"{about}\n"] if about else []
    if plain := {name: field for name, field in fields.items() if name not in nested}:
        parts.append(fields_table(member, "", plain))
    for name, field in nested.items():
        nested_key = field.alias or name
        if field.annotation.model_fields:
            parts.append(fields_table(field.annotation, f"{nested_key}."))
        elif field.annotation.model_config.get("extra") == "allow":  # free-form: say what
            parts.append(f"`{nested_key}`: {docstring(field.annotation)}\n")
        else:
            parts.append(f"No {nested_key}.\n")
    return parts


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
