"""What a container or a pod runs, each its own console script apart from the user's CLI.

`mlrig-stage` (`stage.py`) is a step image's entrypoint: one DVC stage in a fresh workspace, or a
ClearML step's stage in its pod. `controller.py` is what a ClearML services agent runs: the
pipeline's controller. They sit above the library, beside `mlrig.cli`, and do no work of their
own: they read their arguments and environment and call it.
"""
