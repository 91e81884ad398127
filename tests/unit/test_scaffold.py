"""`make step NAME=...` (mlrig.scaffold): a new step's files, its passing test, and refusals.

Every test scaffolds into a throwaway project (a dvc.yaml and a `steps` package) and runs the
commands a user would, in subprocesses whose PYTHONPATH puts that project first, so `steps`
resolves to the throwaway package rather than the installed one of this repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlrig.code_deps import missing_code_deps, require_code_deps
from mlrig.errors import EXIT_BAD_INPUT, ConfigError

REPO_ROOT = Path(__file__).parents[2]
STEP = "copy_sample"
STEP_FILES = {"__init__.py", "__main__.py", f"{STEP}.py", "README.md", f"tests/test_{STEP}.py"}
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


def test_creates_the_step_and_prints_the_next_steps(project: Path) -> None:
    dvc_yaml = (project / "dvc.yaml").read_bytes()

    # run from a subfolder: the project is the nearest folder above with a dvc.yaml
    result = scaffold(STEP, cwd=project / "steps")

    assert result.returncode == 0, result.stderr
    step_dir = project / "steps" / STEP
    assert set(files_under(step_dir)) == STEP_FILES
    assert f"def {STEP}(" in (step_dir / f"{STEP}.py").read_text()
    assert f'run_step("steps.{STEP}.{STEP}")' in (step_dir / "__main__.py").read_text()
    assert f"python -m steps.{STEP} --help" in (step_dir / "README.md").read_text()
    for path in STEP_FILES:
        assert f"steps/{STEP}/{path}" in result.stdout
    # the next steps: a params section and a dvc.yaml stage with cmd, deps, params and outs
    assert f"{STEP}:\n  # name of the copy" in result.stdout
    assert f"{STEP}: CopySampleParams = CopySampleParams()" in result.stdout
    assert f"python -m steps.{STEP} --input-file outputs/ingest/table.parquet" in result.stdout
    assert (
        f"    deps:\n      - steps/{STEP}\n      - steps/__init__.py\n      - outputs/ingest\n"
        in (result.stdout)
    )
    assert f"    params:\n      - {STEP}\n    outs:\n      - outputs/{STEP}\n" in result.stdout
    # dvc.yaml and params.yaml are left to the user
    assert (project / "dvc.yaml").read_bytes() == dvc_yaml
    assert not (project / "params.yaml").exists()


def test_the_printed_stage_depends_on_the_mlrig_code_the_step_runs(project: Path) -> None:
    """In a project holding mlrig's source, the stage to paste lists the modules the step
    imports (params with its defaults among them), and `mlrig run` accepts it as it is."""
    shutil.copytree(REPO_ROOT / "src" / "mlrig", project / "src" / "mlrig")

    result = scaffold(STEP, cwd=project)

    assert result.returncode == 0, result.stderr
    stage = result.stdout.split("under `stages:` in dvc.yaml", 1)[1].split("\n\n", 2)[1]
    for module in ("params", "errors", "tracking", "warm", "settings"):
        assert f"      - src/mlrig/{module}.py\n" in stage
    (project / "dvc.yaml").write_text(f"stages:\n{stage}\n")
    assert missing_code_deps(project) == []
    without_params = stage.replace("      - src/mlrig/params.py\n", "")
    (project / "dvc.yaml").write_text(f"stages:\n{without_params}\n")
    with pytest.raises(ConfigError, match=r"(?s)copy_sample:\n      - src/mlrig/params.py"):
        require_code_deps(project)


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
