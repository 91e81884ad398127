"""`mlrig doctor`: one line per check of the toolchain and every configured service, with a fix."""

from __future__ import annotations

import os
import platform
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata

from pydantic import BaseModel, field_validator

from mlrig.dvc.remote import DvcRemote, RemoteError, resolve_remote
from mlrig.errors import redact
from mlrig.settings import Settings

PROBE_EXPERIMENT = "mlrig-doctor"
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


class Check(BaseModel):
    """One check: passed or not, what was found, and how to fix a failure."""

    name: str
    passed: bool
    required: bool = True
    detail: str
    fix: str = ""

    @field_validator("detail", "fix")
    @classmethod
    def without_passwords(cls, text: str) -> str:
        """What a check shows may name a URL with its password (MLFLOW_TRACKING_URI)."""
        return redact(text)


class CheckFailed(Exception):
    """A check found a problem; carries what was found and the fix."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail, self.fix = detail, fix


def run_check(name: str, probe: Callable[[], str], *, required: bool = True) -> Check:
    try:
        return Check(name=name, passed=True, required=required, detail=probe())
    except CheckFailed as failure:
        return Check(
            name=name, passed=False, required=required, detail=failure.detail, fix=failure.fix
        )


def toolchain() -> str:
    versions = {
        name: metadata.version(name) for name in ("dvc", "mlflow", "clearml", "scikit-learn")
    }
    shown = ", ".join(f"{name} {version}" for name, version in versions.items())
    return f"Python {platform.python_version()}, {shown}"


def git_available() -> str:
    if not shutil.which("git"):
        raise CheckFailed("git is not on PATH", "install git; lineage tags need the commit")
    return "git on PATH"


# --- DVC remote ---------------------------------------------------------------------------------


def check_dvc_remote(settings: Settings) -> str:
    """Reachable, bucket exists, credentials valid, writable: by writing and deleting a probe."""
    try:
        remote = resolve_remote(settings)
    except RemoteError as error:
        raise CheckFailed(error.problem, error.fix) from None
    if remote.is_s3:
        return check_s3_remote(remote)
    if not remote.is_folder:  # DVC reaches it (http, ssh, ...) with its own settings
        return f"{remote.describe()}: not probed (doctor probes S3 remotes and folders)"
    folder = remote.folder(settings.root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".mlrig-doctor-{uuid.uuid4().hex}"
        probe.write_text("probe")
        probe.unlink()
    except OSError as error:
        raise CheckFailed(
            f"remote {remote.name!r} folder {folder} is not writable: {error.strerror}",
            "fix the folder's permissions or point the remote elsewhere",
        ) from None
    return f"remote {remote.name!r}: folder {folder.resolve()} writable"


def check_s3_remote(remote: DvcRemote) -> str:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    bucket, _, prefix = remote.url.removeprefix("s3://").partition("/")
    endpoint = remote.endpoint or os.environ.get("AWS_ENDPOINT_URL")
    where = f"remote {remote.name!r} ({remote.url} at {endpoint or 'AWS'})"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=remote.options.get("region"),
        config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 1}),
    )
    key = f"{prefix.strip('/')}/.mlrig-doctor-{uuid.uuid4().hex}".lstrip("/")
    try:
        client.head_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key=key, Body=b"probe")
        client.delete_object(Bucket=bucket, Key=key)
    except EndpointConnectionError:
        raise CheckFailed(
            f"{where}: endpoint unreachable",
            "start the S3 endpoint (mlrig stack up) or fix the remote's endpointurl",
        ) from None
    except NoCredentialsError:
        raise CheckFailed(
            f"{where}: no credentials", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ) from None
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in {"404", "NoSuchBucket"}:
            raise CheckFailed(
                f"{where}: bucket {bucket!r} does not exist",
                f"create it (aws s3 mb s3://{bucket}) or fix the remote url",
            ) from None
        if code in {"403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}:
            raise CheckFailed(
                f"{where}: credentials refused ({code})",
                "fix AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
            ) from None
        raise CheckFailed(f"{where}: {code or error}", "check the remote's settings") from None
    return f"{where}: bucket exists, credentials valid, writable"


# --- MLflow -------------------------------------------------------------------------------------


@contextmanager
def quick_http() -> Iterator[None]:
    """MLflow's client retries a dead server for minutes; a check wants an answer in seconds."""
    saved = {key: os.environ.get(key) for key in QUICK_HTTP}
    os.environ.update(QUICK_HTTP)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_mlflow(settings: Settings) -> str:
    """Reachable, auth ok, can create an experiment, artifact store writable."""
    with quick_http():
        return _check_mlflow(settings)


def _check_mlflow(settings: Settings) -> str:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = settings.tracking_uri
    if settings.uses_local_mlflow:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(uri)
    try:
        experiment = client.get_experiment_by_name(PROBE_EXPERIMENT)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment(
                PROBE_EXPERIMENT,
                artifact_location=(settings.state_dir / "mlartifacts").as_uri()
                if settings.uses_local_mlflow
                else None,
            )
        )
    except MlflowException as error:
        text = str(error)
        if "401" in text or "Unauthorized" in text or "credentials" in text.lower():
            raise CheckFailed(
                f"MLflow at {uri} refused the credentials",
                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
            ) from None
        if "403" in text or "Permission" in text:
            raise CheckFailed(
                f"MLflow at {uri}: this user may not create experiments",
                "grant the user EDIT on experiments, or use an admin",
            ) from None
        raise CheckFailed(
            f"MLflow at {uri} is unreachable or failing: {text.splitlines()[0]}",
            "start the server (mlrig stack up) or fix MLFLOW_TRACKING_URI",
        ) from None
    run = client.create_run(experiment_id, run_name="doctor probe")
    try:
        mlflow.set_tracking_uri(uri)
        probe = settings.state_dir / "doctor-probe.txt"
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("probe")
        client.log_artifact(run.info.run_id, str(probe))
        probe.unlink()
    except Exception as error:  # the artifact store behind the server fails in many ways
        raise CheckFailed(
            f"MLflow at {uri}: the artifact store is not writable: {error}",
            "check the server's --artifacts-destination and its S3 credentials",
        ) from None
    finally:
        client.delete_run(run.info.run_id)
    return f"MLflow at {uri}: reachable, auth ok, experiment created, artifacts writable"


# --- ClearML ------------------------------------------------------------------------------------


def check_clearml(settings: Settings) -> str:
    from mlrig.errors import ConfigError
    from mlrig.tracking.clearml_server import DOCTOR, check_server, require_server

    if settings.clearml_is_offline:
        return f"offline mode: sessions go to {settings.clearml_sessions_dir}"
    try:
        require_server(settings, DOCTOR)
        check_server(settings)
    except ConfigError as error:
        raise CheckFailed(
            str(error), "fix the CLEARML_API_* settings or unset CLEARML_API_HOST"
        ) from None
    return f"server {settings.clearml_api_host}: reachable, credentials accepted"


def require_services(settings: Settings, *, mlflow: bool, dvc_remote: bool) -> None:
    """Before a pipeline run: the MLflow store and the DVC remote answer, or a clear error.

    `mlflow=False` when the run will not talk to the store (a SQLite store it checked before).

    Raises:
        ConfigError: naming the setting at fault and the fix.
    """
    from mlrig.errors import ConfigError
    from mlrig.tracking.step_run import setup_mlflow

    if mlflow:
        with quick_http():
            try:
                setup_mlflow(settings)
            except ConfigError:
                raise
            except Exception as error:  # connection errors surface as many types
                raise ConfigError(
                    f"Cannot reach MLflow at {settings.tracking_uri} (MLFLOW_TRACKING_URI): "
                    f"{str(error).splitlines()[0]}. Start the server or fix the setting."
                ) from None
    if dvc_remote:
        try:
            check_dvc_remote(settings)
        except CheckFailed as failure:
            raise ConfigError(f"{failure.detail}. Fix: {failure.fix}.") from None


def check_data(settings: Settings) -> str:
    """Hash every file of the outputs in dvc.lock again, in the DVC cache and the workspace."""
    from dvc.exceptions import DvcException

    from mlrig.dvc.integrity import scan

    try:
        corrupted, files = scan(settings.root)
    except DvcException as error:
        raise CheckFailed(
            f"DVC cannot open {settings.root}: {error}", "work in a clone of the project"
        ) from None
    if corrupted:
        raise CheckFailed(
            "; ".join(entry.describe() for entry in corrupted),
            "mlrig run puts each right: it rewrites the cache from an intact copy, restores "
            "from the DVC remote, or runs the stage again (a bad cache file is read-only and "
            "DVC never replaces it by itself)",
        )
    return f"{files} output files match dvc.lock (DVC cache and workspace hashed again)"


def run_doctor(settings: Settings) -> list[Check]:
    """Every check, in order; none raises."""
    return [
        run_check("toolchain", toolchain),
        run_check("git", git_available, required=False),
        run_check("data", lambda: check_data(settings)),
        run_check("DVC remote", lambda: check_dvc_remote(settings)),
        run_check("MLflow", lambda: check_mlflow(settings)),
        run_check("ClearML", lambda: check_clearml(settings)),
    ]
