"""Celery mode (FLIGHTDECK_EXECUTOR=celery): a retrain's tasks spread over the workers, and a worker needs no
file another worker wrote. Selected only on a Celery-mode platform (`make test-celery` runs it there).

1. One retrain of a fresh lineage: its task instances name more than one worker (`hostname`, recorded by
   `[core] hostname_callable` = settings.worker_hostname) and every task succeeded.
2. Every worker's scratch root is wiped, then `train` and what follows are cleared: the re-run rebuilds the
   DVC workspace from S3 alone (it is a cache, data/sync.py) in the scratch root of the worker that took it,
   runs `dvc repro` there and reuses the complete MLflow run of that dag run (no duplicate run).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from flightdeck import pipeline_config, tracking
from flightdeck.data import land
from flightdeck.data.store import ObjectStore
from flightdeck.supervisor import celery_mode

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.celery,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.environ.get("FLIGHTDECK_EXECUTOR") != "celery", reason="needs the Celery-mode platform"),
]

NS = f"celery-{uuid.uuid4().hex[:8]}"
MODEL = f"e2e-celery-{NS}"
WORKERS = celery_mode.worker_names(os.environ)
STATE: dict[str, str] = {}


def _task_instances(airflow, run_id: str) -> list[dict]:
    return airflow.get(f"/dags/retrain/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]


@pytest.fixture(scope="module")
def retrained(airflow) -> str:
    cfg = pipeline_config.load("breast_cancer", model_name=MODEL, namespace=NS)
    land.land(cfg, ObjectStore())
    run_id = airflow.trigger("retrain", {"dataset": "breast_cancer", "namespace": NS, "model_name": MODEL})
    state = airflow.wait("retrain", run_id, timeout=900)
    assert state == "success", airflow.task_states("retrain", run_id)
    return run_id


def test_a_retrain_runs_its_tasks_on_more_than_one_worker(airflow, retrained):
    tis = _task_instances(airflow, retrained)
    ran = {ti["task_id"]: ti["hostname"] for ti in tis if ti["state"] == "success"}
    assert set(ran) >= {"sync_data", "train", "register", "promote"}, ran
    assert set(ran.values()) <= set(WORKERS), ran
    assert len(set(ran.values())) >= 2, f"every task ran on one worker: {ran}"


def test_a_worker_rebuilds_its_workspace_from_s3_when_no_scratch_is_left(airflow, platform, retrained):
    scratch = Path(platform.state_dir) / "workers"
    wiped = [p for p in scratch.glob("worker-*/workspace") if p.is_dir()]
    assert wiped, f"no worker scratch under {scratch}"
    for path in wiped:
        shutil.rmtree(path)
    cfg = pipeline_config.load("breast_cancer", model_name=MODEL, namespace=NS)
    experiment = tracking.client().get_experiment_by_name(cfg.experiment_name).experiment_id
    before = {r.info.run_id for r in tracking.client().search_runs([experiment])}
    airflow.clear_task("retrain", retrained, "train", include_downstream=True)
    state = airflow.wait("retrain", retrained, timeout=900)
    assert state == "success", airflow.task_states("retrain", retrained)
    train = next(ti for ti in _task_instances(airflow, retrained) if ti["task_id"] == "train")
    assert train["try_number"] >= 2 and train["hostname"] in WORKERS
    # the worker that trained again pulled the dataset from S3 into its own, new workspace and ran the pipeline
    workspace = scratch / train["hostname"] / "workspace" / cfg.key
    assert (workspace / "dvc.yaml").is_file(), f"no rebuilt workspace at {workspace}"
    log = airflow.task_log("retrain", retrained, "train", try_number=train["try_number"])
    assert f"running dvc repro in {workspace}" in log, log[-2000:]
    assert {r.info.run_id for r in tracking.client().search_runs([experiment])} == before
