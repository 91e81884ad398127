"""Every stage depends on the code it runs: its step, the mlrig modules and the other steps'
modules it imports, found by following the imports (those inside functions too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlrig.dvc.code_deps import (
    missing_code_deps,
    pipeline_inputs,
    require_code_deps,
    step_code_files,
)
from mlrig.errors import ConfigError

REPO_ROOT = Path(__file__).parents[3]


def test_every_stage_of_the_repository_depends_on_the_code_it_runs() -> None:
    assert missing_code_deps(REPO_ROOT) == []


def test_the_train_step_runs_the_model_defaults_and_the_split_it_imports() -> None:
    files = step_code_files(REPO_ROOT, REPO_ROOT / "steps" / "train")

    # load_section's module, and tracking, imported in main(); split's schema with its code
    expected = ("src/mlrig/experiments/params.py", "src/mlrig/tracking/step_run.py")
    for path in (*expected, "steps/split/split.py", "steps/split/params.py"):
        assert path in files
    assert "steps/train/tests/test_train.py" not in files
    # the CLI does not run inside a stage
    assert not [path for path in files if path.startswith("src/mlrig/cli/")]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose step imports a library module of the project inside a function."""
    (tmp_path / "src" / "lib").mkdir(parents=True)
    (tmp_path / "src" / "lib" / "__init__.py").write_text("")
    (tmp_path / "src" / "lib" / "defaults.py").write_text("LEAF = 1\n")
    (tmp_path / "steps" / "fit").mkdir(parents=True)
    (tmp_path / "steps" / "__init__.py").write_text("")
    (tmp_path / "steps" / "fit" / "__init__.py").write_text("")
    (tmp_path / "steps" / "fit" / "fit.py").write_text(
        "import json\n\n\ndef main():\n    from lib.defaults import LEAF\n    return LEAF\n"
    )
    return tmp_path


def dvc_yaml(project: Path, *deps: str) -> None:
    listed = "".join(f"      - {dep}\n" for dep in deps)
    (project / "dvc.yaml").write_text(
        f"stages:\n  fit:\n    cmd: python -m steps.fit --out x\n    deps:\n{listed}"
    )


def test_a_stage_missing_a_module_its_step_imports_is_refused_naming_the_lines(
    project: Path,
) -> None:
    dvc_yaml(project, "steps/fit")

    with pytest.raises(ConfigError) as caught:
        require_code_deps(project)

    message = str(caught.value)
    assert "fit:\n      - src/lib/__init__.py\n      - src/lib/defaults.py\n" in message + "\n"
    assert "steps/__init__.py" in message


def test_a_folder_dep_covers_the_files_below_it(project: Path) -> None:
    dvc_yaml(project, "steps", "src/lib")

    require_code_deps(project)


def test_the_pipelines_inputs_are_its_deps_params_and_data_not_its_docs_or_lock(
    tmp_path: Path,
) -> None:
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  fit:\n"
        "    cmd: python -m steps.fit\n"
        "    deps: [steps/fit, src/lib/defaults.py, data/raw.csv]\n"
        "    params: [seed, {other.yaml: [depth]}]\n"
        "  score:\n"
        "    foreach: [a, b]\n"
        "    do:\n"
        "      cmd: python -m steps.score ${item}\n"
        '      deps: ["outputs/fit/${item}", steps/score]\n'
    )

    inputs = pipeline_inputs(tmp_path)

    assert set(inputs) == {
        "dvc.yaml", "params.yaml", "other.yaml", ":(glob)**/*.dvc",
        "steps/fit", "src/lib/defaults.py", "data/raw.csv", "outputs/fit", "steps/score",
    }  # fmt: skip
