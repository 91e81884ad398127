"""`podman kube play` of the Helm chart on one machine: the chart's own pods, no cluster.

What podman 4.3 cannot play is started the nearest real way, and named:
- StatefulSet: not a kind kube play knows; played as a Deployment with the same pod template,
  its volumeClaimTemplates as PersistentVolumeClaims (podman volumes).
- Secret: kube play stores an in-file Secret as YAML but reads secretKeyRef values as a flat
  JSON object of base64 values, so every rendered Secret is created that way with
  `podman secret create` before the play.
- ConfigMap: passed with `--configmap` (not a standalone object in a played file).
- Service: no Service in podman; with hostNetwork every pod listens on the host, and a hosts
  file (containers.conf `base_hosts_file`) resolves each Service name to 127.0.0.1.
- containerPort: podman refuses port mappings on the host network, where a process's port is
  the host's anyway; the ports are dropped and probes naming a port get its number.
- emptyDir: podman makes it a volume named as the pod's volume, so two pods' `tmp` would be one
  volume; each emptyDir is renamed `<workload>-<volume>`.
- Job (the post-install hooks: bucket-init, mlflow-users): no Jobs in kube play; each hook's
  pod is played as a Pod once MLflow answers, in the hooks' weight order, and must exit 0.
- Downward API: podman 4.3 gives a `fieldRef` to `metadata.annotations['...']` an empty value
  (checked: the pod template's annotations do not reach it), so each such variable is given
  the template's annotation as its value, what the kubelet would read (the serving pods' pinned
  model version).
- Images: the chart runs every image by digest; the local images' digests are read from
  podman's store and set (`--set <component>.image.digest=...`).
- ServiceAccount, Role, RoleBinding, Ingress, NetworkPolicy, PodDisruptionBudget,
  ServiceMonitor: not played (no API server, no network plugin, no Prometheus).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlrig.errors import ConfigError, MlrigError

CHART = Path("helm") / "mlrig"
LOCAL_VALUES = CHART / "local" / "podman-values.yaml"
HELM = Path(".mlrig") / "tools" / "helm"
START_TIMEOUT = 180.0
RELEASE = "mlrig"
NAMESPACE = "mlrig"
#: podman's default limits are above what this kernel lets a container set (runc then fails)
ULIMITS = ("nofile=8192:8192", "nproc=8192:8192")
PLAYED_KINDS = {"Deployment", "StatefulSet"}
SKIPPED_KINDS = {
    "Service", "ServiceAccount", "Role", "RoleBinding", "Ingress", "NetworkPolicy",
    "PodDisruptionBudget", "ServiceMonitor",
}  # fmt: skip
#: the values of each image `up` plays, and the local image's repository:tag
LOCAL_IMAGES = {
    "mlflow.image": ("mlflow", "image"),
    "objectStore.seaweedfs.image": ("objectStore", "seaweedfs", "image"),
    "postgresql.image": ("postgresql", "image"),
}
HOOK_TIMEOUT = 600.0
#: seconds one podman removal (kube down, pod rm, volume rm) may take before `down` gives up
REMOVE_TIMEOUT = 120.0
#: seconds a played container gets to stop before podman kills it
STOP_SECONDS = 10


class PlayLayout:
    """Where the rendered chart and podman's files are kept (.mlrig/kube-play)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = self.root / ".mlrig" / "kube-play"
        self.workloads = self.folder / "workloads.yaml"
        self.containers_conf = self.folder / "containers.conf"
        self.hosts = self.folder / "hosts"
        self.secrets = self.folder / "secrets.json"
        self.client_env = self.folder / "client.env"

    def configmap(self, name: str) -> Path:
        return self.folder / f"configmap-{name}.yaml"


@dataclass(frozen=True)
class Rendered:
    """The chart's objects sorted by what kube play does with them."""

    workloads: list[dict[str, Any]]
    claims: list[dict[str, Any]]
    secrets: dict[str, dict[str, str]]
    configmaps: list[dict[str, Any]]
    services: list[str]
    skipped: list[str]
    hooks: list[dict[str, Any]]


def render_chart(
    helm: Path, chart: Path, values: list[Path], settings: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """`helm template` of the chart (release `mlrig`), every object parsed; `settings` are
    `--set` values."""
    arguments = [str(helm), "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for path in values:
        arguments += ["--values", str(path)]
    for key, value in (settings or {}).items():
        arguments += ["--set", f"{key}={value}"]
    result = subprocess.run(arguments, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise MlrigError(f"helm template failed: {result.stderr.strip()}")
    return [item for item in yaml.safe_load_all(result.stdout) if item]


def as_deployment(statefulset: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A StatefulSet as a Deployment with the same pod template, and its claims as PVCs."""
    spec = statefulset["spec"]
    name = statefulset["metadata"]["name"]
    claims = []
    template = json.loads(json.dumps(spec["template"]))
    for claim in spec.get("volumeClaimTemplates", []):
        claim_name = f"{claim['metadata']['name']}-{name}"
        claims.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim_name},
                "spec": claim["spec"],
            }
        )
        template["spec"].setdefault("volumes", []).append(
            {"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim_name}}
        )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": statefulset["metadata"],
        "spec": {"replicas": 1, "selector": spec["selector"], "template": template},
    }
    return deployment, claims


def without_port_mappings(workload: dict[str, Any]) -> dict[str, Any]:
    """The workload as podman plays it on the host network (`playable_pod_spec`)."""
    workload = json.loads(json.dumps(workload))
    playable_pod_spec(workload["spec"]["template"]["spec"], workload["metadata"]["name"])
    with_annotation_values(workload["spec"]["template"])
    return workload


def with_annotation_values(template: dict[str, Any]) -> None:
    """Give each variable read from a pod-template annotation by `fieldRef` that annotation's
    value: podman 4.3 reads such a reference as empty."""
    annotations = template.get("metadata", {}).get("annotations") or {}
    for container in template["spec"]["containers"]:
        for variable in container.get("env", []):
            path = variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
            if path.startswith("metadata.annotations["):
                key = path.removeprefix("metadata.annotations[").removesuffix("]").strip("'\"")
                variable.pop("valueFrom")
                variable["value"] = annotations.get(key, "")


def playable_pod_spec(pod: dict[str, Any], prefix: str) -> None:
    """Change a pod spec for podman on the host network: no port mappings (named probe ports
    made numbers), and emptyDir volumes named `<prefix>-<volume>`."""
    private = {volume["name"] for volume in pod.get("volumes", []) if "emptyDir" in volume}
    for volume in pod.get("volumes", []):
        if volume["name"] in private:
            volume["name"] = f"{prefix}-{volume['name']}"
    for container in pod["containers"]:
        for mount in container.get("volumeMounts", []):
            if mount["name"] in private:
                mount["name"] = f"{prefix}-{mount['name']}"
        numbers = {port["name"]: port["containerPort"] for port in container.pop("ports", [])}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            action = container.get(probe, {}).get("httpGet") or {}
            if isinstance(action.get("port"), str):
                action["port"] = numbers[action["port"]]


def hook_weight(job: dict[str, Any]) -> int:
    return int(job["metadata"].get("annotations", {}).get("helm.sh/hook-weight", "0"))


def sort_objects(objects: list[dict[str, Any]]) -> Rendered:
    workloads, claims, configmaps, services, skipped, hooks = [], [], [], [], [], []
    secrets: dict[str, dict[str, str]] = {}
    for item in objects:
        kind, name = item["kind"], item["metadata"]["name"]
        if kind == "Deployment":
            workloads.append(item)
        elif kind == "StatefulSet":
            deployment, volumes = as_deployment(item)
            workloads.append(deployment)
            claims += volumes
        elif kind == "Secret":
            secrets[name] = dict(item.get("stringData", {})) | {
                key: base64.b64decode(value).decode() for key, value in item.get("data", {}).items()
            }
        elif kind == "ConfigMap":
            configmaps.append(item)
        elif kind == "Job" and "helm.sh/hook" in item["metadata"].get("annotations", {}):
            hooks.append(item)
        elif kind in SKIPPED_KINDS:
            skipped.append(f"{kind}/{name}")
            if kind == "Service":
                services.append(name)
        else:
            raise ConfigError(f"kube play: no way to start {kind}/{name}")
    workloads = [without_port_mappings(workload) for workload in workloads]
    hooks.sort(key=hook_weight)
    return Rendered(workloads, claims, secrets, configmaps, services, skipped, hooks)


def podman(
    *arguments: str, conf: Path | None = None, check: bool = True, timeout: float = 300
) -> str:
    """Run podman (with runc, as this host needs) and return its output."""
    env = None
    if conf is not None:
        env = dict(os.environ) | {"CONTAINERS_CONF": str(conf)}
    try:
        result = subprocess.run(
            ["podman", "--runtime", "runc", *arguments],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise MlrigError(
            f"podman {' '.join(arguments[:3])} did not finish within {timeout:.0f}s. See what is "
            "left with `podman pod ls` and `podman ps -a`, remove it with `podman pod rm -f "
            "<pod>`, then run the command again."
        ) from None
    if check and result.returncode != 0:
        raise MlrigError(f"podman {' '.join(arguments[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def create_secret(name: str, values: dict[str, str], folder: Path) -> None:
    """A podman secret in the form podman 4.3's secretKeyRef reads: {key: base64(value)}."""
    podman("secret", "rm", name, check=False)
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
    path = folder / f"secret-{name}.json"
    path.write_text(json.dumps(encoded))
    path.chmod(0o600)
    try:
        podman("secret", "create", name, str(path))
    finally:
        path.unlink()


def write_play_files(layout: PlayLayout, rendered: Rendered) -> list[Path]:
    """The played YAML, the ConfigMaps, and containers.conf with the Service-name hosts file."""
    layout.folder.mkdir(parents=True, exist_ok=True)
    layout.workloads.write_text(yaml.safe_dump_all([*rendered.claims, *rendered.workloads]))
    layout.hosts.write_text(f"127.0.0.1 localhost {' '.join(rendered.services)}\n")
    layout.containers_conf.write_text(
        "[containers]\n"
        f"default_ulimits = {json.dumps(list(ULIMITS))}\n"
        f'base_hosts_file = "{layout.hosts}"\n'
    )
    configmaps = []
    for item in rendered.configmaps:
        path = layout.configmap(item["metadata"]["name"])
        path.write_text(yaml.safe_dump(item))
        configmaps.append(path)
    return configmaps


def require_podman() -> None:
    if shutil.which("podman") is None:
        raise ConfigError("podman is not installed: apt-get install podman runc")


def play_up(layout: PlayLayout, rendered: Rendered) -> float:
    """Create the Secrets and play the workloads; the seconds `podman kube play` took."""
    configmaps = write_play_files(layout, rendered)
    # pods and volumes of these names left by another checkout (or a killed play) would make
    # `kube play` refuse: "volume ... already exists"
    remove_workloads(layout)
    left = [
        name
        for name in volume_names([*rendered.claims, *rendered.workloads])
        if volume_exists(name)
    ]
    if left:
        raise MlrigError(
            f"podman volume rm left {', '.join(left)}: a container still uses it (`podman ps -a "
            f"--filter volume={left[0]}`). Remove that container, then run the command again."
        )
    for name, values in rendered.secrets.items():
        create_secret(name, values, layout.folder)
    # kept for `down` and for the client settings (git-ignored, owner-only)
    layout.secrets.write_text(json.dumps(rendered.secrets))
    layout.secrets.chmod(0o600)
    flags = [flag for path in configmaps for flag in ("--configmap", str(path))]
    started = time.monotonic()
    podman("kube", "play", *flags, str(layout.workloads), conf=layout.containers_conf)
    return time.monotonic() - started


def remove_pods(workloads: list[dict[str, Any]]) -> None:
    """The pods kube play made of played Deployments (`<name>-pod-<replica>`), stopped and
    removed with their containers."""
    for item in workloads:
        if item["kind"] != "Deployment":
            continue
        replicas = int(item.get("spec", {}).get("replicas", 1))
        pods = [f"{item['metadata']['name']}-pod-{replica}" for replica in range(replicas)]
        podman(
            "pod", "rm", "--force", "--ignore", "--time", str(STOP_SECONDS), *pods,
            check=False, timeout=REMOVE_TIMEOUT,
        )  # fmt: skip


def volume_names(objects: list[dict[str, Any]]) -> list[str]:
    """The podman volumes of played objects: their claims, and what kube play makes a named
    volume of (ConfigMaps, emptyDirs)."""
    names = []
    for item in objects:
        if item["kind"] == "PersistentVolumeClaim":
            names.append(item["metadata"]["name"])
        for volume in item.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            name = volume.get("configMap", {}).get("name") or (
                volume["name"] if "emptyDir" in volume else None
            )
            if name:
                names.append(name)
    return names


def remove_volumes(objects: list[dict[str, Any]]) -> None:
    """Remove the podman volumes of played objects (their pods already gone)."""
    for name in volume_names(objects):
        podman("volume", "rm", "--force", name, check=False, timeout=REMOVE_TIMEOUT)


def volume_exists(name: str) -> bool:
    result = subprocess.run(
        ["podman", "volume", "exists", name], capture_output=True, timeout=REMOVE_TIMEOUT
    )
    return result.returncode == 0


def play_down(layout: PlayLayout) -> None:
    """Remove the played pods, their volumes and the Secrets."""
    remove_workloads(layout)
    # the volumes kube play made of the ConfigMaps the hook pods mounted (gone with their pods)
    for path in sorted(layout.folder.glob("configmap-*.yaml")):
        name = path.stem.removeprefix("configmap-")
        podman("volume", "rm", "--force", name, check=False, timeout=REMOVE_TIMEOUT)
    if layout.secrets.exists():
        for name in json.loads(layout.secrets.read_text()):
            podman("secret", "rm", name, check=False, timeout=REMOVE_TIMEOUT)
        layout.secrets.unlink()
    # the credentials of pods that are gone
    layout.client_env.unlink(missing_ok=True)


def remove_workloads(layout: PlayLayout) -> None:
    """Remove the pods of the played YAML and their volumes, whoever started them: the pods
    first (a volume in use does not go), each podman call bounded (REMOVE_TIMEOUT)."""
    if layout.workloads.exists():
        played = [item for item in yaml.safe_load_all(layout.workloads.read_text()) if item]
        podman(
            "kube", "down", str(layout.workloads),
            conf=layout.containers_conf, check=False, timeout=REMOVE_TIMEOUT,
        )  # fmt: skip
        # what kube down left (a pod it failed to stop, another checkout's) goes before its volumes
        remove_pods(played)
        remove_volumes(played)


def client_environment(
    values: dict[str, Any], secrets: dict[str, dict[str, str]]
) -> dict[str, str]:
    """What the pipeline, DVC and boto3 on this host need to use the played chart: the
    pipeline's identity (its MLflow user, its S3 keys allowed the DVC bucket only), as a step
    pod gets it, never an admin's."""
    mlflow, store = values["mlflow"], values["objectStore"]
    return {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow['service']['port']}",
        "MLFLOW_TRACKING_USERNAME": mlflow["pipelineUser"]["username"],
        "MLFLOW_TRACKING_PASSWORD": secrets[f"{RELEASE}-mlflow-pipeline"]["password"],
        "AWS_ACCESS_KEY_ID": secrets[f"{RELEASE}-s3-pipeline"]["access-key"],
        "AWS_SECRET_ACCESS_KEY": secrets[f"{RELEASE}-s3-pipeline"]["secret-key"],
        "AWS_DEFAULT_REGION": store["region"],
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{store['seaweedfs']['ports']['s3']}",
    }


def local_image_digests(values: dict[str, Any]) -> dict[str, str]:
    """`<value>.digest` of each played image, read from podman's store: the chart runs
    images by digest, and these are built here (`make server-images`)."""
    digests = {}
    for value, path in LOCAL_IMAGES.items():
        image = values
        for key in path:
            image = image[key]
        reference = f"{image['repository']}:{image['tag']}"
        found = podman("image", "inspect", "--format", "{{.Digest}}", reference, check=False)
        digest = found.strip()
        if not digest.startswith("sha256:"):
            raise ConfigError(
                f"The image {reference} is not in podman's store: make server-images builds it."
            )
        digests[f"{value}.digest"] = digest
    return digests


def hook_pod(job: dict[str, Any]) -> dict[str, Any]:
    """A hook Job's pod as a Pod podman can play (on the host network, emptyDirs its own)."""
    name = f"{job['metadata']['name']}-hook"
    template = json.loads(json.dumps(job["spec"]["template"]))
    playable_pod_spec(template["spec"], name)
    metadata = {"name": name, "labels": template.get("metadata", {}).get("labels", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def run_hook(layout: PlayLayout, job: dict[str, Any], configmaps: list[Path]) -> str:
    """Play one hook's pod until it exits; its log. Raises MlrigError when it fails."""
    pod = hook_pod(job)
    name = pod["metadata"]["name"]
    path = layout.folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(pod))
    container = f"{name}-{pod['spec']['containers'][0]['name']}"
    flags = [flag for configmap in configmaps for flag in ("--configmap", str(configmap))]
    podman("kube", "play", *flags, str(path), conf=layout.containers_conf)
    try:
        exit_code = podman("wait", container, timeout=HOOK_TIMEOUT).strip()
        log = subprocess.run(["podman", "logs", container], capture_output=True, text=True)
    finally:
        podman("kube", "down", str(path), conf=layout.containers_conf, check=False)
        for volume in pod["spec"].get("volumes", []):
            if "emptyDir" in volume:
                podman("volume", "rm", "--force", volume["name"], check=False)
    output = log.stdout + log.stderr
    if exit_code != "0":
        raise MlrigError(
            f"The chart's hook {job['metadata']['name']} failed (exit {exit_code}):\n{output}"
        )
    return output


def merged_values(*files: Path) -> dict[str, Any]:
    """The values helm uses: later files override earlier ones, key by key."""

    def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
        for key, value in override.items():
            is_tree = isinstance(value, dict) and isinstance(base.get(key), dict)
            base[key] = merge(base[key], value) if is_tree else value
        return base

    values: dict[str, Any] = {}
    for path in files:
        values = merge(values, yaml.safe_load(path.read_text()) or {})
    return values


def wait_for_mlflow(uri: str, timeout: float = START_TIMEOUT) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{uri}/health", timeout=3).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise MlrigError(
        f"The chart's MLflow server did not answer {uri}/health within {timeout:.0f}s: "
        "podman logs mlrig-mlflow-pod-0-mlflow says why."
    )


@dataclass(frozen=True)
class Played:
    """The chart as played: what was started, what was not, and how long it took."""

    workloads: list[str]
    skipped: list[str]
    hooks: list[str]
    play_seconds: float
    ready_seconds: float
    #: the pipeline's identity (client.env): what a step pod gets (never in a repr: a log)
    environment: dict[str, str] = field(repr=False)
    #: every Secret the chart made, by name (the admin's among them: for checks, never a client)
    secrets: dict[str, dict[str, str]] = field(repr=False)


def up(root: Path) -> Played:
    """Render the chart with the local values, play it, wait for MLflow, run the hooks."""
    helm = root / HELM
    if not helm.is_file():
        raise ConfigError("helm is not in .mlrig/tools: make kube-tools")
    require_podman()
    layout = PlayLayout(root)
    play_down(layout)  # a second `up` replaces the first
    layout.folder.mkdir(parents=True, exist_ok=True)
    values = merged_values(root / CHART / "values.yaml", root / LOCAL_VALUES)
    digests = local_image_digests(values)
    rendered = sort_objects(render_chart(helm, root / CHART, [root / LOCAL_VALUES], digests))
    started = time.monotonic()
    play_seconds = play_up(layout, rendered)
    environment = client_environment(values, rendered.secrets)
    wait_for_mlflow(environment["MLFLOW_TRACKING_URI"])
    configmaps = [layout.configmap(item["metadata"]["name"]) for item in rendered.configmaps]
    for job in rendered.hooks:
        run_hook(layout, job, configmaps)
    layout.client_env.write_text("".join(f"{k}={v}\n" for k, v in environment.items()))
    layout.client_env.chmod(0o600)
    return Played(
        workloads=[item["metadata"]["name"] for item in rendered.workloads],
        skipped=rendered.skipped,
        hooks=[job["metadata"]["name"] for job in rendered.hooks],
        play_seconds=round(play_seconds, 1),
        ready_seconds=round(time.monotonic() - started, 1),
        environment=environment,
        secrets=rendered.secrets,
    )
