"""`make step NAME=...` (mlrig.scaffold): a new step's files, its passing test, and refusals.

Every test scaffolds into a throwaway project (a dvc.yaml and a `steps` package) and runs the
commands a user would, in subprocesses whose PYTHONPATH puts that project first, so `steps`
resolves to the throwaway package rather than the installed one of this repository.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from mlrig.dvc.code_deps import missing_code_deps, require_code_deps
from mlrig.errors import EXIT_BAD_INPUT, EXIT_FAILED, ConfigError, ParamsError
from mlrig.experiments.params import load_params

REPO_ROOT = Path(__file__).parents[2]
STEP = "copy_sample"
STEP_FILES = {
    "__init__.py",
    "__main__.py",
    f"{STEP}.py",
    "params.py",
    "README.md",
    f"tests/test_{STEP}.py",
}
PROJECT_FILES = ("params.yaml", "dvc.yaml", "pyproject.toml", ".gitlab-ci.yml")
LONGEST_NAME = "x" * 15 + "_" + "y" * 16  # MAX_NAME_LENGTH characters


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throwaway mlrig project: dvc.yaml and a `steps` package, nothing else."""
    root = tmp_path / "project"
    (root / "steps").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "steps" / "__init__.py").write_text('"""Pipeline steps."""\n')
    return root


def project_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a command in `root`: its packages first, tracking kept local."""
    inherited = ("MLFLOW_", "CLEARML_", "MLRIG_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(inherited)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return {**env, **extra}


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python <args>` in `cwd`, as a user would."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env if env is not None else project_env(cwd),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def scaffold(
    name: str, cwd: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """What `make step NAME=<name>` runs."""
    return run(["-m", "mlrig.scaffold", name, *options], cwd, env)


def files_under(root: Path) -> dict[str, bytes]:
    """Every file below `root` with its content, to show that nothing changed."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# --- what a new step holds -------------------------------------------------------------------


def test_creates_the_step_and_adds_it_to_the_project(project: Path) -> None:
    # run from a subfolder: the project is the nearest folder above with a dvc.yaml
    result = scaffold(STEP, cwd=project / "steps")

    assert result.returncode == 0, result.stderr
    step_dir = project / "steps" / STEP
    assert set(files_under(step_dir)) == STEP_FILES
    assert f"def {STEP}(" in (step_dir / f"{STEP}.py").read_text()
    assert "SECTION = CopySampleParams" in (step_dir / "params.py").read_text()
    assert f'run_step("steps.{STEP}.{STEP}")' in (step_dir / "__main__.py").read_text()
    assert f"python -m steps.{STEP} --help" in (step_dir / "README.md").read_text()
    for path in STEP_FILES:
        assert f"steps/{STEP}/{path}" in result.stdout
    # its params section and its stage, with cmd, deps, params and outs
    assert (project / "params.yaml").read_text() == (
        f"\n{STEP}:\n  file_name: null  # name of the copy in the output folder; the input "
        "file's name when null\n"
    )
    stage = yaml.safe_load((project / "dvc.yaml").read_text())["stages"][STEP]
    assert stage == {
        "cmd": f"python -m steps.{STEP} --input-file outputs/ingest/table.parquet "
        f"--out-dir outputs/{STEP}",
        "deps": [f"steps/{STEP}", "steps/__init__.py", "outputs/ingest"],
        "params": [STEP],
        "outs": [f"outputs/{STEP}"],
    }
    # a project without pyproject.toml or .gitlab-ci.yml: said, not created
    assert "Not edited (not in this project):\n  pyproject.toml" in result.stdout
    assert not (project / "pyproject.toml").exists()
    assert not (project / ".gitlab-ci.yml").exists()


def test_the_stage_depends_on_the_mlrig_code_the_step_runs(project: Path) -> None:
    """In a project holding mlrig's source, the stage lists the modules the step imports
    (params with its defaults among them), and `mlrig run` accepts it as it is."""
    shutil.copytree(REPO_ROOT / "src" / "mlrig", project / "src" / "mlrig")

    result = scaffold(STEP, cwd=project)

    assert result.returncode == 0, result.stderr
    deps = yaml.safe_load((project / "dvc.yaml").read_text())["stages"][STEP]["deps"]
    for module in (
        "experiments/params",
        "errors",
        "tracking/step_run",
        "executors/warm",
        "settings",
    ):
        assert f"src/mlrig/{module}.py" in deps
    assert missing_code_deps(project) == []
    dvc_yaml = (project / "dvc.yaml").read_text()
    params_dep = "src/mlrig/experiments/params.py"
    (project / "dvc.yaml").write_text(dvc_yaml.replace(f"      - {params_dep}\n", ""))
    with pytest.raises(ConfigError, match=rf"(?s)copy_sample:\n      - {params_dep}"):
        require_code_deps(project)


@pytest.fixture
def repository_copy(tmp_path: Path) -> Path:
    """A project with this repository's own params.yaml, dvc.yaml, pyproject.toml and CI."""
    root = tmp_path / "repository"
    (root / "steps").mkdir(parents=True)
    (root / "steps" / "__init__.py").write_text('"""Pipeline steps."""\n')
    for name in PROJECT_FILES:
        shutil.copy(REPO_ROOT / name, root / name)
    return root


def test_the_project_files_keep_every_line_and_comment(repository_copy: Path) -> None:
    before = {name: (repository_copy / name).read_text() for name in PROJECT_FILES}

    result = scaffold(STEP, repository_copy)

    assert result.returncode == 0, result.stderr
    # the one line that changes: the build matrix gains the step's image
    kept = before | {
        ".gitlab-ci.yml": before[".gitlab-ci.yml"].replace(
            "register, report]", f"register, report, {STEP}]"
        )
    }
    for name, text in kept.items():
        after = (repository_copy / name).read_text()
        removed = [
            line
            for line in difflib.ndiff(text.splitlines(), after.splitlines())
            if line.startswith("- ")
        ]
        assert removed == [], f"{name} lost lines"
        assert after != before[name], f"{name} was not edited"
    for name in PROJECT_FILES:
        assert f"  {name:<16} " in result.stdout
    ci = yaml.safe_load((repository_copy / ".gitlab-ci.yml").read_text())
    assert ci["build"]["parallel"]["matrix"][0]["STEP"][-1] == STEP
    groups = tomllib.loads((repository_copy / "pyproject.toml").read_text())["dependency-groups"]
    assert groups[f"step-{STEP}"] == []


def test_the_steps_section_joins_the_params_schema(repository_copy: Path) -> None:
    for schema in (REPO_ROOT / "steps").glob("*/params.py"):  # the built-in steps' sections
        copied = repository_copy / schema.relative_to(REPO_ROOT)
        copied.parent.mkdir()
        shutil.copy(schema, copied)
    assert scaffold(STEP, repository_copy).returncode == 0
    params_file = repository_copy / "params.yaml"

    params = load_params(params_file)
    params_file.write_text(params_file.read_text().replace("file_name: null", "file_nme: x"))

    assert getattr(params, STEP).file_name is None
    with pytest.raises(ParamsError, match=rf"{STEP}.file_nme: .*did you mean {STEP}.file_name"):
        load_params(params_file)


@pytest.mark.parametrize(
    ("file", "existing"),
    [
        ("params.yaml", f"\n{STEP}:\n  other: 1\n"),
        ("dvc.yaml", f"\n  {STEP}:\n    cmd: echo\n"),
        ("pyproject.toml", f"step-{STEP} = []\n"),
    ],
)
def test_a_step_the_project_has_already_is_refused(
    repository_copy: Path, file: str, existing: str
) -> None:
    path = repository_copy / file
    text = path.read_text()
    if file == "pyproject.toml":
        path.write_text(text.replace("[dependency-groups]\n", f"[dependency-groups]\n{existing}"))
    else:
        path.write_text(text + existing)
    before = files_under(repository_copy)

    result = scaffold(STEP, repository_copy)

    assert result.returncode == EXIT_BAD_INPUT, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {file} has")
    assert "Traceback" not in result.stderr
    assert files_under(repository_copy) == before


def test_project_comes_from_the_option_or_the_environment(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    by_option = scaffold("by_option", elsewhere, "--project-dir", str(project))
    by_environment = scaffold(
        "by_environment", elsewhere, env=project_env(elsewhere, MLRIG_PROJECT_DIR=str(project))
    )

    assert by_option.returncode == 0, by_option.stderr
    assert by_environment.returncode == 0, by_environment.stderr
    assert (project / "steps" / "by_option" / "by_option.py").is_file()
    assert (project / "steps" / "by_environment" / "by_environment.py").is_file()
    assert not any(elsewhere.iterdir())


# --- the generated code works ----------------------------------------------------------------


def test_generated_tests_pass(project: Path, tmp_path: Path) -> None:
    assert scaffold(STEP, project).returncode == 0

    result = run(
        [
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--import-mode=importlib",
            f"--rootdir={project}",
            f"steps/{STEP}/tests",
        ],
        cwd=project,
    )
    # the same PYTHONPATH, from a folder outside the project: `steps` is the throwaway one
    imported = run(["-c", "import steps; print(steps.__file__)"], tmp_path, project_env(project))

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b6 passed\b", result.stdout), result.stdout
    assert Path(imported.stdout.strip()) == project / "steps" / "__init__.py", imported.stderr


def test_generated_command_copies_the_file_and_tracks_the_step(project: Path) -> None:
    assert scaffold(STEP, project).returncode == 0
    (project / "params.yaml").write_text(f"{STEP}:\n  file_name: copied.csv\n")
    (project / "input.csv").write_text("x,target\n0.5,a\n1.5,b\n")

    help_text = run(["-m", f"steps.{STEP}", "--help"], project)
    result = run(
        ["-m", f"steps.{STEP}", "--input-file", "input.csv", "--out-dir", f"outputs/{STEP}"],
        project,
    )

    assert help_text.returncode == 0, help_text.stderr
    assert "--input-file" in help_text.stdout
    assert "--out-dir" in help_text.stdout
    assert result.returncode == 0, result.stderr
    copied = project / "outputs" / STEP / "copied.csv"
    assert copied.read_bytes() == (project / "input.csv").read_bytes()
    sessions = list((project / ".mlrig" / "clearml" / "offline").glob("offline-*.zip"))
    assert len(sessions) == 1, "the step's ClearML task left no offline session"


def test_generated_command_refuses_a_missing_input(project: Path) -> None:
    assert scaffold(STEP, project).returncode == 0
    (project / "params.yaml").write_text(f"{STEP}:\n")  # an empty section means the defaults
    before = files_under(project)

    result = run(
        ["-m", f"steps.{STEP}", "--input-file", "missing.csv", "--out-dir", f"outputs/{STEP}"],
        project,
    )

    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.startswith("error: Input file missing.csv")
    assert "Traceback" not in result.stderr
    assert files_under(project) == before


@pytest.mark.parametrize("name", [STEP, "a", LONGEST_NAME])
def test_generated_code_passes_the_linters(project: Path, name: str) -> None:
    assert scaffold(name, project).returncode == 0
    options = [
        "--no-cache",
        "--config",
        str(REPO_ROOT / "pyproject.toml"),
        # the repository finds mlrig under src/ as first-party; the throwaway project has no src/
        "--config",
        "lint.isort.known-first-party = ['mlrig']",
    ]

    check = run(["-m", "ruff", "check", *options, f"steps/{name}"], project)
    format_check = run(["-m", "ruff", "format", "--check", *options, f"steps/{name}"], project)

    assert check.returncode == 0, check.stdout + check.stderr
    assert format_check.returncode == 0, format_check.stdout + format_check.stderr


# --- refusals: exit code 2, a message, nothing written ---------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("MyStep", "snake_case"),
        ("my-step", "snake_case"),
        ("my step", "snake_case"),
        ("1step", "snake_case"),
        ("_step", "snake_case"),
        ("step_", "snake_case"),
        ("my__step", "snake_case"),
        ("naïve", "snake_case"),
        ("", "snake_case"),
        ("class", "keyword"),
        (LONGEST_NAME + "z", "at most 32"),
        ("test_data", "pytest would collect"),
        ("main", "already a name in the generated code"),
        ("shutil", "already a name in the generated code"),
        ("tune", "the params section mlrig keeps for `mlrig tune`"),
    ],
)
def test_a_bad_name_is_refused(project: Path, name: str, reason: str) -> None:
    before = files_under(project)

    result = scaffold(name, project)

    assert result.returncode == EXIT_BAD_INPUT, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: Step name {name!r}")
    assert reason in result.stderr
    assert files_under(project) == before


def test_an_existing_step_is_refused(project: Path) -> None:
    assert scaffold(STEP, project).returncode == 0
    (project / "steps" / STEP / f"{STEP}.py").write_text("# the user's own work\n")
    (project / "steps" / "legacy").mkdir()
    (project / "steps" / "legacy" / "legacy.py").write_text("# written by hand\n")
    (project / "steps" / "notes").write_text("a file where the step folder would go\n")
    before = files_under(project)

    for name in (STEP, "legacy", "notes"):
        result = scaffold(name, project)

        assert result.returncode == EXIT_BAD_INPUT, result.stdout + result.stderr
        assert result.stderr.startswith(f"error: Step {name!r} already exists")
    assert files_under(project) == before


def test_outside_a_project_is_refused(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    no_steps = tmp_path / "no_steps"
    no_steps.mkdir()
    (no_steps / "dvc.yaml").write_text("stages: {}\n")

    without_dvc_yaml = scaffold(STEP, nowhere)
    without_steps = scaffold(STEP, no_steps)

    assert without_dvc_yaml.returncode == EXIT_BAD_INPUT
    assert "No dvc.yaml found" in without_dvc_yaml.stderr
    assert without_steps.returncode == EXIT_BAD_INPUT
    assert "has no steps/ folder" in without_steps.stderr
    assert not any(nowhere.iterdir())
    assert [path.name for path in no_steps.iterdir()] == ["dvc.yaml"]


def test_a_failing_lock_leaves_every_file_as_it_was(repository_copy: Path) -> None:
    shutil.copy(REPO_ROOT / "uv.lock", repository_copy / "uv.lock")
    before = files_under(repository_copy)

    result = scaffold(STEP, repository_copy, env=project_env(repository_copy, UV="/bin/false"))

    assert result.returncode == EXIT_FAILED, result.stdout + result.stderr
    assert result.stderr.startswith("error: uv lock failed")
    assert "No file was changed." in result.stderr
    after = files_under(repository_copy)
    assert {name: data for name, data in after.items() if not name.startswith(".mlrig/")} == before
