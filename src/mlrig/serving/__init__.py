"""Serving the champion: MLflow's scoring server on the registered model an alias names
(server.py), and what the CLI asks of a running server or a serving Deployment (rollout.py)."""
