"""The DVC remote, resolved once: which one (MLRIG_DVC_REMOTE, else DVC's default), its URL, its
S3 endpoint, and whether stages in containers and pods can share data through it (S3 only).

`mlrig doctor`, a run that pushes, the containers executor and the ClearML submission resolve
the project's remote here; a stage container or pod is given it in its environment
(`DvcRemote.stage_environment`) and reads it back with `stage_remote`. A remote that is missing
or cannot serve gets one message, whoever asked (`RemoteError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlrig.dvc.repo import open_repo
from mlrig.errors import ConfigError
from mlrig.settings import Settings

S3_SCHEME = "s3://"
#: how to get a remote that every executor can use
S3_FIX = (
    "run with --stack local (mlrig stack up adds the S3 remote 'stack'), or set "
    "MLRIG_DVC_REMOTE to an S3 remote of .dvc/config (dvc remote add <name> "
    "s3://<bucket>/<prefix>)"
)


class RemoteError(ConfigError):
    """The DVC remote is not set, not configured, or cannot serve the executor that needs it.

    Attributes:
        problem: what is wrong, naming the remote.
        fix: what to do.
    """

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}. Fix: {fix}.")
        self.problem, self.fix = problem, fix


@dataclass(frozen=True)
class DvcRemote:
    """One DVC remote as its config names it."""

    name: str
    url: str
    endpoint: str | None = None  # endpointurl: the S3 server, when not AWS
    options: dict[str, Any] = field(default_factory=dict)  # the rest of its config (region...)

    @property
    def is_s3(self) -> bool:
        return is_s3_url(self.url)

    @property
    def is_folder(self) -> bool:
        """A folder of this machine (DVC takes a URL without a scheme as a path)."""
        return "://" not in self.url

    def folder(self, root: Path) -> Path:
        """The folder of a folder remote (a relative one is relative to .dvc/, as DVC reads it)."""
        path = Path(self.url)
        return path if path.is_absolute() else root / ".dvc" / path

    def describe(self) -> str:
        where = f"the folder {self.url} on this machine" if self.is_folder else self.url
        return f"DVC remote {self.name!r} ({where})"

    def stage_environment(self) -> dict[str, str]:
        """What a stage container or pod is given to reach this remote (see `stage_remote`)."""
        endpoint = {"AWS_ENDPOINT_URL": self.endpoint} if self.endpoint else {}
        return {"MLRIG_DVC_REMOTE_URL": self.url, **endpoint}


def is_s3_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(S3_SCHEME)


def resolve_remote(settings: Settings) -> DvcRemote:
    """The remote MLRIG_DVC_REMOTE names, else DVC's default remote (core.remote).

    Raises:
        RemoteError: no remote is set, or the one named is not in the project's DVC config.
    """
    with open_repo(settings.root) as repo:
        config = repo.config.read()  # as set in the config files: no schema defaults added
    remotes = {name: dict(options) for name, options in config.get("remote", {}).items()}
    default = config.get("core", {}).get("remote")
    name = settings.dvc_remote or default
    if not name:
        raise RemoteError(
            "No DVC remote is set: MLRIG_DVC_REMOTE is unset and DVC has no default remote",
            f"{S3_FIX}; a run on this machine alone can use a folder: dvc remote add -d "
            "<name> <folder>",
        )
    if name not in remotes:
        named_by = "MLRIG_DVC_REMOTE" if settings.dvc_remote else "DVC's default, core.remote"
        known = ", ".join(sorted(remotes)) or "none"
        raise RemoteError(
            f"DVC remote {name!r} (named by {named_by}) is not in this project's DVC config "
            f"(its remotes: {known})",
            f"name one of those, or add it (dvc remote add {name} <url>), or {S3_FIX}",
        )
    options = remotes[name]
    url = str(options.pop("url"))
    endpoint = options.pop("endpointurl", None)
    return DvcRemote(name=name, url=url, endpoint=endpoint, options=options)


def shared_remote(settings: Settings) -> DvcRemote:
    """The remote, which stages in containers or pods share data through: it must be on S3.

    Raises:
        RemoteError: no remote, an unknown one, or one that is not on S3 (a folder here, say).
    """
    remote = resolve_remote(settings)
    if not remote.is_s3:
        raise RemoteError(
            f"{remote.describe()} is not on S3, and stages in containers or pods (the "
            "containers and ClearML executors) share their data through an S3 DVC remote "
            "(for ClearML, the one the chart's step pods use: agent.stepPod.dvcRemoteUrl)",
            S3_FIX,
        )
    return remote


#: the name a stage container or pod gives its remote in its workspace's .dvc/config.local
STAGE_REMOTE_NAME = "mlrig"


def stage_remote(settings: Settings) -> DvcRemote:
    """The remote a stage container or pod was given (MLRIG_DVC_REMOTE_URL, AWS_ENDPOINT_URL)."""
    return DvcRemote(
        name=STAGE_REMOTE_NAME,
        url=settings.dvc_remote_url or "",
        endpoint=settings.s3_endpoint_url,
    )


def local_config_commands(remote: DvcRemote, *, default: bool) -> list[list[str]]:
    """The dvc commands that set `remote` in .dvc/config.local (never the committed config).

    Args:
        default: make it the project's default remote too.
    """
    add = ["remote", "add", "--local", "--force", *(["--default"] if default else [])]
    options = {"endpointurl": remote.endpoint, **remote.options}
    return [
        [*add, remote.name, remote.url],
        *(
            ["remote", "modify", "--local", remote.name, option, str(value)]
            for option, value in options.items()
            if value is not None
        ),
    ]


def write_workspace_config(root: Path, remote: DvcRemote, *, no_scm: bool) -> None:
    """Make `remote` the default remote of the stage workspace at `root`, in its
    .dvc/config.local, in one write through DVC's own Config: the settings
    `local_config_commands` gives, without a dvc command each (each builds DVC's whole argument
    parser: 0.2-0.7 s of a stage on a busy machine). DVC's analytics are turned off there too:
    each dvc command would start a process to send them.

    Args:
        no_scm: the workspace is a copy of the project's files, not a git clone.

    Raises:
        dvc.config.ConfigError: DVC refuses the values (its schema checks them).
    """
    from dvc.config import Config

    options = {"endpointurl": remote.endpoint, **remote.options}
    with Config(dvc_dir=str(root / ".dvc")).edit("local") as config:
        core = config["core"]
        core["remote"] = remote.name
        core["analytics"] = False
        if no_scm:
            core["no_scm"] = True
        config["remote"][remote.name] = {
            "url": remote.url,
            **{option: str(value) for option, value in options.items() if value is not None},
        }
