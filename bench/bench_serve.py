"""Serving latency of the champion, side by side in one run, on the local stack's champion:

- mlrig's serving image (images/serve) in a podman container on the host's network, as the
  chart runs it (read-only root, user 1001);
- `mlrig-serve` (the same server, `mlrig serve`) on the host;
- baseline: `mlflow models serve -m models:/<name>@champion --env-manager local` on the host.

Each answers the same requests of 1 row and of 100 rows of the test split, taken in turns (one
request to each server, then the next round), over one kept-alive connection each: p50 and p99
in milliseconds. Needs the stack's champion: make stack-up, then mlrig run --stack local.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlrig.errors import ConfigError
from mlrig.settings import load_settings

REQUESTS = 300  # per server and request size
WARMUP = 20
SIZES = (1, 100)
READY_SECONDS = 240
BASELINE = "mlflow models serve (host)"


@dataclass
class Server:
    """One running scoring server and the latencies measured against it."""

    label: str
    port: int
    seconds: dict[int, list[float]] = field(default_factory=dict)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(server: Server, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ConfigError(f"{server.label} stopped before it was ready")
        try:
            connection = server.connection()
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise ConfigError(f"{server.label} was not ready in {READY_SECONDS}s")


@contextmanager
def host_process(label: str, command: list[str], env: dict[str, str]) -> Iterator[Server]:
    port = free_port()
    server = Server(label, port)
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_ready(server, process)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def serving_container(env: dict[str, str]) -> Iterator[Server | None]:
    """The serving image's container (None: no engine, or the image is not built)."""
    from mlrig.images.build import BASE, SERVE_IMAGE, base_tag, image_reference, os_base
    from mlrig.images.build import serve_tag as tag_of
    from mlrig.images.engine import engine_if_any

    settings = load_settings()
    engine = engine_if_any(settings)
    if engine is None:
        yield None
        return
    base = image_reference(settings, BASE, base_tag(settings, os_base(settings, engine)[1]))
    image = image_reference(settings, SERVE_IMAGE, tag_of(settings, base))
    if not engine.image_exists(image):
        print(f"(no serving image {image}: make server-images; measured without it)")
        yield None
        return
    port = free_port()
    name = f"mlrig-bench-serve-{port}"
    # `--env NAME` takes the value from podman's own environment: no secret on its command line
    flags = [flag for key in env for flag in ("--env", key)]
    subprocess.run(
        engine.command(
            "run", "--detach", "--name", name, *engine.host_flags(), "--network", "host",
            "--read-only", "--tmpfs", "/tmp", "--user", "1001", *flags,
            "--env", f"MLRIG_SERVE_PORT={port}", image,
        ),
        check=True, capture_output=True, env=os.environ | env,
    )  # fmt: skip
    try:
        server = Server("mlrig serving image (podman)", port)
        wait_until_ready(server, None)
        yield server
    finally:
        subprocess.run(engine.command("rm", "--force", "--time", "5", name), capture_output=True)


def payloads(root: Path) -> dict[int, bytes]:
    import pandas as pd

    meta = json.loads((root / "outputs/split/meta.json").read_text())
    rows = pd.read_parquet(root / "outputs/split/test.parquet")[meta["features"]]
    return {
        size: json.dumps({"dataframe_split": rows.head(size).to_dict(orient="split")}).encode()
        for size in SIZES
    }


def measure(servers: list[Server], bodies: dict[int, bytes]) -> None:
    """Requests in turns across the servers, so each sees the same load on the machine."""
    connections = {server.label: server.connection() for server in servers}
    headers = {"Content-Type": "application/json"}
    for size, body in bodies.items():
        for round_number in range(WARMUP + REQUESTS):
            for server in servers:
                connection = connections[server.label]
                started = time.perf_counter()
                connection.request("POST", "/invocations", body, headers)
                response = connection.getresponse()
                response.read()
                elapsed = time.perf_counter() - started
                if response.status != 200:
                    raise ConfigError(f"{server.label} answered {response.status}")
                if round_number >= WARMUP:
                    server.seconds.setdefault(size, []).append(elapsed)


def percentile(values: list[float], which: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[which - 1] * 1000


def table(servers: list[Server], model: str) -> str:
    lines = [
        f"## Serving latency of {model} ({REQUESTS} requests per size, in turns)",
        "",
        "| server | rows | p50 ms | p99 ms | p50 / baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    baseline = next(server for server in servers if server.label == BASELINE)
    for size in SIZES:
        base_p50 = percentile(baseline.seconds[size], 50)
        for server in servers:
            p50, p99 = percentile(server.seconds[size], 50), percentile(server.seconds[size], 99)
            lines.append(
                f"| {server.label} | {size} | {p50:.1f} | {p99:.1f} | {p50 / base_p50:.2f} |"
            )
    return "\n".join(lines) + "\n"


def run(stack_env: dict[str, str]) -> str:
    from mlrig.experiments.results import read_champion
    from mlrig.tracking.recorded import REGISTER_DIR

    root = load_settings().root
    champion = read_champion(root / REGISTER_DIR)
    if champion is None:
        raise ConfigError(
            "No champion to serve: run the pipeline on the stack first (mlrig run --stack local)"
        )
    bin_dir = Path(sys.executable).parent
    # mlflow models serve execs `uvicorn` by name: the venv's, on PATH
    env = os.environ | stack_env | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    uri = f"models:/{champion.registered_model}@champion"
    baseline = [str(bin_dir / "mlflow"), "models", "serve", "--env-manager", "local",
                "-m", uri, "--host", "127.0.0.1"]  # fmt: skip
    with ExitStack() as running:
        servers = [
            running.enter_context(host_process(BASELINE, baseline, env)),
            running.enter_context(
                host_process(
                    "mlrig-serve (host)",
                    [str(bin_dir / "mlrig-serve"), "--host", "127.0.0.1"],
                    env | {"MLRIG_SERVE_MODEL": champion.registered_model},
                )
            ),
        ]
        container = running.enter_context(
            serving_container(stack_env | {"MLRIG_SERVE_MODEL": champion.registered_model})
        )
        if container is not None:
            servers.append(container)
        measure(servers, payloads(root))
    return table(servers, f"{champion.registered_model} version {champion.version}")
