"""`mlrig ci`: what the GitLab CI jobs run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.cli.app import (
    ci_app,
)
from mlrig.errors import exits_cleanly

if TYPE_CHECKING:
    pass


@ci_app.command("note")
@exits_cleanly
def ci_note_command(
    target: Annotated[
        str, typer.Option(help="the revision to diff against (origin/<target branch>)")
    ],
) -> None:
    """The merge request note: params and metrics diffs, experiment table, champion decision.

    Written to reports/merge-request-note.md, and posted on the merge request when
    MLRIG_GITLAB_TOKEN (a project access token, api scope) is set.
    """
    from mlrig.ci import write_and_post_note
    from mlrig.settings import load_settings

    path, posted = write_and_post_note(load_settings().root, target)
    if posted:
        typer.echo(f"Note posted on {posted}; also in {path}")
    else:
        typer.echo(f"No MLRIG_GITLAB_TOKEN: the note is only in {path} (a job artifact)")
