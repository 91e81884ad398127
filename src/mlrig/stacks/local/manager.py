"""`mlrig stack up|down|status|env`: the local stack as one unit."""

from __future__ import annotations

import shlex
from collections.abc import Callable

from pydantic import BaseModel

from mlrig.dvc.commands import query_dvc
from mlrig.dvc.remote import DvcRemote, local_config_commands
from mlrig.settings import Settings
from mlrig.stacks.local.config import (
    DVC_BUCKET,
    DVC_REMOTE_NAME,
    REGION,
    StackPaths,
    StackSecrets,
    StackState,
    client_environment,
    load_model,
    save_secrets,
    write_client_env,
)
from mlrig.stacks.local.processes import StackError, free_ports, running_pid, stop_process
from mlrig.stacks.local.seaweedfs import SeaweedPorts
from mlrig.stacks.local.services import (
    ensure_mlflow_database,
    init_postgres,
    mlflow_healthy,
    postgres_healthy,
    s3_healthy,
    start_mlflow,
    start_postgres,
    start_s3,
    stop_postgres,
)

# bounded retries so an S3 outage fails a push in about a minute rather than hanging
DVC_REMOTE_TIMEOUTS = {"connect_timeout": "5", "read_timeout": "30"}


class ServiceStatus(BaseModel):
    name: str
    url: str
    pid: int | None
    healthy: bool


def load_or_create_state(paths: StackPaths) -> StackState:
    """The ports of the stack's first start, completed with SeaweedFS's where they are missing."""
    state = load_model(paths.state_file, StackState)
    if state is None:
        postgres_port, s3_port, mlflow_port = free_ports(3)
        state = StackState(postgres_port=postgres_port, s3_port=s3_port, mlflow_port=mlflow_port)
    if state.seaweedfs is None:
        state = state.model_copy(update={"seaweedfs": SeaweedPorts.pick(s3=state.s3_port)})
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.state_file.write_text(state.model_dump_json(indent=2) + "\n")
    return state


def configure_dvc_remote(settings: Settings, state: StackState) -> None:
    """Point the `stack` DVC remote at the bucket (in .dvc/config.local, not committed)."""
    remote = DvcRemote(
        name=DVC_REMOTE_NAME,
        url=f"s3://{DVC_BUCKET}",
        endpoint=state.s3_endpoint,
        options={"region": REGION, **DVC_REMOTE_TIMEOUTS},
    )
    for command in local_config_commands(remote, default=False):
        query_dvc(command, settings.root).check_returncode()


def stack_up(settings: Settings, on_step: Callable[[str], None] = lambda step: None) -> StackState:
    """Start (or resume) PostgreSQL, S3 and the MLflow server; write the client env file."""
    paths = StackPaths(settings)
    state = load_or_create_state(paths)
    stack_secrets = load_model(paths.secrets_file, StackSecrets) or StackSecrets.generate()
    save_secrets(paths, stack_secrets)
    on_step("PostgreSQL")
    init_postgres(paths, stack_secrets)
    start_postgres(paths, state)
    ensure_mlflow_database(state, stack_secrets)
    on_step("S3 (SeaweedFS)")
    start_s3(paths, state, stack_secrets)
    on_step("MLflow server")
    start_mlflow(paths, state, stack_secrets)
    write_client_env(paths, client_environment(state, stack_secrets))
    configure_dvc_remote(settings, state)
    return state


def stack_down(settings: Settings) -> list[str]:
    """Stop every service; the data stays under .mlrig/stack. Returns what was stopped."""
    paths = StackPaths(settings)
    stopped = [name for name in ("mlflow", "s3") if stop_process(paths.pid_file(name))]
    if paths.postgres_data.is_dir() and stop_postgres(paths):
        stopped.append("postgres")
    return stopped


def stack_status(settings: Settings) -> list[ServiceStatus]:
    """Each service: where it listens, its pid, and whether it answers as it should."""
    paths = StackPaths(settings)
    state = load_model(paths.state_file, StackState)
    stack_secrets = load_model(paths.secrets_file, StackSecrets)
    if state is None or stack_secrets is None:
        raise StackError("The stack was never started here. Start it: mlrig stack up")
    postgres_pid = paths.postgres_data / "postmaster.pid"
    return [
        ServiceStatus(
            name="postgres",
            url=f"postgresql://127.0.0.1:{state.postgres_port}/mlflow",
            pid=running_pid(postgres_pid),
            healthy=postgres_healthy(state, stack_secrets),
        ),
        ServiceStatus(
            name="s3 (seaweedfs)",
            url=state.s3_endpoint,
            pid=running_pid(paths.pid_file("s3")),
            healthy=s3_healthy(state, stack_secrets),
        ),
        ServiceStatus(
            name="mlflow",
            url=state.mlflow_uri,
            pid=running_pid(paths.pid_file("mlflow")),
            healthy=mlflow_healthy(state),
        ),
    ]


SECRET_VARIABLES = frozenset(
    {"MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
)


def stack_env_lines(settings: Settings) -> str:
    """`export` lines pointing a shell at the stack; the secrets are sourced, never printed."""
    paths = StackPaths(settings)
    environment = load_stack_environment(settings)
    lines = [
        f"export {key}={shlex.quote(value)}"
        for key, value in environment.items()
        if key not in SECRET_VARIABLES
    ]
    secrets = " ".join(sorted(SECRET_VARIABLES))
    lines.append(f"set -a; . {shlex.quote(str(paths.env_file))}; set +a  # also sets {secrets}")
    return "\n".join(lines)


def load_stack_environment(settings: Settings) -> dict[str, str]:
    """The stack's client settings, to run the pipeline against it (`mlrig run --stack local`)."""
    from dotenv import dotenv_values

    paths = StackPaths(settings)
    if not paths.env_file.is_file():
        raise StackError("The local stack is not set up. Start it first: mlrig stack up")
    return {key: value for key, value in dotenv_values(paths.env_file).items() if value is not None}
