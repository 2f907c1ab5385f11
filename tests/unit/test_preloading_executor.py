"""The executor the embedded platform runs: LocalExecutor plus the tasks' modules imported before the fork."""

from __future__ import annotations

import sys

from airflow.executors.local_executor import LocalExecutor

from flightdeck import preloading_executor


def test_preload_imports_what_the_tasks_import_and_skips_what_fails(caplog):
    sys.modules.pop("json.tool", None)
    took = preloading_executor.preload(("json.tool", "flightdeck.no_such_module"))
    assert "json.tool" in sys.modules
    assert set(took) == {"json.tool"} and took["json.tool"] >= 0
    assert "could not import flightdeck.no_such_module" in caplog.text


def test_every_listed_module_exists_in_this_environment():
    import importlib.util

    missing = [m for m in preloading_executor.PRELOAD_MODULES if importlib.util.find_spec(m) is None]
    assert missing == []


def test_it_is_a_local_executor_for_airflow_standalone():
    assert issubclass(preloading_executor.PreloadingLocalExecutor, LocalExecutor)
    assert preloading_executor.PreloadingLocalExecutor.is_local
