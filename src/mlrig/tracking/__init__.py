"""MLflow and ClearML: the per-step facade (`step_run.py`), the pipeline's parent run
(`parent_run.py`), what the configured store holds of the cached results (`recorded.py`), and
ClearML's offline sessions (`clearml_sessions.py`) and what each use of a ClearML server needs
(`clearml_server.py`)."""
