"""The plumbing, for real: a DAG run through the scheduler writes to S3, logs to MLflow, and its log lands in S3."""

from __future__ import annotations

import json
import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from flightdeck import s3 as s3_mod
from flightdeck.platform_check import PROBE_EXPERIMENT


@pytest.fixture(scope="module")
def check_run(airflow):
    run_id = airflow.trigger("platform_check")
    state = airflow.wait("platform_check", run_id, timeout=300)
    return run_id, state


def test_run_succeeds_through_the_scheduler(airflow, check_run):
    run_id, state = check_run
    assert state == "success", airflow.task_states("platform_check", run_id)
    states = airflow.task_states("platform_check", run_id)
    assert states == {"write_probe": "success", "log_probe_run": "success"}


def test_probe_object_is_in_s3(platform, check_run):
    run_id, _ = check_run
    s3 = s3_mod.client()
    body = s3.get_object(Bucket=platform.data_bucket, Key=f"platform-check/{run_id}.json")["Body"].read()
    assert json.loads(body)["run_id"] == run_id


def test_mlflow_run_was_logged(platform, check_run):
    run_id, _ = check_run
    mlflow.set_tracking_uri(platform.mlflow_uri)
    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name(PROBE_EXPERIMENT).experiment_id],
        filter_string=f"tags.airflow_run_id = '{run_id}'",
    )
    assert len(runs) == 1
    assert runs[0].data.metrics["probe"] == 1.0
    assert runs[0].data.tags["probe_uri"] == f"s3://{platform.data_bucket}/platform-check/{run_id}.json"


def test_task_log_is_read_back_from_s3_remote_log_folder(platform, airflow, check_run):
    run_id, _ = check_run
    s3 = s3_mod.client()
    key = f"airflow/dag_id=platform_check/run_id={run_id}/task_id=write_probe/attempt=1.log"
    # Remote logs are uploaded when the task ends; allow the upload a moment.
    for _ in range(30):
        try:
            text = s3.get_object(Bucket=platform.logs_bucket, Key=key)["Body"].read().decode()
            break
        except s3.exceptions.NoSuchKey:
            time.sleep(1)
    else:
        pytest.fail(f"no remote log at s3://{platform.logs_bucket}/{key}")
    assert "wrote probe object" in text
    # ... and the REST API (what the UI shows) serves the same log.
    assert "wrote probe object" in airflow.task_log("platform_check", run_id, "write_probe")
