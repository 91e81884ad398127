"""The docs site: `mkdocs build --strict` passes with no warning, its generated reference covers
every command, setting and param the code has today, and the README's links into it resolve."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer.main

from mlrig.cli import app
from mlrig.experiments.params import StageResources, params_schema
from mlrig.settings import Settings
from steps.train.params import FAMILY_PARAMS, MODEL_FAMILIES

REPO_ROOT = Path(__file__).parents[2]
README_MAX_LINES = 150
#: a relative Markdown link: [text](target), the target without a scheme or an anchor alone
RELATIVE_LINK = re.compile(r"\]\((?![a-z]+://|#)([^)#\s]+)(?:#[^)]*)?\)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as `make docs` builds it, into a temporary folder."""
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=REPO_ROOT,
        # Material's banner about MkDocs 2.0 is printed at every build, whatever the docs say
        env=os.environ | {"NO_MKDOCS_2_WARNING": "true"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith(("WARN", "ERROR"))]
    assert problems == [], "\n".join(problems)
    return site_dir


def page_text(site: Path, page: str) -> str:
    """A built page's HTML, entities decoded (Typer's Markdown escapes quotes and brackets)."""
    return html.unescape((site / page / "index.html").read_text())


def command_names(command: click.Command, prefix: str) -> list[str]:
    """`mlrig run`, `mlrig clearml pipeline`, ...: every command of the app, groups included."""
    names = [prefix]
    if isinstance(command, click.Group):
        for name, child in command.commands.items():
            names += command_names(child, f"{prefix} {name}")
    return names


def test_the_site_builds_with_every_page(site: Path) -> None:
    for page in ("guides/pipeline", "reference/cli", "architecture", "contributing"):
        assert (site / page / "index.html").is_file(), page


def test_the_cli_reference_has_every_command_of_the_typer_app(site: Path) -> None:
    text = page_text(site, "reference/cli")
    missing = [
        name
        for name in command_names(typer.main.get_command(app), "mlrig")
        if f"<code>{name}</code>" not in text
    ]
    assert missing == []
    assert "--set-param" in text  # options, not headings alone


def test_the_settings_reference_has_every_field_with_its_description(site: Path) -> None:
    text = page_text(site, "reference/settings")
    for field in Settings.model_fields.values():
        assert field.description, f"{field.alias} has no description for the reference"
        assert f"<code>{field.alias}</code>" in text, field.alias


def test_the_params_reference_has_every_key_of_every_section(site: Path) -> None:
    """Every section of the project's schema (the steps' own and the library's), and train's
    model families with their params."""
    text = page_text(site, "reference/params")
    sections = params_schema(REPO_ROOT).model_fields.items()
    keys = [
        f"{section.alias or name}.{field.alias or key}"
        for name, section in sections
        for key, field in section.annotation.model_fields.items()
    ]
    keys += [f"params.{key}" for family in FAMILY_PARAMS.values() for key in family.model_fields]
    # resources: keyed by the project's steps and stages, each entry what its pod needs
    keys += [f"resources.<step or stage>.{key}" for key in StageResources.model_fields]
    assert len(sections) == 9
    assert [key for key in keys if f"<code>{key}</code>" not in text] == []
    families = [family for family in MODEL_FAMILIES if f"<code>{family}</code>" not in text]
    assert families == []


def test_the_readme_is_short_and_its_links_resolve() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert "make test" in readme  # CI runs the README's test command (.ci/run)
    targets = RELATIVE_LINK.findall(readme)
    assert any(target.startswith("docs/") for target in targets)
    assert [target for target in targets if not (REPO_ROOT / target).exists()] == []
