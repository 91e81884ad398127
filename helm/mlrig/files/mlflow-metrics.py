"""The MLflow pod's metrics sidecar: serves what the server's workers collect
(`mlflow server --expose-prometheus DIR`, prometheus_client's multiprocess files) on a port of
its own. MLflow's own /metrics answers its admin only, and a scraper should hold no password."""

import os
import time

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

registry = CollectorRegistry()
MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
start_http_server(int(os.environ["MLRIG_METRICS_PORT"]), registry=registry)
while True:
    time.sleep(3600)
