"""The project's code a stage executes, so that dvc.yaml can list it as the stage's deps.

A stage runs `python -m steps.<name>`, and that step imports mlrig's library (params and their
defaults, tables, tracking) and other steps' modules. DVC re-runs a stage only when a dep
changed, so every one of those files must be a dep, or an edit to, say, a model default in
steps/train/params.py leaves stale results reported as up to date. The files are found by
following the `import` statements (those inside functions too) from the step's folder through
every module of the project (under `src/` or the root); installed packages are not the project's.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlrig.errors import ConfigError

DVC_YAML = "dvc.yaml"
PARAMS_YAML = "params.yaml"
#: where a templated part of a dep begins (`outputs/train/${key}`)
TEMPLATE = "${"
#: the files that track data with DVC, as a git pathspec
DVC_FILES = ":(glob)**/*.dvc"
#: a stage whose command runs a step's package: `python -m steps.<name> ...`
STEP_COMMAND = re.compile(r"python(?:3)?\s+-m\s+(steps\.\w+)")


@dataclass(frozen=True)
class MissingCodeDeps:
    """A stage of dvc.yaml and the project files its step runs that are not among its deps."""

    stage: str
    files: list[str]


def module_file(root: Path, module: str) -> Path | None:
    """The project file of a module (`src/<path>.py`, `<path>.py` or a package's __init__)."""
    relative = Path(*module.split("."))
    for base in (root / "src", root):
        for candidate in (base / relative.with_suffix(".py"), base / relative / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name a file imports, with its parent packages (they run too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` imports a module, `from module import name` a name
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {
        ".".join(name.split(".")[:end]) for name in names for end in range(1, name.count(".") + 2)
    }


def step_code_files(root: Path, step_dir: Path) -> list[str]:
    """The project's files a step executes: its own modules and all they import, transitively.

    Args:
        root: the project folder.
        step_dir: the step's folder, e.g. `root / "steps/train"` (its `tests/` left out).

    Returns:
        Paths relative to `root`, sorted, with `/` separators.
    """
    pending = [
        path for path in step_dir.rglob("*.py") if "tests" not in path.relative_to(step_dir).parts
    ]
    # the packages above the step's folder run when it is imported
    package = step_dir.parent
    while package != root and (package / "__init__.py").is_file():
        pending.append(package / "__init__.py")
        package = package.parent
    seen: set[Path] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        pending += [
            found for module in imported_modules(path) if (found := module_file(root, module))
        ]
    return sorted(path.relative_to(root).as_posix() for path in seen)


def covered(path: str, deps: list[str]) -> bool:
    """Whether a dep of the stage is the file or a folder above it."""
    file = PurePosixPath(path)
    return any(file == PurePosixPath(dep) or PurePosixPath(dep) in file.parents for dep in deps)


def stage_definitions(root: Path) -> dict[str, dict]:
    """Each stage of dvc.yaml as written (a `foreach` group by its name, its `do` body)."""
    import yaml

    document = yaml.safe_load((root / DVC_YAML).read_text()) or {}
    stages = document.get("stages") or {}
    return {
        name: (body.get("do") or {}) if "foreach" in body else body
        for name, body in stages.items()
        if isinstance(body, dict)
    }


def pipeline_inputs(root: Path) -> list[str]:
    """What a run's results come from, as git pathspecs: dvc.yaml, the params files, every
    stage's deps (a templated one as the folder above its template) and the `.dvc` files.
    Not the docs, the tests or dvc.lock: a commit of those changes no result."""
    inputs = {DVC_YAML, PARAMS_YAML, DVC_FILES}
    for body in stage_definitions(root).values():
        for dep in body.get("deps") or []:
            inputs.add(str(dep).split(TEMPLATE)[0].rstrip("/") or ".")
        for entry in body.get("params") or []:
            if isinstance(entry, dict):  # `- other.yaml: [keys]` names another params file
                inputs |= {str(name) for name in entry}
    return sorted(inputs)


def missing_code_deps(root: Path) -> list[MissingCodeDeps]:
    """The stages of dvc.yaml that run a step without depending on all of its code."""
    missing = []
    for name, body in stage_definitions(root).items():
        match = STEP_COMMAND.search(str(body.get("cmd", "")))
        if match is None:
            continue
        step_dir = root / Path(*match.group(1).split("."))
        if not step_dir.is_dir():
            continue
        deps = [str(dep) for dep in body.get("deps") or []]
        if files := [path for path in step_code_files(root, step_dir) if not covered(path, deps)]:
            missing.append(MissingCodeDeps(stage=name, files=files))
    return missing


def require_code_deps(root: Path) -> None:
    """Refuse to run a pipeline whose stages do not depend on all the code they run.

    Raises:
        ConfigError: naming each stage and the deps lines to add to dvc.yaml.
    """
    if not (missing := missing_code_deps(root)):
        return
    listed = "\n".join(
        f"  {entry.stage}:\n" + "".join(f"      - {path}\n" for path in entry.files)
        for entry in missing
    )
    raise ConfigError(
        f"Stages of {DVC_YAML} run code that is not among their deps, so DVC would not re-run "
        "them when it changes and stale results would pass for current ones. Add these "
        f"lines to each stage's deps:\n{listed.rstrip()}"
    )
