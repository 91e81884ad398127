"""Scaffold a new pipeline step: `make step NAME=my_step` runs `python -m mlrig.scaffold my_step`.

It renders `steps/<name>/` from the Jinja2 templates in `mlrig/templates/step/`: the step module
(a typed core function that copies an input file into an output folder, plus a thin Typer CLI),
`__init__.py`, `__main__.py`, a README and a passing test. It never edits dvc.yaml or
params.yaml; it prints what to add to them, the stage's deps listing the project's code the
step imports (as `mlrig run` requires).
"""

from __future__ import annotations

import ast
import keyword
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.code_deps import step_code_files
from mlrig.errors import EXIT_FAILED, MlrigError, exits_cleanly
from mlrig.settings import find_project_dir

if TYPE_CHECKING:
    from jinja2 import Environment

TEMPLATES = Path(__file__).parent / "templates" / "step"
STEPS_DIR = "steps"
#: Each template and the file it becomes inside `steps/<name>/`.
STEP_FILES = {
    "__init__.py.j2": "__init__.py",
    "__main__.py.j2": "__main__.py",
    "step.py.j2": "{name}.py",
    "README.md.j2": "README.md",
    "test_step.py.j2": "tests/test_{name}.py",
}
NEXT_STEPS_TEMPLATE = "next_steps.txt.j2"
SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
#: Longer names would push lines of the generated code past the line length ruff enforces.
MAX_NAME_LENGTH = 32
#: A valid step name that none of the templates uses, to find the names they do use.
PROBE_NAME = "scaffold_probe"


def class_name(name: str) -> str:
    """The CamelCase form of a snake_case step name (`my_step` -> `MyStep`)."""
    return "".join(part.capitalize() for part in name.split("_"))


def template_environment() -> Environment:
    """The Jinja2 environment of the step templates; an unknown variable is an error."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # the output is Python, Markdown and YAML, not HTML
    )


def render(template: str, name: str, code_deps: list[str] | None = None) -> str:
    """Render one template for the step `name`.

    Args:
        template: the template's file name.
        name: the step's name.
        code_deps: the project's files the step runs beyond its own folder (its stage's deps).
    """
    context = {"name": name, "class_name": class_name(name), "code_deps": code_deps or []}
    return template_environment().get_template(template).render(context)


def render_step(name: str) -> dict[str, str]:
    """Every file of the step, as text by its path inside `steps/<name>/`."""
    return {
        destination.format(name=name): render(template, name)
        for template, destination in STEP_FILES.items()
    }


def names_used_by_templates() -> frozenset[str]:
    """Every identifier the generated Python code binds or reads (imports, locals, builtins).

    A step named like one of them would shadow it or be shadowed, e.g. `main`, `shutil`, `params`.
    """
    used: set[str] = set()
    for path, text in render_step(PROBE_NAME).items():
        if not path.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.arg):
                used.add(node.arg)
            elif isinstance(node, ast.FunctionDef | ast.ClassDef):
                used.add(node.name)
            elif isinstance(node, ast.alias):
                used.add(node.asname or node.name.split(".")[0])
    return frozenset(used - {PROBE_NAME})


def check_step_name(name: str) -> None:
    """Refuse a name that cannot name a step's folder, module, function, stage and section.

    Raises:
        MlrigError: the name is not a snake_case Python identifier, is a keyword, is too
            long, starts with `test` or clashes with a name the generated code uses.
    """
    if not SNAKE_CASE.fullmatch(name):
        raise MlrigError(
            f"Step name {name!r} is not a Python identifier in snake_case: use lowercase "
            "letters, digits and single underscores, starting with a letter, e.g. my_step."
        )
    if keyword.iskeyword(name):
        raise MlrigError(
            f"Step name {name!r} is a Python keyword, so `import steps.{name}` cannot work. "
            f"Choose another name, e.g. {name}_step."
        )
    if len(name) > MAX_NAME_LENGTH:
        raise MlrigError(
            f"Step name {name!r} has {len(name)} characters; use at most {MAX_NAME_LENGTH}."
        )
    if name.startswith("test"):
        raise MlrigError(
            f"Step name {name!r} starts with 'test', so pytest would collect the step's "
            "function as a test. Choose another name."
        )
    if name in names_used_by_templates():
        raise MlrigError(
            f"Step name {name!r} is already a name in the generated code (an import, variable "
            f"or builtin it uses). Choose another name, e.g. {name}_step."
        )


def write_step(step_dir: Path, files: dict[str, str]) -> list[Path]:
    """Create `step_dir` (which must not exist) with `files`; on a write error, remove it again.

    Returns:
        The paths written.

    Raises:
        MlrigError: the folder exists (exit code 2) or cannot be written (exit code 1).
    """
    try:
        step_dir.mkdir()
    except FileExistsError:  # a folder, a file or a dangling symlink: never overwrite it
        raise MlrigError(
            f"Step {step_dir.name!r} already exists: {step_dir}. Choose another name, or "
            "remove that folder first."
        ) from None
    except OSError as error:
        raise MlrigError(
            f"Cannot create {step_dir}: {error.strerror}.", exit_code=EXIT_FAILED
        ) from None
    written: list[Path] = []
    try:
        for relative, text in files.items():
            path = step_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    except OSError as error:
        shutil.rmtree(step_dir, ignore_errors=True)
        raise MlrigError(
            f"Cannot write into {step_dir}: {error.strerror}. Nothing was created.",
            exit_code=EXIT_FAILED,
        ) from None
    return written


def scaffold_step(name: str, root: Path) -> list[Path]:
    """Create `steps/<name>/` in the project at `root`, rendered from the step templates.

    Args:
        name: the step's name, a snake_case Python identifier.
        root: the project folder (the one holding dvc.yaml and `steps/`).

    Returns:
        The paths written.

    Raises:
        MlrigError: the name is refused, the project has no `steps/` folder, the step exists
            already, or a file cannot be written. Nothing is left behind in any case.
    """
    check_step_name(name)
    steps_dir = root / STEPS_DIR
    if not steps_dir.is_dir():
        raise MlrigError(
            f"{root} has no {STEPS_DIR}/ folder. Run this from an mlrig project, or pass "
            "--project-dir."
        )
    return write_step(steps_dir / name, render_step(name))


app = typer.Typer(add_completion=False, help="Scaffold a new pipeline step under steps/.")


@app.command()
@exits_cleanly
def main(
    name: Annotated[str, typer.Argument(help="the step's name in snake_case, e.g. my_step")],
    project_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="MLRIG_PROJECT_DIR",
            help="the project folder (with dvc.yaml); default: found from the current folder",
        ),
    ] = None,
) -> None:
    """Create steps/NAME/ with its module, CLI, README and test, then print the next steps."""
    root = find_project_dir(project_dir)
    written = scaffold_step(name, root)
    typer.echo(f"Created step {name} in {root}:")
    for path in written:
        typer.echo(f"  {path.relative_to(root)}")
    typer.echo("")
    step_dir = root / STEPS_DIR / name
    code_deps = [
        path
        for path in step_code_files(root, step_dir)
        if not path.startswith(f"{STEPS_DIR}/{name}/")
    ]
    typer.echo(render(NEXT_STEPS_TEMPLATE, name, code_deps), nl=False)


if __name__ == "__main__":
    app()
