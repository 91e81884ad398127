"""kube play's adaptation of the downward API: podman 4.3 reads a `fieldRef` to a pod-template
annotation as empty, so the played spec carries the annotation's value itself."""

from __future__ import annotations

from typing import Any

from mlrig.serving.rollout import VERSION_ANNOTATION
from mlrig.stacks.chart import without_port_mappings


def serving_deployment(pinned: str) -> dict[str, Any]:
    pin = {"fieldRef": {"fieldPath": f"metadata.annotations['{VERSION_ANNOTATION}']"}}
    container = {
        "name": "serve",
        "env": [
            {"name": "MLRIG_SERVE_VERSION_PIN", "valueFrom": pin},
            {"name": "MLRIG_SERVE_PORT", "value": "8080"},
        ],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ping", "port": "http"}},
    }
    return {
        "kind": "Deployment",
        "metadata": {"name": "mlrig-serving"},
        "spec": {
            "template": {
                "metadata": {"annotations": {VERSION_ANNOTATION: pinned}},
                "spec": {"containers": [container]},
            }
        },
    }


def played_env(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    (container,) = without_port_mappings(deployment)["spec"]["template"]["spec"]["containers"]
    return container["env"]


def test_the_pinned_version_is_played_as_the_annotations_value() -> None:
    env = played_env(serving_deployment("2"))
    assert env[0] == {"name": "MLRIG_SERVE_VERSION_PIN", "value": "2"}
    assert env[1] == {"name": "MLRIG_SERVE_PORT", "value": "8080"}


def test_an_empty_pin_is_played_empty_and_the_rendered_spec_is_left_as_it_was() -> None:
    deployment = serving_deployment("")
    assert played_env(deployment)[0] == {"name": "MLRIG_SERVE_VERSION_PIN", "value": ""}
    assert "valueFrom" in deployment["spec"]["template"]["spec"]["containers"][0]["env"][0]
