"""The executors of `mlrig run`, one module each, chosen by name from `registry.EXECUTORS`.

`base.py` is the seam (what a run asks of an executor), `scheduler.py` walks the DAG for the
executors that start stages themselves, `local.py` (with its warm server, `warm.py`) and
`containers.py` are those executors, `workspace.py` is what a stage container does, and
`clearml/` hands the pipeline to ClearML's queues. This package's face imports nothing: a step
command imports `warm.py` from here and must start in milliseconds.
"""
