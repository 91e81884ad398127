"""The ClearML executor: dvc.yaml compiled into a ClearML pipeline and handed to its queues.

`compile.py` makes the pipeline's description (one step per stage, its cache key), `submit.py`
builds the controller and submits or follows it, `submission.py` is what one submission tells its
controller and its steps' pods (the MLflow parent run, kept on the controller's task), `store.py`
is what the steps' pods share on the DVC remote, and `pod.py` is what a step's pod does with its
stage.
"""
