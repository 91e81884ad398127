"""DVC, the one place mlrig drives it: the repository, opened only here (`repo.open_repo`), what
changed and who holds its locks (`repo.py`); its DAG (`dag.py`); what each stage reads and makes
(`stages.py`); its commands, one way per need (`commands.py`); the remote, resolved once
(`remote.py`); `dvc.lock`'s entries (`lockfile.py`); the outputs hashed again against the lock
(`integrity.py`) and the stages' code deps (`code_deps.py`). Callers ask these modules; they do
not open DVC's repository nor start dvc themselves.

DVC itself is imported inside functions, so `mlrig --help` stays fast.
"""
