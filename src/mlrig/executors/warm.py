"""Warm steps: the pipeline's step commands run in a process that has imported their libraries.

A step is its own process (`python -m steps.train ...`, what dvc.yaml calls), and almost all of
its time goes to importing pandas, scikit-learn, MLflow and ClearML: about 6 s, for a few tenths
of a second of work. During `mlrig run` a server imports them once. A step's command then hands
its module, arguments, environment, working folder and standard streams over a UNIX socket, and
the server forks a child that runs the step with them and sends its exit code back. The child is
a fresh copy of a process that has only imported modules (no threads, connections or tracking
state), so every step is as isolated as before. Without the server (in a container, or
`dvc repro` by hand) the command imports and runs the step itself.

Only the standard library is imported here: the step's command must start in milliseconds.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path

from mlrig import progress, stopping

SOCKET_VARIABLE = "MLRIG_WARM_SOCKET"
MAX_REQUEST_BYTES = 1 << 20
CLEARML_PREFIXES = ("CLEARML_", "TRAINS_")
#: what the steps import inside their functions: imported once by the server instead
PRELOAD = (
    "pandas",
    "pyarrow.parquet",
    "sklearn.datasets",
    "sklearn.dummy",
    "sklearn.ensemble",
    "sklearn.impute",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.neighbors",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "skops.io",
    "matplotlib.pyplot",
    "mlflow",
    "mlflow.sklearn",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "clearml",
    # what the steps' tracking imports on its first call
    "boto3",
    "markdown_it",
    "mlflow.tracing",
    "narwhals",
    "opentelemetry.sdk.trace",
    "PIL.Image",
    "sqlalchemy.dialects.sqlite",
    "xml.etree.ElementTree",
    "typer",
    "mlrig.experiments.params",
    "mlrig.experiments.results",
    "mlrig.experiments.tables",
    "mlrig.tracking.step_run",
)
#: what a stage in a step container imports besides its step's libraries (`serve_stages`):
#: DVC with its S3 filesystem, and the stage's own code in mlrig
STAGE_PRELOAD = (
    "dvc.cli",
    "dvc.commands.config",
    "dvc.commands.data_sync",
    "dvc.commands.remote",
    "dvc.commands.repro",
    "dvc.repo",
    "dvc.repo.reproduce",
    "dvc.stage.cache",
    "dvc_s3",
    "s3fs",
    "mlrig.dvc.outputs",
    "mlrig.entrypoints.stage",
    "mlrig.executors.workspace",
)


# --- the step's command ---------------------------------------------------------------------


def run_step(module: str) -> None:
    """Run the step module's Typer app: in the warm server when there is one, else here."""
    code = run_in_server(os.environ.get(SOCKET_VARIABLE), module)
    if code is None:
        progress.name_process(progress.stage_name(module, sys.argv))
        code = run_app(module)
        progress.write_usage(progress.own_usage())
    sys.exit(code)


def run_in_server(socket_path: str | None, module: str, *, keep_usage: bool = True) -> int | None:
    """The step's exit code from the warm server; None when no server answers (run it here).

    Args:
        keep_usage: write the usage of the server's fork where `MLRIG_STAGE_USAGE` says.
    """
    if not socket_path:
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        connection.connect(socket_path)
    except OSError:  # not started yet, or gone: the step runs in this process
        connection.close()
        return None
    request = {"module": module, "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    with connection:
        socket.send_fds(connection, [json.dumps(request).encode()], [0, 1, 2])
        reply = connection.recv(4096)
    if not reply:
        sys.stderr.write(f"error: the warm step process of {module} ended without a result\n")
        return 1
    result = json.loads(reply)  # the step's exit code, and its usage as its process counted it
    if keep_usage:
        progress.write_usage(progress.StageUsage(**result["usage"]))
    return int(result["code"])


# --- the server --------------------------------------------------------------------------------


def preload(modules: tuple[str, ...] = PRELOAD) -> dict[str, str]:
    """Import the steps' libraries (`modules`), then do once what each step's first calls
    would redo.

    - ClearML parses its configuration (HOCON, about 1 s) on its first use in a process; here it
      is read as the steps read it (`configure_clearml`, from this run's environment);
    - its logger walks the caller's stack with `inspect`, whose first call indexes the file of
      every imported module (about 0.4 s with these libraries);
    - MLflow maps every installed distribution to its modules when it logs a model (0.5 s).

    Returns:
        The ClearML variables of the environment the configuration was read in.
    """
    import inspect  # here: the steps' commands import this module and must start fast

    for name in modules:
        with contextlib.suppress(ImportError):  # a library this environment lacks
            importlib.import_module(name)
    environment = clearml_environment(os.environ)
    from pydantic import ValidationError

    from mlrig.errors import ConfigError

    # outside a project, or with bad settings, each step reads ClearML's configuration itself
    with contextlib.suppress(ImportError, ConfigError, ValidationError):
        from clearml.config import ConfigWrapper

        from mlrig.settings import load_settings
        from mlrig.tracking.step_run import configure_clearml

        configure_clearml(load_settings())
        ConfigWrapper._init()
    inspect.stack()
    with contextlib.suppress(ImportError, AttributeError):  # a cache of MLflow's internals
        from mlflow.utils.requirements_utils import _init_modules_to_packages_map

        _init_modules_to_packages_map()
    return environment


def clearml_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """The variables ClearML's configuration is read with."""
    return {key: value for key, value in environment.items() if key.startswith(CLEARML_PREFIXES)}


def forget_clearml_configuration() -> None:
    """A step whose ClearML settings differ from the server's reads its own configuration."""
    with contextlib.suppress(ImportError):
        from clearml.config import ConfigSDKWrapper, ConfigWrapper

        ConfigWrapper._config = None
        ConfigSDKWrapper._config_sdk = None


def serve(socket_path: Path, modules: tuple[str, ...] = PRELOAD) -> None:
    """Import `modules`, then fork a child for every command that connects (a step's, or in a
    step container a stage's: `mlrig-stage`)."""
    preloaded_with = preload(modules)
    preloaded_in = os.getcwd()
    progress.name_process("mlrig-warm", title="mlrig warm server (forks the steps)")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the children are reaped by the kernel
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(str(socket_path))
    server.listen(16)
    while True:
        connection, _ = server.accept()
        if os.fork() == 0:
            server.close()
            run_child(connection, preloaded_with, preloaded_in)  # never returns
        connection.close()


def run_child(connection: socket.socket, preloaded_with: dict[str, str], preloaded_in: str) -> None:
    """Become the step's process: its streams, environment, folder and arguments; then run it."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the step waits for its own subprocesses
    message, streams, _, _ = socket.recv_fds(connection, MAX_REQUEST_BYTES, 3)
    request = json.loads(message)
    if (clearml_environment(request["env"]), request["cwd"]) != (preloaded_with, preloaded_in):
        forget_clearml_configuration()
    for number, stream in enumerate(streams):
        os.dup2(stream, number)
        os.close(stream)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = request["argv"]
    progress.name_process(progress.stage_name(request["module"], sys.argv))
    code = run_app(request["module"])
    atexit._run_exitfuncs()  # what a process's own exit runs: ClearML and MLflow flush here
    sys.stdout.flush()
    sys.stderr.flush()
    # counted by the kernel for this fork alone: its CPU time leaves out the server's imports
    usage = dataclasses.asdict(progress.own_usage())
    connection.send(json.dumps({"code": code, "usage": usage}).encode())
    os._exit(code)


def run_app(module: str) -> int:
    """Run a step's Typer app as its own command would, saying what it does every ~10 s
    (`progress.heartbeat`); its exit code."""
    try:
        with progress.heartbeat(progress.stage_name(module, sys.argv)):
            importlib.import_module(module).app()
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        sys.stderr.write(f"{exit_.code}\n")
        return 1
    except BaseException:  # what an uncaught error does to a process: traceback, exit 1
        traceback.print_exc()
        return 1
    return 0


@contextlib.contextmanager
def warm_server(root: Path, environment: dict[str, str], log_path: Path) -> Iterator[str]:
    """Run the warm server for the duration of a pipeline run.

    Yields:
        The socket path, for the steps' environment (`MLRIG_WARM_SOCKET`).
    """
    # a socket path must be short (108 bytes); the project folder may not be
    folder = Path(tempfile.mkdtemp(prefix="mlrig-warm-"))
    socket_path = folder / "steps.sock"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        # its own process group, with the step children it forks: stopped as one
        server = stopping.start(
            [sys.executable, "-m", "mlrig.executors.warm", str(socket_path)],
            cwd=root,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield str(socket_path)
    finally:
        stopping.GROUPS.end(server, grace=10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
