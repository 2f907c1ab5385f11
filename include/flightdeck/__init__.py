"""Flightdeck: the platform as a plain Python package (data, training, gates, registry, deploy; no Airflow import)."""

import os

# MLflow's telemetry (on by default) fetches its config in a background thread; when that fails, as on a machine
# without internet, the thread pops _MLFLOW_TELEMETRY_SESSION_ID from os.environ while the main thread's `requests`
# iterates os.environ for proxies: KeyError, and the MLflow call fails (a retrain's `train` task failed so). Off
# before any flightdeck module imports mlflow (the executor preloads flightdeck first); a value already set is kept.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
