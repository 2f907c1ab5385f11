"""Airflow's LocalExecutor with the tasks' heavy modules imported once, before it forks its workers.

With fork (Linux's default start method) the LocalExecutor forks its worker processes from the
scheduler when it starts, and each task process is forked from a worker. A module imported before
that first fork is already in memory in every task process: the retrain and deploy tasks then skip
the 1-2 s each of them paid to import pandas, scikit-learn, MLflow and the Amazon provider. This is
what Airflow's CeleryExecutor does for its own modules (`celery_import_modules`, apache/airflow#11956).

Used by the embedded platform as `AIRFLOW__CORE__EXECUTOR=flightdeck.preloading_executor.PreloadingLocalExecutor`;
it behaves as the LocalExecutor in every other way (and is one for `airflow standalone`'s check).
A module that fails to import is logged and skipped: the task that needs it imports it (and fails)
as it would without the preload.
"""

from __future__ import annotations

import importlib
import logging
import time
import warnings

from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger(__name__)

# What the retrain and deploy tasks import (measured with `python -X importtime`), heaviest first.
PRELOAD_MODULES: tuple[str, ...] = (
    "sklearn.base",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.pipeline",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.datasets",
    "skops.io",
    "pandas",
    "pyarrow.parquet",
    "mlflow",
    "mlflow.tracking",
    "mlflow.sklearn",
    "mlflow.models",
    "dvc.repo",
    "airflow.providers.amazon.aws.hooks.s3",
    "flightdeck.retrain",
    "flightdeck.tracking",
    "flightdeck.model_registry",
    "flightdeck.gates",
    "flightdeck.modeling",
    "flightdeck.data.sync",
    "flightdeck.data.store",
    "docker",
    "flightdeck.images",
    "flightdeck.deploy.steps",
)


def preload(modules: tuple[str, ...] = PRELOAD_MODULES) -> dict[str, float]:
    """Import `modules`; returns module -> seconds it took (modules that failed to import are left out)."""
    took: dict[str, float] = {}
    for name in modules:
        start = time.perf_counter()
        try:
            # skops.io looks scipy's ufuncs up in every loaded module at import: in a process that holds
            # Airflow, that getattr()s each of Airflow's deprecation shims, a warning apiece (~1,000 lines).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(name)
        except Exception as exc:  # a task that needs it will raise the real error itself
            log.warning("preload: could not import %s (%s: %s)", name, type(exc).__name__, exc)
            continue
        took[name] = time.perf_counter() - start
    return took


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor that imports PRELOAD_MODULES before forking its workers (fork start method only)."""

    def start(self) -> None:
        """Preload, then start the workers as LocalExecutor does."""
        if self.is_mp_using_fork:
            took = preload()
            log.info("preloaded %d modules for task processes in %.1f s", len(took), sum(took.values()))
        super().start()
