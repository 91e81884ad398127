"""`mlrig ci note`: what a merge request changes, as a note on it (GitLab CI's report job).

The note holds DVC's params and metrics diffs against the target branch, then the pipeline's
report (the experiment table and the champion decision). With a project access token it is
posted on the merge request (python-gitlab); without one it is only written to a file, which
the job keeps as an artifact.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlrig.dvc.commands import query_dvc
from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError
from mlrig.settings import unset_names

NOTE_FILE = Path("reports/merge-request-note.md")
REPORT_FILE = Path("reports/report.md")


class GitLabSettings(BaseSettings):
    """Where the note goes: GitLab's predefined CI variables, and the token to post with."""

    model_config = SettingsConfigDict(populate_by_name=True)

    token: SecretStr | None = Field(default=None, alias="MLRIG_GITLAB_TOKEN")
    server_url: str | None = Field(default=None, alias="CI_SERVER_URL")
    project_id: str | None = Field(default=None, alias="CI_PROJECT_ID")
    merge_request_iid: str | None = Field(default=None, alias="CI_MERGE_REQUEST_IID")


def dvc_diff(root: Path, kind: str, target: str) -> str:
    """`dvc params|metrics diff <target> --md`: the Markdown table, or a line saying none."""
    result = query_dvc([kind, "diff", target, "--md"], root)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise MlrigError(
            f"dvc {kind} diff {target} failed: {last}. The target must be a revision this "
            "checkout has: git fetch origin <branch> first.",
            exit_code=EXIT_FAILED,
        )
    return result.stdout.strip() or f"No {kind} changed."


def report_body(root: Path) -> str:
    """The pipeline's Markdown report without its figures (a note cannot show local files)."""
    report = root / REPORT_FILE
    if not report.is_file():
        raise ConfigError(f"{report} is missing: run the pipeline first (mlrig run).")
    lines = report.read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("!["))


def merge_request_note(root: Path, target: str) -> str:
    return "\n\n".join(
        [
            f"## mlrig: this merge request against `{target}`",
            "### Params",
            dvc_diff(root, "params", target),
            "### Metrics",
            dvc_diff(root, "metrics", target),
            report_body(root),
        ]
    )


def post_note(note: str, gitlab: GitLabSettings) -> str:
    """Add the note to the merge request; which one it went to.

    Raises:
        ConfigError: a CI variable the post needs is missing.
        MlrigError: GitLab refused the note.
    """
    import gitlab as python_gitlab

    missing = unset_names(
        {
            "MLRIG_GITLAB_TOKEN": gitlab.token,
            "CI_SERVER_URL": gitlab.server_url,
            "CI_PROJECT_ID": gitlab.project_id,
            "CI_MERGE_REQUEST_IID": gitlab.merge_request_iid,
        }
    )
    if missing or gitlab.token is None:  # the token check also narrows its type
        raise ConfigError(f"Cannot post the note: {', '.join(missing)} not set.")
    client = python_gitlab.Gitlab(gitlab.server_url, private_token=gitlab.token.get_secret_value())
    try:
        project = client.projects.get(gitlab.project_id, lazy=True)
        merge_request = project.mergerequests.get(gitlab.merge_request_iid, lazy=True)
        merge_request.notes.create({"body": note})
    except python_gitlab.GitlabError as error:
        raise MlrigError(
            f"GitLab at {gitlab.server_url} refused the note ({error.response_code}): "
            f"{error.error_message}. Check that MLRIG_GITLAB_TOKEN is a project access token "
            "with the api scope.",
            exit_code=EXIT_FAILED,
        ) from None
    return f"merge request !{gitlab.merge_request_iid} of project {gitlab.project_id}"


def write_and_post_note(root: Path, target: str) -> tuple[Path, str | None]:
    """Write the note to reports/merge-request-note.md; post it when a token is set.

    Returns:
        The file, and where the note was posted (None: no MLRIG_GITLAB_TOKEN).
    """
    note = merge_request_note(root, target)
    path = root / NOTE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(note + "\n")
    gitlab = GitLabSettings()
    return path, post_note(note, gitlab) if gitlab.token else None
