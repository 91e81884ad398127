"""DVC, the one place mlrig drives it: the repository and its locks (`repo.py`), its DAG
(`dag.py`), its commands (`commands.py`), `dvc.lock`'s entries (`lockfile.py`), the outputs
hashed again against the lock (`integrity.py`) and the stages' code deps (`code_deps.py`).

DVC itself is imported inside functions, so `mlrig --help` stays fast.
"""
