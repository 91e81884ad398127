"""ClearML's k8s glue, driven without a server: the pods it would make."""

from __future__ import annotations

import json
import os
from typing import Any

import yaml


def glue_pod(
    template: dict[str, Any], task_id: str, image: str, container_arguments: list[str]
) -> dict[str, Any]:
    """The pod clearml-agent's k8s glue makes for a task, by its own code (no server, no kubectl).

    As the chart's glue runs it: K8S_GLUE_POD_USE_IMAGE_ENTRYPOINT=1, so the pod runs the step
    image's entrypoint with CLEARML_TASK_ID set. Only the rendering is called: `kubectl apply`
    is replaced by `cat`, which prints the YAML the glue would apply.
    """
    import logging

    from clearml_agent.glue.k8s import K8sIntegration

    class RenderingGlue(K8sIntegration):  # type: ignore[misc]
        KUBECTL_APPLY_CMD = "cat"

        def __init__(self) -> None:  # what _kubectl_apply reads; the real one logs in first
            self.kind, self.using_jobs, self._docker_force_pull = "pod", False, False
            self.log, self.worker_id = logging.getLogger("glue"), "mlrig-test-glue"

    os.environ["K8S_GLUE_POD_USE_IMAGE_ENTRYPOINT"] = "1"
    try:
        output, error, _ = RenderingGlue()._kubectl_apply(
            pod_name=f"clearml-id-{task_id}",
            clearml_conf_create_script=[],
            docker_image=image,
            docker_args=container_arguments,
            docker_bash=None,
            labels=["ai.clearml/queue=default"],
            queue="queue-id",
            task_id=task_id,
            namespace="mlrig",
            template=json.loads(json.dumps(template)),
            task_token=None,
        )
    finally:
        del os.environ["K8S_GLUE_POD_USE_IMAGE_ENTRYPOINT"]
    assert not error, error
    return yaml.safe_load(output)
