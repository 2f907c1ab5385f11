"""The Celery mode's worker config: Airflow's default Celery config, plus the tasks' heavy modules imported
once in each worker before it forks its pool.

Each Celery task process is forked from a pool process forked from the worker, so a module imported in the
worker at start is already in memory in every task: the retrain and deploy tasks skip the seconds each of
them pays to import pandas, scikit-learn, MLflow and the Amazon provider, as they do under the embedded
LocalExecutor (preloading_executor.py, same module list). The hook is Celery's `import_modules` signal, which
the worker sends once at start, in its main process; Airflow's Celery provider preloads its own modules on
the same signal (`on_celery_import_modules`).

Used as `AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=flightdeck.celery_config.CELERY_CONFIG` (supervisor/celery_mode.py).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import import_modules

from flightdeck.preloading_executor import preload

log = logging.getLogger(__name__)

CELERY_CONFIG: dict[str, Any] = dict(DEFAULT_CELERY_CONFIG)


@import_modules.connect
def preload_task_modules(*args: Any, **kwargs: Any) -> None:
    """Import preloading_executor.PRELOAD_MODULES in the worker before its pool forks."""
    took = preload()
    log.info("preloaded %d modules for task processes in %.1f s", len(took), sum(took.values()))
