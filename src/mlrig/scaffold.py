"""Scaffold a new pipeline step: `make step NAME=my_step` runs `python -m mlrig.scaffold my_step`.

It renders `steps/<name>/` from the Jinja2 templates in `mlrig/templates/step/`: the step module
(a typed core function that copies an input file into an output folder, plus a thin Typer CLI),
its params schema, `__init__.py`, `__main__.py`, a README and a passing test. Then it adds the
step to the project, keeping every comment: its section to params.yaml, its stage to dvc.yaml
(the deps listing the project's code the step imports, as `mlrig run` requires), its dependency
group to pyproject.toml (what its image installs) and its image to the build job's matrix in
.gitlab-ci.yml. `mlrig run`, `--executor containers` and the ClearML pipeline then take it as
it is. Every edit is checked before any file is written; on an error nothing is left behind.
"""

from __future__ import annotations

import ast
import io
import keyword
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.representer import RoundTripRepresenter

from mlrig.dvc.code_deps import step_code_files
from mlrig.errors import EXIT_FAILED, MlrigError, exits_cleanly, run_logged
from mlrig.experiments.params import LIBRARY_SECTIONS, PARAMS_FILE, STEPS_DIR, round_trip_yaml
from mlrig.images.build import find_uv
from mlrig.settings import find_project_dir

if TYPE_CHECKING:
    from jinja2 import Environment

TEMPLATES = Path(__file__).parent / "templates" / "step"
#: Each template and the file it becomes inside `steps/<name>/`.
STEP_FILES = {
    "__init__.py.j2": "__init__.py",
    "__main__.py.j2": "__main__.py",
    "step.py.j2": "{name}.py",
    "params.py.j2": "params.py",
    "README.md.j2": "README.md",
    "test_step.py.j2": "tests/test_{name}.py",
}
NEXT_STEPS_TEMPLATE = "next_steps.txt.j2"
PARAMS_SECTION_TEMPLATE = "params_section.yaml.j2"
STAGE_TEMPLATE = "stage.yaml.j2"
DVC_FILE = "dvc.yaml"
PYPROJECT_FILE = "pyproject.toml"
GITLAB_CI_FILE = ".gitlab-ci.yml"
LOCK_FILE = "uv.lock"
#: the variable of the build job's matrix that names a step image
IMAGE_MATRIX_VARIABLE = "STEP"
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


def render(template: str, name: str, **context: object) -> str:
    """Render one template for the step `name` (with more variables for some templates)."""
    context = {"name": name, "class_name": class_name(name)} | context
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
            long, starts with `test`, is a params section the library owns (`tune`) or
            clashes with a name the generated code uses.
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
    if name in LIBRARY_SECTIONS:
        raise MlrigError(
            f"Step name {name!r} is the params section mlrig keeps for `mlrig {name}`, so the "
            f"step's own section could not have that key. Choose another name, e.g. {name}_step."
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


class _NullShown(RoundTripRepresenter):
    """Writes None as `null`, as the templates do, not as nothing."""


_NullShown.add_representer(
    type(None), lambda self, _: self.represent_scalar("tag:yaml.org,2002:null", "null")
)


def yaml_text(document: Any) -> str:
    yaml = round_trip_yaml()
    yaml.Representer = _NullShown
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    return buffer.getvalue()


def add_last(mapping: CommentedMap, template_text: str) -> None:
    """Add the mapping the template holds after the others, a blank line before it."""
    added = round_trip_yaml().load(template_text)
    mapping.update(added)
    for key in added:
        mapping.yaml_set_comment_before_after_key(key, before="\n")


def with_params_section(text: str, name: str) -> str:
    """params.yaml's text with the step's section added last (comments kept).

    Raises:
        MlrigError: params.yaml has a section of that name already.
    """
    document = round_trip_yaml().load(text) or CommentedMap()
    if name in document:
        raise MlrigError(
            f"{PARAMS_FILE} has a {name!r} section already: choose another name, or remove it."
        )
    add_last(document, render(PARAMS_SECTION_TEMPLATE, name))
    return yaml_text(document)


def with_stage(text: str, name: str, code_deps: list[str]) -> str:
    """dvc.yaml's text with the step's stage added last (comments kept).

    Raises:
        MlrigError: dvc.yaml has a stage of that name already.
    """
    document = round_trip_yaml().load(text) or CommentedMap()
    stages = document.setdefault("stages", CommentedMap())
    if name in stages:
        raise MlrigError(
            f"{DVC_FILE} has a stage {name!r} already: choose another name, or remove it."
        )
    stages.fa.set_block_style()  # `stages: {}` of a new project becomes a block
    add_last(stages, render(STAGE_TEMPLATE, name, code_deps=code_deps))
    return yaml_text(document)


def with_dependency_group(text: str, name: str) -> str:
    """pyproject.toml's text with the step image's dependency group `step-<name>` (empty).

    Raises:
        MlrigError: the group exists already.
    """
    import tomlkit

    document = tomlkit.parse(text)
    groups = document.setdefault("dependency-groups", tomlkit.table())
    group = f"step-{name}"
    if group in groups:
        raise MlrigError(
            f"{PYPROJECT_FILE} has a dependency group {group!r} already: choose another name, "
            "or remove it."
        )
    groups.add(tomlkit.comment(f"the {name} step's image: what it imports beyond the base"))
    groups.add(group, tomlkit.array())
    groups.add(tomlkit.nl())
    return tomlkit.dumps(document)


def with_image_in_build_matrix(text: str, name: str) -> str:
    """.gitlab-ci.yml's text with the step in every build matrix that lists the step images.

    Raises:
        MlrigError: no job's `parallel: matrix:` has a `STEP` list.
    """
    document = round_trip_yaml().load(text)
    matrices = [
        entry[IMAGE_MATRIX_VARIABLE]
        for job in document.values()
        if isinstance(job, dict) and isinstance(job.get("parallel"), dict)
        for entry in job["parallel"].get("matrix") or []
        if isinstance(entry, dict) and isinstance(entry.get(IMAGE_MATRIX_VARIABLE), list)
    ]
    if not matrices:
        raise MlrigError(
            f"{GITLAB_CI_FILE} has no job whose `parallel: matrix:` lists the step images as "
            f"{IMAGE_MATRIX_VARIABLE}: add {name!r} to the build job's list by hand."
        )
    for steps in matrices:
        if name not in steps:
            steps.append(name)
    return yaml_text(document)


@dataclass(frozen=True)
class ScaffoldResult:
    """What `scaffold_step` did: the step's files, and a line per project file edited or not."""

    written: list[Path]
    edited: list[str]
    skipped: list[str]


@dataclass(frozen=True)
class ProjectEdit:
    """One project file a new step is added to."""

    file: str
    what: str
    edited: Callable[[str], str]


def project_edits(name: str, code_deps: list[str]) -> list[ProjectEdit]:
    return [
        ProjectEdit(PARAMS_FILE, f"the {name} section", lambda t: with_params_section(t, name)),
        ProjectEdit(DVC_FILE, f"the {name} stage", lambda t: with_stage(t, name, code_deps)),
        ProjectEdit(
            PYPROJECT_FILE,
            f"the dependency group step-{name} (its image)",
            lambda t: with_dependency_group(t, name),
        ),
        ProjectEdit(
            GITLAB_CI_FILE,
            f"{name} in the build job's matrix",
            lambda t: with_image_in_build_matrix(t, name),
        ),
    ]


def edit_project(root: Path, edits: list[ProjectEdit]) -> tuple[list[str], list[str]]:
    """Apply every edit to the project's files, all or none.

    params.yaml and dvc.yaml must exist; pyproject.toml and .gitlab-ci.yml are edited when
    the project has them.

    Returns:
        A line per file edited, and a line per file the project does not have.

    Raises:
        MlrigError: an edit is refused or a file cannot be read or written; every file is
            left as it was.
    """
    new_texts: dict[Path, str] = {}
    edited, skipped = [], []
    for edit in edits:
        path = root / edit.file
        if not path.is_file() and edit.file not in (PARAMS_FILE, DVC_FILE):
            skipped.append(f"{edit.file:<16} {edit.what}")
            continue
        old = path.read_text() if path.is_file() else ""
        new_texts[path] = edit.edited(old)
        edited.append(f"{edit.file:<16} {edit.what}")
    lock_file = root / LOCK_FILE
    relock = root / PYPROJECT_FILE in new_texts and lock_file.is_file()
    originals = {path: path.read_bytes() for path in [*new_texts, lock_file] if path.is_file()}
    try:
        for path, text in new_texts.items():
            path.write_text(text)
        if relock:
            lock_dependencies(root)
            edited.append(f"{LOCK_FILE:<16} locked again with the new group")
    except (OSError, MlrigError) as error:
        for path in new_texts:
            if path not in originals:
                path.unlink(missing_ok=True)
        for path, content in originals.items():
            path.write_bytes(content)
        if isinstance(error, MlrigError):
            raise MlrigError(f"{error} No file was changed.", exit_code=EXIT_FAILED) from None
        raise MlrigError(
            f"Cannot write {error.filename}: {error.strerror}. No file was changed.",
            exit_code=EXIT_FAILED,
        ) from None
    return edited, skipped


def lock_dependencies(root: Path) -> None:
    """uv.lock with pyproject.toml's groups: from uv's cache when it can, else from the index.

    Raises:
        MlrigError: uv is not found or cannot lock.
    """
    uv = find_uv()
    log = root / ".mlrig" / "logs" / "scaffold-lock.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    for offline in (["--offline"], []):  # an empty new group needs no package it lacks
        if run_logged([uv, "lock", *offline], log, cwd=root) == 0:
            return
    raise MlrigError(f"uv lock failed: see {log}, then run `uv lock` and `make step` again.")


def scaffold_step(name: str, root: Path) -> ScaffoldResult:
    """Create `steps/<name>/` in the project at `root` and add the step to the project.

    Args:
        name: the step's name, a snake_case Python identifier.
        root: the project folder (the one holding dvc.yaml and `steps/`).

    Returns:
        The paths written and the project files edited.

    Raises:
        MlrigError: the name is refused, the project has no `steps/` folder, the step exists
            already (folder, section, stage or group), or a file cannot be written. Nothing is
            left behind in any case.
    """
    check_step_name(name)
    steps_dir = root / STEPS_DIR
    if not steps_dir.is_dir() or not (root / DVC_FILE).is_file():
        raise MlrigError(
            f"{root} has no {STEPS_DIR}/ folder or {DVC_FILE}. Run this from an mlrig project, "
            "or pass --project-dir."
        )
    step_dir = steps_dir / name
    written = write_step(step_dir, render_step(name))
    code_deps = [
        path
        for path in step_code_files(root, step_dir)
        if not path.startswith(f"{STEPS_DIR}/{name}/")
    ]
    try:
        edited, skipped = edit_project(root, project_edits(name, code_deps))
    except MlrigError:
        shutil.rmtree(step_dir, ignore_errors=True)
        raise
    return ScaffoldResult(written=written, edited=edited, skipped=skipped)


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
    """Create steps/NAME/ (module, CLI, params schema, README, test), add it to the project."""
    root = find_project_dir(project_dir)
    result = scaffold_step(name, root)
    typer.echo(f"Created step {name} in {root}:")
    for path in result.written:
        typer.echo(f"  {path.relative_to(root)}")
    typer.echo("")
    text = render(NEXT_STEPS_TEMPLATE, name, edited=result.edited, skipped=result.skipped)
    typer.echo(text, nl=False)


if __name__ == "__main__":
    app()
