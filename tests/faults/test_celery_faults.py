"""Faults of the Celery mode's own servers, each mid-retrain, on the running Celery-mode platform:

1. a Celery worker SIGKILLed (its whole process group, as a crashed machine) while it runs `train`: the
   scheduler finds the task without heartbeats (task_instance_heartbeat_timeout, 60 s in this mode), fails
   that try and queues a retry, which a live worker runs;
2. Postgres restarted (fast shutdown, then started again) while `train` runs: Airflow's components and
   MLflow reconnect;
3. Redis restarted while the run's tasks are queued and running: the append-only file keeps the queue, the
   workers and the scheduler reconnect to the broker.

Each time the run ends `success` (by retries, or a clear of what failed when a retry budget ran out: the test
says which) and the test counts, for the lineage: MLflow training runs (active and complete: exactly 1),
registered versions (exactly 1), and the task tries. Whatever the fault stopped is started again through the
supervisor (`up` is idempotent and starts only what is down) before the test ends.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

import pytest

from flightdeck import pipeline_config, tracking
from flightdeck.data import land
from flightdeck.data.store import ObjectStore
from flightdeck.supervisor import process
from tests.support import faults

pytestmark = [
    pytest.mark.faults,
    pytest.mark.celery,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(os.environ.get("FLIGHTDECK_EXECUTOR") != "celery", reason="needs the Celery-mode platform"),
]

DAG = "retrain"


def _lineage(label: str) -> tuple[pipeline_config.DatasetConfig, dict]:
    ns = f"fault-{label}-{uuid.uuid4().hex[:8]}"
    model = f"fault-celery-{ns}"
    cfg = pipeline_config.load("breast_cancer", model_name=model, namespace=ns)
    land.land(cfg, ObjectStore())
    return cfg, {"dataset": "breast_cancer", "namespace": ns, "model_name": model}


def _task_instance(airflow, run_id: str, task_id: str) -> dict:
    tis = airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]
    return next(ti for ti in tis if ti["task_id"] == task_id)


def _when_running(airflow, run_id: str, task_id: str, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ti = _task_instance(airflow, run_id, task_id)
        if ti["state"] == "running" and ti.get("hostname"):
            return ti
        assert ti["state"] not in ("success", "failed", "upstream_failed", "skipped"), ti
        time.sleep(0.5)
    raise AssertionError(f"{task_id} of {run_id} never ran within {timeout_s} s")


def _finish(airflow, run_id: str, timeout_s: float = 900) -> str:
    """Wait for the run; when it failed (a retry budget spent while a server was down), clear what failed
    once, as a user would. Returns how it finished: "by retries" or "by a clear"."""
    state = airflow.wait(DAG, run_id, timeout=timeout_s)
    if state == "success":
        return "by retries"
    failed = [t for t, s in airflow.task_states(DAG, run_id).items() if s in ("failed", "upstream_failed")]
    assert failed, (state, airflow.task_states(DAG, run_id))
    airflow.clear_task(DAG, run_id, failed[0], only_failed=True, include_downstream=True)
    state = airflow.wait(DAG, run_id, timeout=timeout_s)
    assert state == "success", airflow.task_states(DAG, run_id)
    return "by a clear"


def _counts(cfg: pipeline_config.DatasetConfig, run_id: str) -> tuple[int, int]:
    """(complete training runs of this dag run, registered versions of the model)."""
    cl = tracking.client()
    exp = cl.get_experiment_by_name(cfg.experiment_name)
    query = f"tags.`{tracking.TAG_RUN_ID}` = '{run_id}' and tags.`{tracking.TAG_ROLE}` = 'training'"
    runs = cl.search_runs([exp.experiment_id], query, max_results=100)
    assert all(r.data.tags.get(tracking.TAG_COMPLETE) == "true" for r in runs), [r.info.run_id for r in runs]
    versions = cl.search_model_versions(f"name = '{cfg.model_name}'")
    return len(runs), len(versions)


def _up() -> None:
    faults.instance().up()  # starts only what is down, waits for every component and worker


def _fault_mid_train(
    airflow, label: str, fault: Callable[[dict], None], restore: Callable[[str], None] | None = None
) -> tuple[str, dict]:
    """Trigger a retrain of a fresh lineage, apply `fault` to its running `train` task instance, bring the
    platform back up (`restore(run_id)` first when given: it decides when), finish the run and count."""
    cfg, conf = _lineage(label)
    run_id = airflow.trigger(DAG, conf)
    running = _when_running(airflow, run_id, "train")
    try:
        fault(running)
        if restore is not None:
            restore(run_id)
    finally:
        _up()
    how = _finish(airflow, run_id)
    runs, versions = _counts(cfg, run_id)
    train = _task_instance(airflow, run_id, "train")
    print(f"{label}: finished {how}; train ran {train['try_number']} time(s); runs {runs}, versions {versions}")
    assert (runs, versions) == (1, 1)
    return how, train


def test_a_worker_killed_mid_task_is_retried_on_a_live_worker(airflow):
    killed: dict[str, object] = {}

    def kill_worker(ti: dict) -> None:
        killed["worker"] = ti["hostname"]
        killed["groups"] = faults.kill_with_tasks(f"airflow-{ti['hostname']}")

    def after_the_retry_started(run_id: str) -> None:
        # the killed worker stays down until the retry runs, so the retry can only be on a live one
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            ti = _task_instance(airflow, run_id, "train")
            if ti["try_number"] >= 2 and ti["state"] in ("running", "success"):
                return
            time.sleep(1)
        raise AssertionError(f"train was not retried within 600 s: {_task_instance(airflow, run_id, 'train')}")

    how, train = _fault_mid_train(airflow, "worker", kill_worker, restore=after_the_retry_started)
    assert how == "by retries"
    assert train["try_number"] >= 2 and train["hostname"] != killed["worker"], (killed, train)
    assert not any(process.group_alive(g) for g in killed["groups"]), "a process of the killed try survived"


def test_postgres_restarted_mid_run_the_run_finishes(airflow):
    def restart_postgres(_: dict) -> None:
        service = faults.instance().services["postgres"]
        process.stop(service)  # SIGINT, Postgres' fast shutdown: every client is disconnected
        time.sleep(3)

    _fault_mid_train(airflow, "postgres", restart_postgres)


def test_redis_restarted_mid_run_the_run_finishes(airflow):
    def restart_redis(_: dict) -> None:
        process.stop(faults.instance().services["redis"])
        time.sleep(3)

    _fault_mid_train(airflow, "redis", restart_redis)
