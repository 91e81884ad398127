"""What serves, and rolling the serving Deployment out when the champion alias moved.

The chart's serving Deployment pins the version its pods load with an annotation on its pod
template (`mlrig.io/model-version`, handed to the server by the downward API). A rollout
patches that annotation to the champion's version: Kubernetes starts new pods, and with
`maxUnavailable: 0` the old ones keep answering until the new ones are ready; a rollout whose
pods never get ready leaves the old version serving.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

from mlrig.errors import EXIT_FAILED, ConfigError, MlrigError
from mlrig.serving.server import champion_uri, resolve_model

#: the pod template's annotation naming the version its pods serve
VERSION_ANNOTATION = "mlrig.io/model-version"
STATUS_TIMEOUT_SECONDS = 10


def version_patch(version: str) -> dict[str, Any]:
    """The merge patch that makes the Deployment's pods serve `version`."""
    return {"spec": {"template": {"metadata": {"annotations": {VERSION_ANNOTATION: version}}}}}


@dataclass(frozen=True)
class RolloutPlan:
    """Which version the Deployment serves, which one the champion alias names, the patch."""

    deployment: str
    namespace: str
    model: str
    serving: str | None  # None: not asked (--dry-run) or no annotation yet
    champion: str

    @property
    def needed(self) -> bool:
        return self.serving != self.champion

    @property
    def patch(self) -> dict[str, Any]:
        return version_patch(self.champion)

    def kubectl_args(self) -> list[str]:
        """The kubectl arguments that apply the patch (after the kubectl binary)."""
        return [
            "--namespace", self.namespace, "patch", "deployment", self.deployment,
            "--type", "merge", "--patch", json.dumps(self.patch, separators=(",", ":")),
        ]  # fmt: skip


def run_kubectl(kubectl: str, args: list[str], what: str, timeout: float = 60) -> str:
    """kubectl's output.

    Raises:
        MlrigError: kubectl is missing or failed; its own message is quoted.
    """
    try:
        result = subprocess.run(
            [kubectl, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise ConfigError(
            f"kubectl not found ({kubectl}): install it (make kube-tools puts one in "
            ".mlrig/tools/kubectl) and pass --kubectl, or point KUBECONFIG at the cluster."
        ) from None
    except subprocess.TimeoutExpired:
        raise MlrigError(f"kubectl did not answer in {timeout:.0f}s {what}.", EXIT_FAILED) from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise MlrigError(
            f"kubectl failed {what}: {message[-1] if message else 'no output'}", EXIT_FAILED
        )
    return result.stdout


def deployed_version(kubectl: str, deployment: str, namespace: str) -> str | None:
    """The version the Deployment's pod template pins (None: it serves the alias it found)."""
    manifest = json.loads(
        run_kubectl(
            kubectl,
            ["--namespace", namespace, "get", "deployment", deployment, "--output", "json"],
            f"reading deployment {deployment} in namespace {namespace}",
        )
    )
    annotations = manifest["spec"]["template"].get("metadata", {}).get("annotations") or {}
    return annotations.get(VERSION_ANNOTATION) or None


def plan_rollout(model: str, deployment: str, namespace: str, kubectl: str | None) -> RolloutPlan:
    """The champion's version in MLflow, against what the Deployment serves (kubectl None:
    not asked, as in a dry run)."""
    champion = resolve_model(champion_uri(model)).version
    serving = deployed_version(kubectl, deployment, namespace) if kubectl else None
    return RolloutPlan(deployment, namespace, model, serving, champion)


def apply_rollout(plan: RolloutPlan, kubectl: str, wait_seconds: int | None) -> None:
    """Patch the Deployment; with `wait_seconds`, wait for its new pods to be ready.

    Raises:
        MlrigError: the patch failed, or the new pods were not ready in time (the old ones
            keep serving: the Deployment never takes an old pod down before a new one is ready).
    """
    what = f"patching deployment {plan.deployment}"
    run_kubectl(kubectl, plan.kubectl_args(), what)
    if wait_seconds is None:
        return
    try:
        run_kubectl(
            kubectl,
            ["--namespace", plan.namespace, "rollout", "status", f"deployment/{plan.deployment}",
             f"--timeout={wait_seconds}s"],
            f"waiting for version {plan.champion} to be ready",
            timeout=wait_seconds + 30,
        )  # fmt: skip
    except MlrigError as error:
        raise MlrigError(
            f"{error} Version {plan.serving or 'of the alias'} keeps serving: the old pods stay "
            "until new ones are ready. See why with kubectl describe pods; undo with kubectl "
            f"rollout undo deployment/{plan.deployment}.",
            EXIT_FAILED,
        ) from None


def server_version(url: str) -> dict[str, str]:
    """What a scoring server says it serves (its /version: model, version, mlflow).

    Raises:
        MlrigError: it does not answer, or is not an mlrig scoring server.
    """
    import urllib.error
    import urllib.request

    address = url.rstrip("/") + "/version"
    try:
        with urllib.request.urlopen(address, timeout=STATUS_TIMEOUT_SECONDS) as response:
            described = json.loads(response.read())
    except (urllib.error.URLError, OSError) as error:
        raise MlrigError(
            f"No scoring server answers at {address} ({error}). Start one with mlrig serve, or "
            "port-forward the chart's: kubectl port-forward svc/<release>-serving 8080.",
            EXIT_FAILED,
        ) from None
    except json.JSONDecodeError:
        described = None
    if not isinstance(described, dict) or "version" not in described:
        raise MlrigError(
            f"{address} is not an mlrig scoring server: its /version names no model version.",
            EXIT_FAILED,
        )
    return {key: str(value) for key, value in described.items()}
