"""The ClearML executor: dvc.yaml compiled into a ClearML pipeline and handed to its queues.

`compile.py` makes the pipeline's description (one step per stage, its cache key), `submit.py`
builds the controller and submits or follows it, `store.py` is what the steps' pods share on the
DVC remote, and `pod.py` is what a step's pod does with its stage.
"""
