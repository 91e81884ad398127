"""The servers mlrig runs for you: `local/` (PostgreSQL, S3 and MLflow on 127.0.0.1, `mlrig stack`)
and `chart.py` (the Helm chart's pods on one machine with `podman kube play`, `mlrig chart
play`)."""
