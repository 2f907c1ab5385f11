"""The Celery mode's worker config: Airflow's defaults unchanged, and the task modules preloaded when the worker
sends Celery's import_modules signal (once, in its main process, before the pool forks)."""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import import_modules

from flightdeck import celery_config, preloading_executor


def test_the_config_is_airflows_default_in_a_copy():
    assert celery_config.CELERY_CONFIG == DEFAULT_CELERY_CONFIG
    assert celery_config.CELERY_CONFIG is not DEFAULT_CELERY_CONFIG  # ours to extend, Airflow's left alone


def test_the_worker_start_signal_preloads_the_task_modules(monkeypatch):
    imported: list[tuple[str, ...]] = []
    monkeypatch.setattr(preloading_executor.importlib, "import_module", lambda name: imported.append(name))
    import_modules.send(sender=None)
    assert tuple(imported) == preloading_executor.PRELOAD_MODULES
