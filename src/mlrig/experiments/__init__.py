"""The experiment side: `params.yaml`'s schema (`params.py`), the tables steps hand on
(`tables.py`), metrics and the results steps leave (`metrics.py`, `results.py`), and the
preflight that checks them all before any stage runs (`preflight.py`)."""
