"""The chart's serving Deployment played with `podman kube play`, and a stand-in for the parts
of Kubernetes podman lacks during a rollout: the Deployment controller (one pod per play) and
the Service (no Service in podman) that routes only to pods whose readiness path answers."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlrig.serving.server import VERSION_HEADER
from mlrig.stacks.chart import PlayLayout, podman, remove_volumes, without_port_mappings

#: seconds a serving pod may take to download and load its model
READY_SECONDS = 300
#: seconds between two readiness probes of the stand-in Service
PROBE_SECONDS = 0.2


@dataclass(frozen=True)
class ServingPod:
    """One played serving pod: its Deployment as played, its YAML file and its URL."""

    deployment: dict[str, Any]
    path: Path
    url: str
    readiness_path: str

    @property
    def name(self) -> str:
        return self.deployment["metadata"]["name"]

    @property
    def container(self) -> str:
        """kube play's name of the Deployment's first pod's `serve` container."""
        return f"{self.name}-pod-0-serve"


def serving_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def on_port(deployment: dict[str, Any], name: str, port: int) -> dict[str, Any]:
    """The rendered Deployment renamed, its server and probes on `port`, adapted for kube play:
    on the host network two pods of one Deployment would both take the chart's port."""
    deployment = json.loads(json.dumps(deployment))
    deployment["metadata"]["name"] = name
    deployment["spec"]["replicas"] = 1  # kube play would make every replica on the same port
    container = serving_container(deployment)
    for variable in container["env"]:
        if variable["name"] == "MLRIG_SERVE_PORT":
            variable["value"] = str(port)
    for port_entry in container.get("ports", []):
        port_entry["containerPort"] = port
    return without_port_mappings(deployment)


def play_serving(layout: PlayLayout, deployment: dict[str, Any]) -> ServingPod:
    """Play one serving Deployment (already adapted by `on_port`); returns at once."""
    container = serving_container(deployment)
    port = next(int(v["value"]) for v in container["env"] if v["name"] == "MLRIG_SERVE_PORT")
    path = layout.folder / f"{deployment['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(deployment))
    podman("kube", "play", str(path), conf=layout.containers_conf)
    readiness = container["readinessProbe"]["httpGet"]["path"]
    return ServingPod(deployment, path, f"http://127.0.0.1:{port}", readiness)


def take_down(layout: PlayLayout, pod: ServingPod) -> None:
    """`podman kube down` of the pod, then its emptyDir volume; bounded, never raises."""
    podman("kube", "down", str(pod.path), conf=layout.containers_conf, check=False, timeout=120)
    remove_volumes([pod.deployment])
    pod.path.unlink(missing_ok=True)


def take_down_played(layout: PlayLayout, name: str) -> None:
    """Take down the serving Deployment played as `name`, if its YAML is still there (what a
    failed test left)."""
    path = layout.folder / f"{name}.yaml"
    if path.exists():
        take_down(layout, ServingPod(yaml.safe_load(path.read_text()), path, "", ""))


def answers(url: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def pod_logs(pod: ServingPod) -> str:
    """The serve container's log (uvicorn's lines are on its stderr)."""
    logs = subprocess.run(["podman", "logs", pod.container], capture_output=True, text=True)
    return logs.stdout + logs.stderr


def served_version(pod: ServingPod) -> str | None:
    try:
        with urllib.request.urlopen(f"{pod.url}/version", timeout=5) as response:
            return str(json.loads(response.read())["version"])
    except (OSError, urllib.error.URLError, KeyError, ValueError):
        return None


def wait_until_ready(pod: ServingPod, seconds: float = READY_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(pod.url + pod.readiness_path):
            return
        time.sleep(1)
    raise AssertionError(f"{pod.name} was not ready in {seconds}s: {pod_logs(pod)}")


@dataclass
class Answer:
    """One request sent through the Service: the version header, or what failed."""

    version: str | None
    error: str | None = None


@dataclass
class ServiceStandIn:
    """What a Service and the Deployment controller do for a rollout (podman has neither):
    a pod becomes an endpoint once its readiness path answers; a surge pod that becomes ready
    replaces the pod it rolls out over in the same step (maxSurge 1, maxUnavailable 0: the
    controller then terminates the old pod, and a terminating pod is no endpoint)."""

    endpoints: list[ServingPod] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: (seconds since the rollout started, answered) of each readiness probe of the surge pod
    probes: list[tuple[float, bool]] = field(default_factory=list)
    #: what the surge pod's /version said the moment its readiness path first answered
    version_when_ready: str | None = None

    def route(self) -> ServingPod | None:
        with self.lock:
            return self.endpoints[0] if self.endpoints else None

    def roll_over(self, old: ServingPod, new: ServingPod, seconds: float) -> bool:
        """Probe `new` until its readiness path answers, then swap it in for `old`; False when
        it did not within `seconds`."""
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            ready = answers(new.url + new.readiness_path, timeout=1)
            self.probes.append((time.monotonic() - started, ready))
            if ready:
                self.version_when_ready = served_version(new)
                with self.lock:
                    self.endpoints = [new if pod is old else pod for pod in self.endpoints]
                return True
            time.sleep(PROBE_SECONDS)
        return False


def invoke(pod: ServingPod, body: bytes) -> Answer:
    request = urllib.request.Request(
        f"{pod.url}/invocations", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Answer(response.headers[VERSION_HEADER])
    except (OSError, urllib.error.URLError) as error:
        return Answer(None, f"{pod.name}: {error}")


@dataclass
class Client:
    """A thread sending /invocations through the Service without pause until stopped."""

    service: ServiceStandIn
    body: bytes
    answers: list[Answer] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stopped.is_set():
            pod = self.service.route()
            self.answers.append(invoke(pod, self.body) if pod else Answer(None, "no endpoint"))
