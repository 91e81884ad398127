"""The three services of the local stack: PostgreSQL, S3 (SeaweedFS), the MLflow server."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

from mlrig.stacks.local.config import (
    DVC_BUCKET,
    MLFLOW_ADMIN,
    MLFLOW_BUCKET,
    REGION,
    StackPaths,
    StackSecrets,
    StackState,
    write_private,
)
from mlrig.stacks.local.processes import (
    StackError,
    port_open,
    running_pid,
    start_detached,
    wait_until,
)
from mlrig.stacks.local.seaweedfs import identities_config, identity, mini_command

POSTGRES_USER = "postgres"  # the unprivileged account that runs the server when we are root
START_TIMEOUT = 180.0  # a loaded 2-core machine starts the MLflow server slowly


# --- PostgreSQL ---------------------------------------------------------------------------------


def postgres_bin(tool: str) -> str:
    """Path of a PostgreSQL server binary (Debian keeps them out of PATH).

    Raises:
        StackError: PostgreSQL's server is not installed.
    """
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"), key=lambda p: p.parts[-3]
    )
    found = shutil.which(tool) or (str(candidates[-1]) if candidates else None)
    if not found:
        raise StackError(
            f"PostgreSQL's {tool} was not found. Install the server: apt-get install postgresql "
            "(mlrig runs its own cluster in .mlrig/stack, not the system one)."
        )
    return found


def as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the `postgres` account then."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", POSTGRES_USER, "--", *command]


def require_reachable_by_server_user(folder: Path) -> None:
    """The `postgres` account must be able to enter every folder above its data.

    Raises:
        StackError: naming the first folder that blocks it and the fix.
    """
    if os.geteuid() != 0:
        return
    for parent in reversed(folder.resolve().parents):
        reachable = subprocess.run(
            ["runuser", "-u", POSTGRES_USER, "--", "test", "-x", str(parent)], check=False
        )
        if reachable.returncode != 0:
            raise StackError(
                f"PostgreSQL runs as the `{POSTGRES_USER}` account (it refuses root), which "
                f"cannot enter {parent}. Allow it with `chmod o+x {parent}` (or an ACL: "
                f"setfacl -m u:{POSTGRES_USER}:x {parent}), or keep the project elsewhere."
            )


def give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        account = pwd.getpwnam(POSTGRES_USER)
        for folder in (path, *path.rglob("*")):
            os.chown(folder, account.pw_uid, account.pw_gid)


def init_postgres(paths: StackPaths, stack_secrets: StackSecrets) -> None:
    """Create the cluster (once) with a password-protected superuser."""
    if (paths.postgres_data / "PG_VERSION").is_file():
        return
    require_reachable_by_server_user(paths.root)
    paths.postgres_data.mkdir(parents=True, exist_ok=True)
    paths.postgres_sockets.mkdir(parents=True, exist_ok=True)
    password_file = paths.postgres_data.parent / "initdb.pw"  # handed to the server user below
    write_private(password_file, stack_secrets.postgres_superuser_password + "\n")
    give_to_server_user(paths.postgres_data.parent)
    try:
        subprocess.run(
            as_server_user(
                [
                    postgres_bin("initdb"),
                    "-D",
                    str(paths.postgres_data),
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    f"--pwfile={password_file}",
                    "--encoding=UTF8",
                ]
            ),
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as error:
        raise StackError(f"initdb failed: {error.stderr.strip()}") from None
    finally:
        password_file.unlink(missing_ok=True)


def start_postgres(paths: StackPaths, state: StackState) -> None:
    if port_open(state.postgres_port):
        return
    options = f"-p {state.postgres_port} -k {paths.postgres_sockets} -c listen_addresses=127.0.0.1"
    log_file = paths.log_file("postgres")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.touch()
    give_to_server_user(log_file.parent)
    result = subprocess.run(
        as_server_user(
            [
                postgres_bin("pg_ctl"),
                "-D",
                str(paths.postgres_data),
                "-l",
                str(log_file),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StackError(f"PostgreSQL did not start: {result.stderr.strip()}. Its log: {log_file}")


def stop_postgres(paths: StackPaths) -> bool:
    if not (paths.postgres_data / "postmaster.pid").is_file():
        return False
    subprocess.run(
        as_server_user(
            [postgres_bin("pg_ctl"), "-D", str(paths.postgres_data), "-m", "fast", "-w", "stop"]
        ),
        capture_output=True,
        text=True,
    )
    return True


def ensure_mlflow_database(state: StackState, stack_secrets: StackSecrets) -> None:
    """Create the `mlflow` role and database, owned by that role, if missing."""
    import psycopg2
    from psycopg2 import sql

    try:
        connection = psycopg2.connect(
            host="127.0.0.1",
            port=state.postgres_port,
            user="postgres",
            password=stack_secrets.postgres_superuser_password,
            dbname="postgres",
        )
    except psycopg2.Error as error:
        raise StackError(
            f"Cannot log in to the stack's PostgreSQL on port {state.postgres_port}: "
            f"{str(error).strip()}. If .mlrig/stack/secrets.json was lost, remove "
            ".mlrig/stack/postgres to start the database afresh."
        ) from None
    connection.autocommit = True  # CREATE DATABASE refuses to run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = 'mlflow'")
            if cursor.fetchone() is None:
                cursor.execute(
                    sql.SQL("CREATE ROLE mlflow LOGIN PASSWORD {}").format(
                        sql.Literal(stack_secrets.mlflow_db_password)
                    )
                )
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = 'mlflow'")
            if cursor.fetchone() is None:
                cursor.execute("CREATE DATABASE mlflow OWNER mlflow")
    finally:
        connection.close()


def postgres_healthy(state: StackState, stack_secrets: StackSecrets) -> bool:
    import psycopg2

    try:
        psycopg2.connect(
            host="127.0.0.1",
            port=state.postgres_port,
            user="mlflow",
            dbname="mlflow",
            password=stack_secrets.mlflow_db_password,
            connect_timeout=3,
        ).close()
    except psycopg2.Error:
        return False
    return True


# --- S3 -----------------------------------------------------------------------------------------


def s3_identities(stack_secrets: StackSecrets) -> list[dict]:
    """Least privilege: the clients reach the DVC bucket, the MLflow server its artifacts."""
    return [
        identity("mlrig", stack_secrets.s3_access_key, stack_secrets.s3_secret_key, [DVC_BUCKET]),
        identity(
            "mlflow-server",
            stack_secrets.s3_mlflow_access_key,
            stack_secrets.s3_mlflow_secret_key,
            [MLFLOW_BUCKET],
        ),
    ]


def start_s3(paths: StackPaths, state: StackState, stack_secrets: StackSecrets) -> None:
    """Start SeaweedFS (data in .mlrig/stack/s3) with both buckets and both identities.

    The identities are written on every start, so the file always matches secrets.json.
    """
    if running_pid(paths.pid_file("s3")) and s3_healthy(state, stack_secrets):
        return
    assert state.seaweedfs is not None  # load_or_create_state fills it
    paths.s3_data.mkdir(parents=True, exist_ok=True)
    write_private(paths.s3_identities, identities_config(s3_identities(stack_secrets)))
    command = mini_command(
        paths.s3_data, state.seaweedfs, paths.s3_identities, [DVC_BUCKET, MLFLOW_BUCKET]
    )
    # weed reads AWS_* as an admin identity of its own: none from the user's shell
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    log_file = paths.log_file("s3")
    pid = start_detached(
        command, env=env, log_file=log_file, pid_file=paths.pid_file("s3"), cwd=paths.root
    )
    wait_until(
        lambda: s3_healthy(state, stack_secrets), START_TIMEOUT, "S3 (SeaweedFS)", log_file, pid
    )


def s3_client(state: StackState, access_key: str, secret_key: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=state.s3_endpoint,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2}),
    )


def s3_healthy(state: StackState, stack_secrets: StackSecrets) -> bool:
    """Each identity reaches its bucket."""
    from botocore.exceptions import BotoCoreError, ClientError

    reaches = {
        DVC_BUCKET: (stack_secrets.s3_access_key, stack_secrets.s3_secret_key),
        MLFLOW_BUCKET: (stack_secrets.s3_mlflow_access_key, stack_secrets.s3_mlflow_secret_key),
    }
    try:
        for bucket, keys in reaches.items():
            s3_client(state, *keys).head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError):
        return False
    return True


# --- MLflow -------------------------------------------------------------------------------------


def write_auth_config(paths: StackPaths, stack_secrets: StackSecrets) -> None:
    """MLflow's basic-auth app config: the admin user and where users are stored."""
    write_private(
        paths.auth_config,
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{paths.mlflow_dir / 'basic_auth.db'}\n"
        f"admin_username = {MLFLOW_ADMIN}\n"
        f"admin_password = {stack_secrets.mlflow_admin_password}\n",
    )


def mlflow_server_environment(
    state: StackState, stack_secrets: StackSecrets, paths: StackPaths
) -> dict[str, str]:
    """The server's environment: secrets go here, never on its command line (visible in ps)."""
    return dict(os.environ) | {
        "PGPASSWORD": stack_secrets.mlflow_db_password,
        "AWS_ACCESS_KEY_ID": stack_secrets.s3_mlflow_access_key,
        "AWS_SECRET_ACCESS_KEY": stack_secrets.s3_mlflow_secret_key,
        "AWS_DEFAULT_REGION": REGION,
        "MLFLOW_S3_ENDPOINT_URL": state.s3_endpoint,
        "MLFLOW_AUTH_CONFIG_PATH": str(paths.auth_config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": stack_secrets.mlflow_flask_secret_key,
        # MLflow 3's job runner and its huey consumers (GenAI scorers) cost a core's fifth each
        # even when idle; nothing mlrig logs uses them
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def start_mlflow(paths: StackPaths, state: StackState, stack_secrets: StackSecrets) -> None:
    if running_pid(paths.pid_file("mlflow")) and mlflow_healthy(state):
        return
    paths.mlflow_dir.mkdir(parents=True, exist_ok=True)
    write_auth_config(paths, stack_secrets)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"postgresql+psycopg2://mlflow@127.0.0.1:{state.postgres_port}/mlflow",
        "--artifacts-destination",
        f"s3://{MLFLOW_BUCKET}/artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(state.mlflow_port),
        "--app-name",
        "basic-auth",
        "--workers",
        "2",
        # uvicorn kills a worker that does not answer its supervisor's ping in 5 s: on a busy
        # machine a worker still importing MLflow misses it, and the kill of a process that is
        # reading its libraries from disk can take minutes, during which `stack up` waits
        "--uvicorn-opts",
        "--timeout-worker-healthcheck 60",
    ]
    log_file = paths.log_file("mlflow")
    pid = start_detached(
        command,
        env=mlflow_server_environment(state, stack_secrets, paths),
        log_file=log_file,
        pid_file=paths.pid_file("mlflow"),
        cwd=paths.root,
    )
    wait_until(lambda: mlflow_healthy(state), START_TIMEOUT, "The MLflow server", log_file, pid)


def mlflow_healthy(state: StackState) -> bool:
    import requests

    try:
        return requests.get(f"{state.mlflow_uri}/health", timeout=3).status_code == 200
    except requests.RequestException:
        return False
