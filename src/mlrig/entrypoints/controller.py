"""What a ClearML services agent runs: the pipeline's controller, built from its description.

`mlrig clearml pipeline` starts this module in a process of its own (ClearML's
`PipelineController.start` ends its process), and the agent that dequeues the controller runs
it again, reading the description and the submission stored on the controller's task; there it
runs the pipeline to its end and, unless the submitter follows it, ends its MLflow parent run.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    """`python -m mlrig.entrypoints.controller DESCRIPTION SERVICES_QUEUE SUBMISSION`."""
    from mlrig.executors.clearml.submit import start_controller

    start_controller(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))


if __name__ == "__main__":
    main()
