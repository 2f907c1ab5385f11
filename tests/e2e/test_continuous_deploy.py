"""Continuous deployment, opt-in, through the running scheduler: a landed batch becomes a live version via the
canary with nobody triggering the deploy; with it off, a promotion deploys nothing.

The retrain is triggered here as its daily schedule would start it; everything after (promotion, the champion
Asset event, the continuous_deploy DAG, the deploy DAG run, the canary) happens without a person.
Order matters (module state): on (v1 goes live), then off (v2 is promoted and stays undeployed).
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from flightdeck import pipeline_config, tracking
from flightdeck import s3 as s3_mod
from flightdeck.data import land
from flightdeck.data.store import ObjectStore
from flightdeck.deploy import records as rec
from tests.support.params_file import params_changed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

NS = f"cd-{uuid.uuid4().hex[:8]}"
MODEL = f"e2e-cd-{NS}"
CONF = {"dataset": "breast_cancer", "namespace": NS, "model_name": MODEL}
ON = {"enabled": True, "target": "local", "strategy": "canary", "canary_percent": 50, "canary_steps": 2}
ON_FAST = {**ON, "bake_seconds": 6}


def _retrain(airflow) -> tuple[str, str]:
    """Land the next batch and run the retrain; (its run id, when it started)."""
    land.land(pipeline_config.load("breast_cancer", model_name=MODEL, namespace=NS), ObjectStore())
    run_id = airflow.trigger("retrain", CONF)
    state = airflow.wait("retrain", run_id, timeout=900)
    assert state == "success", airflow.task_states("retrain", run_id)
    assert airflow.task_states("retrain", run_id)["promote"] == "success"
    return run_id, airflow.get(f"/dags/retrain/dagRuns/{run_id}")["start_date"]


def _continuous_run(airflow, after: str) -> str:
    """The continuous_deploy run the promotion started (asset-triggered, after `after`), waited to its end."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        runs = airflow.get("/dags/continuous_deploy/dagRuns", order_by="-start_date", limit=10)["dag_runs"]
        mine = [r for r in runs if r["run_type"] == "asset_triggered" and (r.get("start_date") or "") >= after]
        if mine:
            run_id = mine[0]["dag_run_id"]
            assert airflow.wait("continuous_deploy", run_id, timeout=300) == "success"
            return run_id
        time.sleep(3)
    raise AssertionError("the promotion started no continuous_deploy run")


def _deploy_runs(airflow) -> list[dict]:
    runs = airflow.get("/dags/deploy/dagRuns", order_by="-start_date", limit=50)["dag_runs"]
    return [r for r in runs if (r.get("conf") or {}).get("model_name") == MODEL]


@pytest.fixture(scope="module", autouse=True)
def unpaused(airflow, platform):
    airflow.wait_for_dag("continuous_deploy")
    airflow.patch("/dags/continuous_deploy", {"is_paused": False})
    airflow.wait_for_dag("deploy")
    airflow.patch("/dags/deploy", {"is_paused": False})


def test_on_a_landed_batch_goes_live_through_the_canary(airflow, platform):
    with params_changed({"continuous_deploy": ON_FAST}):
        _, started = _retrain(airflow)
        version = tracking.client().get_model_version_by_alias(MODEL, "champion").version
        cd_run = _continuous_run(airflow, started)
        assert airflow.task_states("continuous_deploy", cd_run)["deploy[0]"] == "success"
        deadline = time.monotonic() + 60
        while not _deploy_runs(airflow) and time.monotonic() < deadline:
            time.sleep(2)
        runs = _deploy_runs(airflow)
        assert len(runs) == 1, runs
        deploy_run = runs[0]["dag_run_id"]
        assert runs[0]["conf"]["model"] == version and runs[0]["conf"]["strategy"] == "canary"
        assert airflow.wait("deploy", deploy_run, timeout=900) == "success", airflow.task_states("deploy", deploy_run)
    states = airflow.task_states("deploy", deploy_run)
    assert states["shift_1"] == "success" and states["shift_2"] == "success"  # 50 %, then 100 %
    served = requests.get(f"{platform.lb_url}/version", timeout=5).json()
    assert (served["model_name"], str(served["model_version"])) == (MODEL, version)
    record = rec.RecordStore(s3_mod.client(), platform.deploy_bucket).get("local", rec.deployment_id(deploy_run))
    assert record.outcome is rec.Outcome.SUCCEEDED and record.spec.strategy == "canary"


def test_off_a_promotion_deploys_nothing(airflow, platform):
    before = len(_deploy_runs(airflow))
    # a negative margin makes sure the second model is promoted, so an event does reach continuous_deploy
    with params_changed({"gates": {"champion": {"min_delta": -1.0}}}):
        _, started = _retrain(airflow)
    version = tracking.client().get_model_version_by_alias(MODEL, "champion").version
    assert version == "2"
    cd_run = _continuous_run(airflow, started)
    assert airflow.task_states("continuous_deploy", cd_run)["deploy"] == "skipped"
    assert "continuous deployment is off" in airflow.task_log("continuous_deploy", cd_run, "plan")
    time.sleep(5)
    assert len(_deploy_runs(airflow)) == before
    served = requests.get(f"{platform.lb_url}/version", timeout=5).json()
    assert str(served["model_version"]) != "2" or served["model_name"] != MODEL
