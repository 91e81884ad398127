"""mlrig's ClearML glue: clearml-agent's Kubernetes glue that starts only trusted step images.

clearml-agent's `K8sIntegration` makes a pod for every task it takes from its queue, in the
image the task names and with the environment its container arguments (`-e NAME=value`) name:
whoever can enqueue a task chooses what runs next to the credentials of the pod template. This
glue checks each task before its pod is applied, in `apply_template_and_handle_result` (and
again in `_kubectl_apply`, the one place a pod is applied):

- its image is `<MLRIG_GLUE_IMAGE_PREFIX><name>[:tag]@sha256:<digest>`: one repository right
  under the trusted prefix (so `<prefix>mr-7/train` is not), pinned by digest;
- its container arguments are only `-e NAME=value` with NAME among MLRIG_GLUE_TASK_ENVIRONMENT,
  and never a name the pod template sets (its credentials and endpoints);
- it has no setup script (never run: the pod runs its image's own entrypoint).

The pod's environment then names its image (`MLRIG_IMAGE`), so the step's MLflow run records
the image it ran in.

A refused task gets no pod: it is marked failed with the reason as its status reason (and in
its log). The pod always runs the image's own entrypoint, whatever K8S_GLUE_POD_USE_IMAGE_ENTRYPOINT
says, so a task's script is never run. The glue refuses to start when clearml-agent lacks a
method it hooks, or when no prefix is set.

It runs in the glue's image (Python, clearml-agent, kubectl) and imports nothing of mlrig. The
chart mounts it with the queue's pod template (`helm/mlrig/templates/agent-*.yaml`).
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from clearml_agent.glue.k8s import K8sIntegration

#: the K8sIntegration methods this glue overrides: without one of them, a task would choose its
#: image or run its script, so the glue does not start on such a clearml-agent
HOOKED_METHODS = (
    "apply_template_and_handle_result",
    "_kubectl_apply",
    "use_image_entrypoint",
    "get_default_docker_image",
)
ENVIRONMENT_FLAGS = ("-e", "--env")
#: the variable that names the pod's image to its step (mlrig's settings read it)
IMAGE_VARIABLE = "MLRIG_IMAGE"
#: a repository path component and a tag, as the OCI distribution spec writes them
PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
DIGEST = r"sha256:[a-f0-9]{64}"
ENVIRONMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: how long a task's status reason may be (the whole reason is in the task's log)
STATUS_REASON_LENGTH = 1000


def template_environment(template: Mapping[str, Any]) -> set[str]:
    """The names of the variables the pod template sets on its (first) container."""
    spec = template.get("spec") or {}
    if "template" in spec:  # a Job's template
        spec = spec["template"].get("spec") or {}
    containers = spec.get("containers") or [{}]
    return {str(variable.get("name")) for variable in containers[0].get("env") or []}


class TaskPolicy:
    """What a task may ask of its pod: an image from the trusted prefix by digest, and only the
    environment variables it is allowed to set."""

    def __init__(self, image_prefix: str, task_environment: Iterable[str]) -> None:
        if not image_prefix.strip("/"):
            raise ValueError(
                "MLRIG_GLUE_IMAGE_PREFIX is empty: set agent.trustedImages.prefix to the registry "
                "path the step images are pushed to (e.g. registry.example.com/team/mlrig/steps/)"
            )
        self.image_prefix = image_prefix.rstrip("/") + "/"
        self.task_environment = sorted(name for name in task_environment if name)
        self.trusted_image = re.compile(
            re.escape(self.image_prefix) + PATH_COMPONENT + "(?::" + TAG + ")?@" + DIGEST
        )

    def image_refusal(self, image: str | None) -> str | None:
        """Why the image is refused, or None."""
        wanted = f"{self.image_prefix}<name>@sha256:<digest>"
        if not image:
            return f"the task names no image: only {wanted} runs"
        if self.trusted_image.fullmatch(image):
            return None
        if not image.startswith(self.image_prefix):
            return (
                f"image {image} is not from the trusted registry prefix {self.image_prefix}: "
                f"only {wanted} runs"
            )
        if "@sha256:" not in image:
            return f"image {image} is not pinned by digest (a tag can move): only {wanted} runs"
        return (
            f"image {image} is not one repository under {self.image_prefix} by digest: "
            f"only {wanted} runs"
        )

    def environment_refusals(self, arguments: list[str], template_names: set[str]) -> list[str]:
        """Why the task's container arguments are refused (none: they are `-e NAME=value` with
        allowed names, none of them the template's)."""
        refusals, words = [], list(arguments)
        while words:
            flag = words.pop(0)
            if flag not in ENVIRONMENT_FLAGS or not words:
                refusals.append(
                    f"container argument {flag!r} is not -e NAME=value: a task sets only "
                    "environment variables"
                )
                continue
            name, equals, _ = words.pop(0).partition("=")
            if not (ENVIRONMENT_NAME.fullmatch(name) and equals):
                refusals.append(f"-e {name!r} is not NAME=value")
            elif name in template_names:
                refusals.append(
                    f"the task sets {name}, which the pod template sets (the chart's settings and "
                    "credentials): a task cannot override it"
                )
            elif name not in self.task_environment:
                refusals.append(
                    "the task sets {}, which a task may not set (allowed: {}; "
                    "agent.taskEnvironment)".format(name, ", ".join(self.task_environment))
                )
        return refusals

    def refusal(
        self,
        image: str | None,
        arguments: Any,
        setup_script: Any,
        template: Mapping[str, Any],
    ) -> str | None:
        """Why a task's pod is not made (every problem, `; `-joined), or None."""
        if isinstance(arguments, str):
            arguments = shlex.split(arguments)
        refusals = [self.image_refusal(image)]
        refusals += self.environment_refusals(list(arguments or []), template_environment(template))
        if str(setup_script or "").strip():
            refusals.append("the task has a setup shell script, which this glue never runs")
        problems = [refusal for refusal in refusals if refusal]
        return "; ".join(problems) or None


def policy_from_environment(environment: Mapping[str, str]) -> TaskPolicy:
    """The policy the chart sets: MLRIG_GLUE_IMAGE_PREFIX and MLRIG_GLUE_TASK_ENVIRONMENT."""
    return TaskPolicy(
        environment.get("MLRIG_GLUE_IMAGE_PREFIX", ""),
        environment.get("MLRIG_GLUE_TASK_ENVIRONMENT", "").split(","),
    )


def bound_arguments(method: Any, glue: Any, args: Any, kwargs: Any) -> Mapping[str, Any]:
    """A call's arguments by name (defaults included), however clearml-agent passes them."""
    call = inspect.signature(method).bind(glue, *args, **kwargs)
    call.apply_defaults()
    return call.arguments


class TrustedImageGlue(K8sIntegration):
    """K8sIntegration that applies a task's pod only when `TaskPolicy` accepts the task."""

    def __init__(self, policy: TaskPolicy, **kwargs: Any) -> None:
        self.mlrig_policy = policy
        super().__init__(**kwargs)

    def use_image_entrypoint(self, *args: Any, **kwargs: Any) -> bool:
        """Always: the pod runs the trusted image's entrypoint, never the task's script."""
        return True

    def get_default_docker_image(self, session: Any, queue: str) -> str:
        """No default: a task without an image is refused, not given clearml-agent's."""
        return ""

    def apply_template_and_handle_result(self, *args: Any, **kwargs: Any) -> Any:
        """Apply the task's pod, unless the policy refuses the task: then fail it with why."""
        call = bound_arguments(K8sIntegration.apply_template_and_handle_result, self, args, kwargs)
        refusal = self.mlrig_policy.refusal(
            call["docker_image"], call["docker_args"], call["docker_bash"], call["template"]
        )
        if refusal:
            self.refuse_task(call["session"], call["task_session"], call["task_id"], refusal)
            return None
        return super().apply_template_and_handle_result(*args, **kwargs)

    def _kubectl_apply(self, *args: Any, **kwargs: Any) -> Any:
        """The pod itself, checked again where it is applied: a refused one is an error."""
        call = bound_arguments(K8sIntegration._kubectl_apply, self, args, kwargs)
        refusal = self.mlrig_policy.refusal(
            call["docker_image"], call["docker_args"], call["docker_bash"], call["template"]
        )
        if refusal:
            return "", "refused by the mlrig glue: " + refusal, None
        # the image the step runs in, for its MLflow run (mlrig.image, what `mlrig reproduce`
        # reruns it in): the glue's word for the image it checked, which no task may set
        arguments = {name: value for name, value in call.items() if name != "self"}
        image = f"{IMAGE_VARIABLE}={arguments['docker_image']}"
        arguments["docker_args"] = [*(arguments["docker_args"] or []), "-e", image]
        return super()._kubectl_apply(**arguments)

    def refuse_task(self, session: Any, task_session: Any, task_id: str, reason: str) -> None:
        """Mark a task failed with the reason (its status reason, and a line in its log), and
        take it out of the glue's pending queue, as clearml-agent does when kubectl fails."""
        message = f"mlrig glue refused task {task_id}: {reason}"
        print(message, flush=True)
        try:  # the log line helps; the status reason is what must land
            self.send_logs(task_id, [message], level="ERROR", session=task_session)
        except Exception as error:
            print(f"could not add it to the task's log: {error}", flush=True)
        try:
            self._session.api_client.queues.remove_task(
                task=task_id, queue=self.k8s_pending_queue_id
            )
        except Exception as error:
            print(f"could not take it out of the pending queue: {error}", flush=True)
        try:
            session.api_client.tasks.failed(
                task=task_id,
                force=True,
                status_reason=reason[:STATUS_REASON_LENGTH],
                status_message="refused by the mlrig glue",
            )
        except Exception as error:  # the glue serves on; the task has no pod either way
            print(f"could not mark it failed: {error}", flush=True)


def missing_hooks() -> list[str]:
    """The hooked methods this clearml-agent's K8sIntegration lacks."""
    return [name for name in HOOKED_METHODS if not callable(getattr(K8sIntegration, name, None))]


def main() -> int:
    """Serve the queues of MLRIG_GLUE_QUEUES with the pod template MLRIG_GLUE_TEMPLATE."""
    missing = missing_hooks()
    if missing:
        print(
            "This clearml-agent's K8sIntegration has no {}: the mlrig glue could not check the "
            "tasks' images, so it does not start. Use clearml-agent 3.0.3 in the glue's image "
            "(agent.image).".format(", ".join(missing)),
            file=sys.stderr,
        )
        return 2
    try:
        policy = policy_from_environment(os.environ)
    except ValueError as error:
        print(f"The mlrig glue does not start: {error}.", file=sys.stderr)
        return 2
    queues = [queue for queue in os.environ["MLRIG_GLUE_QUEUES"].split(",") if queue]
    glue = TrustedImageGlue(
        policy,
        template_yaml=os.environ["MLRIG_GLUE_TEMPLATE"],
        namespace=os.environ["MLRIG_GLUE_NAMESPACE"],
        max_pods_limit=int(os.environ["MLRIG_GLUE_MAX_PODS"]),
    )
    glue.k8s_daemon(queues, create_queue=os.environ["MLRIG_GLUE_CREATE_QUEUES"] == "true")
    return 0


if __name__ == "__main__":
    sys.exit(main())
