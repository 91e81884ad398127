"""What the pods of a ClearML pipeline share on the DVC remote, beside DVC's own data.

A step's pod starts with an empty workspace and no dvc.lock of the stages before it. So the
submitter uploads the project's files, as an archive named by its digest
(`<remote>/mlrig/workspaces/<sha256>.tar.gz`), and each step it submits
(`<remote>/mlrig/steps/<input key>.json`: the workspace, the parents' input keys, the commit).
Every pod that runs a stage writes the stage's dvc.lock entry as a record under its input key
(`<remote>/mlrig/stages/<input key>.yaml`); the next pod merges its parents' records into its
dvc.lock, and `dvc pull` finds their outputs. A record outlives its pipeline: a later
submission finds every stage whose result the remote already holds, and does not submit it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError

#: what a ClearML pipeline step's pod is told in its environment (the task's container
#: arguments `-e NAME=value`, which the k8s glue makes the pod's environment)
STAGE_VARIABLE = "MLRIG_STAGE"
INPUT_KEY_VARIABLE = "MLRIG_INPUT_KEY"


class StepTask(BaseModel):
    """A ClearML pipeline step: its stage, the workspace it runs in, the stages before it.

    The submitter stores it on the DVC remote under the stage's input key
    (`mlrig.executors.clearml.store`); the task names only the stage and that key, so ClearML's
    cache key of the step changes with its inputs and nothing else.
    """

    model_config = ConfigDict(frozen=True)

    stage: str
    input_key: str
    workspace: str = Field(description="the digest of the workspace archive on the remote")
    parents: dict[str, str] = Field(description="each parent stage with its input key")
    git_commit: str

    def container_environment(self) -> dict[str, str]:
        return {STAGE_VARIABLE: self.stage, INPUT_KEY_VARIABLE: self.input_key}


WORKSPACES = "mlrig/workspaces"
STEPS = "mlrig/steps"
STAGES = "mlrig/stages"


def workspace_archive(root: Path, files: list[str]) -> bytes:
    """The files as a gzip'd tar whose bytes depend only on their names, modes and contents."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(files):
            path = root / name
            info = tarfile.TarInfo(name)  # no owner, no mtime
            info.size = path.stat().st_size
            info.mode = 0o755 if path.stat().st_mode & 0o100 else 0o644
            with path.open("rb") as content:
                archive.addfile(info, content)
    # tarfile's "w:gz" writes the time into the gzip header; mtime=0 keeps equal files equal
    return gzip.compress(raw.getvalue(), mtime=0)


@dataclass(frozen=True)
class StepStore:
    """The `mlrig/` folder beside the DVC data of an S3 remote (`s3://bucket/prefix`)."""

    url: str
    endpoint: str | None

    @classmethod
    def of_remote(cls, url: str | None, endpoint: str | None) -> StepStore:
        """The store of a DVC remote, which must be on S3 (pods share no folder).

        Raises:
            ConfigError: no remote, or one that is not on S3.
        """
        if not url or not url.startswith("s3://"):
            raise ConfigError(
                f"A ClearML pipeline's pods share their data through an S3 DVC remote, and the "
                f"remote is {url or 'not set'}. Set MLRIG_DVC_REMOTE (or the default remote) "
                "to the S3 remote the chart's step pods use (agent.stepPod.dvcRemoteUrl)."
            )
        return cls(url=url.rstrip("/"), endpoint=endpoint)

    @property
    def bucket(self) -> str:
        return self.url.removeprefix("s3://").split("/", 1)[0]

    def key(self, *parts: str) -> str:
        prefix = self.url.removeprefix("s3://").partition("/")[2]
        return "/".join(part for part in (prefix, *parts) if part)

    @cached_property
    def client(self) -> Any:  # one per store: a pod reads a record per parent
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=5, read_timeout=60, retries={"mode": "standard"})
        # a session of its own reads the credentials now: boto3's default session keeps the
        # first ones it read in this process, and signed later requests with stale keys (403)
        session = boto3.session.Session()
        return session.client("s3", endpoint_url=self.endpoint, config=config)

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}" + (f" at {self.endpoint}" if self.endpoint else "")

    @contextmanager
    def reaching(self, action: str, key: str) -> Iterator[None]:
        """Turn an S3 failure into an error naming the object and the settings to check."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as error:
            raise MlrigError(
                f"Could not {action} {self.where(key)}: {error}. Check the S3 endpoint "
                "(AWS_ENDPOINT_URL) and credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).",
                exit_code=EXIT_FAILED,
            ) from None

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        client = self.client
        with self.reaching("read", key):
            try:
                return bytes(client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            except client.exceptions.NoSuchKey:
                return None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        with self.reaching("read", key):
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") not in {"404", "NotFound"}:
                    raise
                return False
            return True

    def put(self, key: str, body: bytes) -> None:
        with self.reaching("write", key):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def upload_workspace(self, archive: bytes) -> str:
        """Store a workspace archive (once per content); its digest."""
        digest = hashlib.sha256(archive).hexdigest()
        key = self.key(WORKSPACES, f"{digest}.tar.gz")
        if not self.exists(key):
            self.put(key, archive)
        return digest

    def download_workspace(self, digest: str, destination: Path) -> None:
        """Unpack the workspace archive `digest` into `destination`.

        Raises:
            MlrigError: no such archive, or one whose content does not match its name.
        """
        key = self.key(WORKSPACES, f"{digest}.tar.gz")
        archive = self.get(key)
        if archive is None or hashlib.sha256(archive).hexdigest() != digest:
            raise MlrigError(
                f"The step's workspace {self.where(key)} is "
                + ("missing" if archive is None else "corrupt (its digest differs)")
                + ": submit the pipeline again (mlrig run --executor clearml uploads it).",
                exit_code=EXIT_FAILED,
            )
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as unpacked:
            # extractall's filter= needs Python 3.11.4 (the images' Debian has 3.11.2): the
            # members are checked here instead, plain files and folders inside the workspace
            unsafe = [
                member.name
                for member in unpacked.getmembers()
                if not (member.isfile() or member.isdir())
                or member.name.startswith("/")
                or ".." in Path(member.name).parts
            ]
            if unsafe:
                raise MlrigError(
                    f"The step's workspace {self.where(key)} holds entries outside a workspace "
                    f"({', '.join(unsafe[:3])}): submit the pipeline again.",
                    exit_code=EXIT_FAILED,
                )
            unpacked.extractall(destination)

    def put_step_task(self, step: StepTask) -> None:
        self.put(self.key(STEPS, f"{step.input_key}.json"), step.model_dump_json().encode())

    def get_step_task(self, input_key: str, stage: str) -> StepTask:
        """The step the submitter stored for this input key.

        Raises:
            MlrigError: there is none, or it is of another stage.
        """
        key = self.key(STEPS, f"{input_key}.json")
        body = self.get(key)
        step = StepTask.model_validate_json(body) if body else None
        if step is None or step.stage != stage:
            raise MlrigError(
                f"No step {stage!r} was submitted with input key {input_key[:12]} "
                f"({self.where(key)}): is the pod's DVC remote (MLRIG_DVC_REMOTE_URL) the one "
                "the pipeline was submitted with? Submit again: mlrig run --executor clearml.",
                exit_code=EXIT_FAILED,
            )
        return step

    def record_key(self, input_key: str) -> str:
        return self.key(STAGES, f"{input_key}.yaml")

    def put_record(self, input_key: str, stage: str, entry: dict[str, Any]) -> None:
        """Keep a stage's dvc.lock entry under its input key."""
        text = yaml.safe_dump({"stage": stage, "lock": entry}, sort_keys=False)
        self.put(self.record_key(input_key), text.encode())

    def get_record(self, input_key: str, stage: str) -> dict[str, Any]:
        """The dvc.lock entry the pod that ran `stage` with this input key wrote.

        Raises:
            MlrigError: there is none (its step did not finish), or it is of another stage.
        """
        key = self.record_key(input_key)
        body = self.get(key)
        record = yaml.safe_load(body) if body else None
        if not isinstance(record, dict) or record.get("stage") != stage:
            raise MlrigError(
                f"Stage {stage!r} has no result record at {self.where(key)}: its step did not "
                "finish. See that step in the ClearML UI; submitting again re-runs it.",
                exit_code=EXIT_FAILED,
            )
        return dict(record["lock"])

    def has_record(self, input_key: str) -> bool:
        return self.exists(self.record_key(input_key))
