"""A regression and a user's own training code through the scheduler and the load balancer.

- scikit-learn's bundled diabetes as a regression: the threshold gate bounds rmse from above (lower is
  better), the model is promoted, deployed and answers a float;
- a dataset whose model is `train.entrypoint` (tests/support/user_training/churn_training.py, logged with
  its code): promoted, deployed, and served with the user's class loaded from the model's own code.
Each runs in its own namespace and registry name; params.yaml gets the entrypoint dataset for the duration.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import requests

from flightdeck import pipeline_config, tracking
from flightdeck.data import land, onboard
from flightdeck.data.store import ObjectStore
from tests.support.own_data import customers

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
NS = f"e2e-own-{uuid.uuid4().hex[:6]}"
FAST = {"bake_seconds": 4, "step_seconds": 2, "healthy_timeout_seconds": 90, "min_requests": 10}


def _failed_logs(airflow, dag: str, run_id: str) -> str:
    states = airflow.task_states(dag, run_id)
    failed = [t for t, state in states.items() if state == "failed"]
    return f"{states}\n" + "\n".join(airflow.task_log(dag, run_id, t)[-3000:] for t in failed)


def _retrain_and_deploy(airflow, dataset: str, model: str) -> tuple[str, str]:
    run_id = airflow.trigger("retrain", {"dataset": dataset, "namespace": NS, "model_name": model, "force": False})
    assert airflow.wait("retrain", run_id, timeout=900) == "success", _failed_logs(airflow, "retrain", run_id)
    assert airflow.task_states("retrain", run_id)["promote"] == "success"
    deploy = airflow.trigger("deploy", {"model_name": model, "model": "champion", "target": "local", **FAST})
    assert airflow.wait("deploy", deploy, timeout=900) == "success", _failed_logs(airflow, "deploy", deploy)
    return run_id, deploy


def test_diabetes_regression_is_gated_on_rmse_promoted_and_served_as_floats(airflow, platform):
    model = f"{NS}-diabetes"
    cfg = pipeline_config.load("diabetes", model_name=model, namespace=NS)
    land.land(cfg, ObjectStore())
    run_id, _ = _retrain_and_deploy(airflow, "diabetes", model)
    gate_log = airflow.task_log("retrain", run_id, "threshold_gate")
    assert "GATE PASSED" in gate_log and "rmse=" in gate_log and "(max)" in gate_log
    version = tracking.client().get_model_version_by_alias(model, "champion")
    assert tracking.client().get_run(version.run_id).data.metrics["rmse"] <= 65.0
    live = requests.get(f"{platform.lb_url}/version", timeout=5).json()
    assert live["model_name"] == model and str(live["model_version"]) == version.version
    row = {
        "age": 0.02,
        "sex": -0.04,
        "bmi": 0.06,
        "bp": 0.02,
        "s1": -0.04,
        "s2": -0.03,
        "s3": -0.04,
        "s4": -0.002,
        "s5": 0.02,
        "s6": -0.02,
    }
    answer = requests.post(f"{platform.lb_url}/predict", json={"rows": [row]}, timeout=10)
    assert answer.status_code == 200, answer.text
    value = answer.json()["predictions"][0]
    assert isinstance(value, float) and 25 <= value <= 346  # the bundled target's range


@pytest.fixture
def entrypoint_dataset(tmp_path):
    """`flightdeck dataset init ... --entrypoint` into the project's params.yaml, put back afterwards."""
    path = ROOT / "params.yaml"
    original = path.read_text()
    sample = tmp_path / "customers.csv"
    customers(500, seed=31).to_csv(sample, index=False)
    block = onboard.init_block(
        "e2e_user_code", sample, "churned", entrypoint="churn_training:train", code_path="tests/support/user_training"
    )
    onboard.write_block("e2e_user_code", block, path, force=True)
    try:
        yield sample
    finally:
        path.write_text(original)


def test_user_entrypoint_model_is_promoted_and_served(airflow, platform, entrypoint_dataset):
    model = f"{NS}-user-code"
    cfg = pipeline_config.load("e2e_user_code", model_name=model, namespace=NS)
    onboard.land_files(cfg, ObjectStore(), [entrypoint_dataset])
    run_id, _ = _retrain_and_deploy(airflow, "e2e_user_code", model)
    assert "calling the user's entrypoint churn_training:train" in airflow.task_log("retrain", run_id, "train")
    version = tracking.client().get_model_version_by_alias(model, "champion")
    run = tracking.client().get_run(version.run_id)
    assert run.data.params["train.entrypoint"] == "churn_training:train"
    live = requests.get(f"{platform.lb_url}/version", timeout=5).json()
    assert live["model_name"] == model and str(live["model_version"]) == version.version
    row = {
        "tenure_months": 2,
        "monthly_charges": None,
        "plan": "pro",
        "region": None,
        "support_calls": 5,
        "autopay": False,
    }
    answer = requests.post(f"{platform.lb_url}/predict", json={"rows": [row]}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0] in ("yes", "no")
