"""The DVC remote resolved once (mlrig.dvc.remote), in a throwaway DVC project: which remote, its
URL and S3 endpoint, and the one message for a remote that is missing or cannot serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlrig.doctor import CheckFailed, check_dvc_remote, require_services
from mlrig.dvc.remote import (
    DvcRemote,
    RemoteError,
    local_config_commands,
    resolve_remote,
    shared_remote,
    stage_remote,
    write_workspace_config,
)
from mlrig.errors import EXIT_BAD_INPUT, ConfigError
from mlrig.settings import Settings
from tests.support.dvc_project import dvc, make_dvc_project

ENDPOINT = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def no_remote_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLRIG_DVC_REMOTE", "MLRIG_DVC_REMOTE_URL", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """No remote at all."""
    return make_dvc_project(tmp_path / "project")


@pytest.fixture
def with_remotes(project: Path, tmp_path: Path) -> Path:
    """A folder remote as DVC's default, and an S3 one with an endpoint."""
    dvc(project, "remote", "add", "-d", "here", str(tmp_path / "remote"))
    dvc(project, "remote", "add", "bucket", "s3://mlrig-dvc/project")
    dvc(project, "remote", "modify", "bucket", "endpointurl", ENDPOINT)
    dvc(project, "remote", "modify", "bucket", "region", "eu-west-3")
    return project


def settings(root: Path, remote: str | None = None) -> Settings:
    return Settings(project_dir=root, MLRIG_DVC_REMOTE=remote)


def test_the_default_remote_unless_mlrig_dvc_remote_names_another(
    with_remotes: Path, tmp_path: Path
) -> None:
    here = resolve_remote(settings(with_remotes))
    assert (here.name, here.is_folder, here.is_s3) == ("here", True, False)
    assert here.folder(with_remotes) == tmp_path / "remote"

    bucket = resolve_remote(settings(with_remotes, "bucket"))
    assert bucket == DvcRemote(
        name="bucket",
        url="s3://mlrig-dvc/project",
        endpoint=ENDPOINT,
        options={"region": "eu-west-3"},
    )
    assert bucket.is_s3 and shared_remote(settings(with_remotes, "bucket")) == bucket


def test_no_remote_gets_one_message_naming_what_to_do(project: Path) -> None:
    with pytest.raises(RemoteError) as raised:
        resolve_remote(settings(project))
    error = raised.value
    assert isinstance(error, ConfigError) and error.exit_code == EXIT_BAD_INPUT
    assert str(error) == (
        "No DVC remote is set: MLRIG_DVC_REMOTE is unset and DVC has no default remote. Fix: "
        "run with --stack local (mlrig stack up adds the S3 remote 'stack'), or set "
        "MLRIG_DVC_REMOTE to an S3 remote of .dvc/config (dvc remote add <name> "
        "s3://<bucket>/<prefix>); a run on this machine alone can use a folder: dvc remote "
        "add -d <name> <folder>."
    )


def test_a_remote_the_config_lacks_is_named_with_those_it_has(with_remotes: Path) -> None:
    with pytest.raises(RemoteError) as raised:
        shared_remote(settings(with_remotes, "missing"))
    assert raised.value.problem == (
        "DVC remote 'missing' (named by MLRIG_DVC_REMOTE) is not in this project's DVC config "
        "(its remotes: bucket, here)"
    )
    assert "dvc remote add missing <url>" in raised.value.fix


def test_a_folder_remote_cannot_serve_containers_or_pods(
    with_remotes: Path, tmp_path: Path
) -> None:
    with pytest.raises(RemoteError) as raised:
        shared_remote(settings(with_remotes))
    assert raised.value.problem.startswith(
        f"DVC remote 'here' (the folder {tmp_path / 'remote'} on this machine) is not on S3, "
        "and stages in containers or pods (the containers and ClearML executors) share their "
        "data through an S3 DVC remote"
    )
    assert "run with --stack local" in raised.value.fix


def test_a_remote_of_another_scheme_is_not_on_s3_either(project: Path) -> None:
    dvc(project, "remote", "add", "-d", "web", "https://example.org/dvc")
    with pytest.raises(RemoteError, match=r"'web' \(https://example.org/dvc\) is not on S3"):
        shared_remote(settings(project))


def test_doctor_and_a_run_say_what_the_resolver_says(project: Path) -> None:
    with pytest.raises(RemoteError) as resolved:
        resolve_remote(settings(project))
    with pytest.raises(CheckFailed) as checked:
        check_dvc_remote(settings(project))
    assert (checked.value.detail, checked.value.fix) == (
        resolved.value.problem,
        resolved.value.fix,
    )
    with pytest.raises(ConfigError) as run:
        require_services(settings(project), mlflow=False, dvc_remote=True)
    assert str(run.value) == str(resolved.value)


def test_doctor_probes_a_folder_remote(with_remotes: Path, tmp_path: Path) -> None:
    detail = check_dvc_remote(settings(with_remotes))
    assert detail == f"remote 'here': folder {tmp_path / 'remote'} writable"


def test_a_remote_set_by_its_config_commands_resolves_to_itself(
    with_remotes: Path, tmp_path: Path
) -> None:
    """How `mlrig stack up` and a stage workspace set theirs: in .dvc/config.local only."""
    bucket = resolve_remote(settings(with_remotes, "bucket"))
    fresh = make_dvc_project(tmp_path / "fresh")
    committed = (fresh / ".dvc" / "config").read_text()
    for command in local_config_commands(bucket, default=True):
        dvc(fresh, *command)
    assert resolve_remote(settings(fresh)) == bucket  # the default now
    assert (fresh / ".dvc" / "config").read_text() == committed
    assert "mlrig-dvc" in (fresh / ".dvc" / "config.local").read_text()


def test_a_stage_container_gets_the_remote_through_its_environment(with_remotes: Path) -> None:
    bucket = resolve_remote(settings(with_remotes, "bucket"))
    environment = bucket.stage_environment()
    assert environment == {
        "MLRIG_DVC_REMOTE_URL": "s3://mlrig-dvc/project",
        "AWS_ENDPOINT_URL": ENDPOINT,
    }
    in_container = stage_remote(Settings(project_dir=with_remotes, **environment))
    assert (in_container.url, in_container.endpoint) == (bucket.url, bucket.endpoint)


def test_a_stage_workspace_gets_its_remote_in_one_write(project: Path) -> None:
    dvc(project, "remote", "add", "--local", "mlrig", "s3://old-bucket")
    committed = (project / ".dvc" / "config").read_text()
    remote = DvcRemote(name="mlrig", url="s3://mlrig-dvc/project", endpoint=ENDPOINT)

    write_workspace_config(project, remote, no_scm=True)

    listed = dvc(project, "remote", "list").split()
    assert listed == ["mlrig", "s3://mlrig-dvc/project", "(default)"]
    assert dvc(project, "config", "remote.mlrig.endpointurl").strip() == ENDPOINT
    assert dvc(project, "config", "core.analytics").strip() == "False"
    assert dvc(project, "config", "core.no_scm").strip() == "True"
    assert (project / ".dvc" / "config").read_text() == committed  # the shared file is untouched
