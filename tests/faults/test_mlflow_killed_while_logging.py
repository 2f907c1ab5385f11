"""MLflow SIGKILLed while the retrain's `train` task logs its run, then restarted through the supervisor:
the task fails, Airflow retries it, the run finishes, and the lineage holds exactly one good training run
and one registered version.

The kill is timed on MLflow itself: the test polls the lineage's experiment for this dag run's training
run and kills MLflow as soon as that run exists and is not complete (params, nested candidate runs,
metrics, artifacts and the model are being logged), and restarts it at once: MLflow is down longer than
the client's own HTTP retries last, so the attempt fails. The run finishes by the task's retries, or, when
MLflow's restart outlasts them (2 retries 20 s apart; MLflow starts in 15-50 s here, by load), by clearing
`train` (with downstream) once MLflow answers; the test prints which.

Counts (MLflow, ViewType.ALL, training runs tagged with this dag run): active runs == 1, FINISHED and
complete; the half-logged run of the killed attempt is found deleted (log_training_run deletes an
incomplete run of the same dag run on retry) and never counted; registered versions of the model == 1,
pointing at the complete run; the train task ran more than once.
"""

from __future__ import annotations

import time
import uuid

import pytest

from flightdeck import pipeline_config, tracking
from flightdeck.data import land
from flightdeck.data.store import ObjectStore
from tests.support import faults

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

DAG = "retrain"
NS = f"fault-mlflow-{uuid.uuid4().hex[:8]}"
MODEL = f"fault-retrain-{NS}"
CONF = {"dataset": "breast_cancer", "namespace": NS, "model_name": MODEL, "force": False}


def _training_runs(cfg, run_id: str, view: str = "ALL") -> list:
    from mlflow.entities import ViewType

    cl = tracking.client()
    exp = cl.get_experiment_by_name(cfg.experiment_name)
    if exp is None:
        return []
    query = f"tags.`{tracking.TAG_RUN_ID}` = '{run_id}' and tags.`{tracking.TAG_ROLE}` = 'training'"
    return list(cl.search_runs([exp.experiment_id], query, run_view_type=getattr(ViewType, view), max_results=100))


def _wait_for_logging_run(cfg, airflow, run_id: str, timeout_s: float = 300) -> str:
    """The MLflow run id of this dag run's training run, as soon as it exists incomplete."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            for run in _training_runs(cfg, run_id, "ACTIVE_ONLY"):
                if run.data.tags.get(tracking.TAG_COMPLETE) != "true":
                    return run.info.run_id
        except Exception:  # the experiment appears with the run; a search can race its creation
            pass
        state = airflow.task_states(DAG, run_id).get("train")
        assert state not in ("success", "failed", "upstream_failed"), airflow.task_states(DAG, run_id)
        time.sleep(0.2)
    raise AssertionError(f"no training run of {run_id} appeared in MLflow in {timeout_s} s")


def _tries(airflow, run_id: str, task_id: str) -> int:
    return airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task_id}")["try_number"]


def test_mlflow_crash_while_logging_is_retried_to_one_run_and_one_version(platform, airflow):
    t0 = time.monotonic()
    cfg = pipeline_config.load("breast_cancer", model_name=MODEL, namespace=NS)
    land.land(cfg, ObjectStore())
    run_id = airflow.trigger(DAG, CONF)
    killed_run = _wait_for_logging_run(cfg, airflow, run_id)
    faults.kill("mlflow")
    # MLflow takes ~15-20 s to answer again: longer than the client's own retries (~6 s), so the attempt
    # fails; the task's retry (retry_delay 20 s) finds it up
    restarted_in = faults.restart("mlflow")
    state = airflow.wait(DAG, run_id, timeout=600)
    states = airflow.task_states(DAG, run_id)
    cleared = False
    if state == "failed" and states["train"] == "failed":
        # the retries (2, 20 s apart) ran out while MLflow was still starting (15-50 s here, by load): clear
        # `train` and what follows, as an operator would once MLflow answers
        airflow.clear_task(DAG, run_id, "train", include_downstream=True)
        cleared = True
        time.sleep(3)
        state = airflow.wait(DAG, run_id, timeout=600)
        states = airflow.task_states(DAG, run_id)
    assert state == "success", (states, airflow.task_log(DAG, run_id, "train", try_number=2)[-3000:])

    runs = _training_runs(cfg, run_id)
    active = [r for r in runs if r.info.lifecycle_stage == "active"]
    deleted = [r for r in runs if r.info.lifecycle_stage == "deleted"]
    versions = tracking.client().search_model_versions(f"name = '{MODEL}'")
    tries = _tries(airflow, run_id, "train")
    print(
        f"\nMLflow killed while run {killed_run} was being logged; "
        f"(MLflow restarted in {restarted_in:.1f} s after the kill); "
        f"train tries {tries}, cleared after its retries ran out: {cleared}; "
        f"training runs of this dag run: {len(active)} active "
        f"{[(r.info.run_id, r.info.status, r.data.tags.get(tracking.TAG_COMPLETE)) for r in active]}, "
        f"{len(deleted)} deleted {[(r.info.run_id, r.info.status) for r in deleted]}; "
        f"registered versions {[(v.version, v.run_id) for v in versions]}; test {time.monotonic() - t0:.1f} s"
    )
    assert tries >= 2, "train ran once: the kill did not hit the logging"
    assert len(active) == 1, [r.info.run_id for r in active]
    good = active[0]
    assert good.info.status == "FINISHED" and good.data.tags.get(tracking.TAG_COMPLETE) == "true"
    assert killed_run != good.info.run_id
    assert killed_run in {r.info.run_id for r in deleted}, "the half-logged run is neither deleted nor the good one"
    assert [v.version for v in versions] == ["1"] and versions[0].run_id == good.info.run_id
    assert states["register"] == "success"
