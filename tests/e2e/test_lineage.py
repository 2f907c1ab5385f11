"""`flightdeck status` checked field by field against the systems that own each link of the lineage:
the load balancer (/version), MLflow (model version, aliases, run params/metrics/tags), the image
registry (manifest digest, config labels) and the deployment record in S3.

It needs a live deployment of a model trained by the retrain DAG (so the data version is real). Cheapest
first: reuse the live one if it has that lineage; else deploy an existing retrained champion (one deploy
run); else land a batch, retrain in an isolated namespace and deploy its champion.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from flightdeck import lineage, s3
from flightdeck.deploy import records as rec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

CLI = [str(Path(sys.executable).with_name("flightdeck"))]
NS = "lineage-e2e"
FAST = {"bake_seconds": 3, "step_seconds": 2, "healthy_timeout_seconds": 60, "min_requests": 5}


def _cli(*args: str) -> dict:
    proc = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True, timeout=180)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _retrained_champion(mlflow_uri: str) -> str | None:
    """A registered model whose champion was trained by the retrain DAG (has a data_version tag)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    for rm in client.search_registered_models(max_results=200):
        version = (rm.aliases or {}).get("champion")
        if version and client.get_run(client.get_model_version(rm.name, version).run_id).data.tags.get("data_version"):
            return rm.name
    return None


def _wait_deploys_idle(airflow, timeout: float = 900) -> None:
    """Do not interleave with someone else's deploy run (their assertions read the LB too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = airflow.get("/dags/deploy/dagRuns", state=["queued", "running"])["dag_runs"]
        if not runs:
            return
        time.sleep(5)


def _retrain(airflow, platform) -> str:
    from flightdeck import pipeline_config
    from flightdeck.data import land
    from flightdeck.data.store import ObjectStore

    model = f"lineage-e2e-{NS}"
    cfg = pipeline_config.load("breast_cancer", model_name=model, namespace=NS)
    land.land(cfg, ObjectStore())
    run_id = airflow.trigger(
        "retrain", {"dataset": "breast_cancer", "namespace": NS, "model_name": model, "force": False}
    )
    assert airflow.wait("retrain", run_id, timeout=900) == "success", airflow.task_states("retrain", run_id)
    return model


@pytest.fixture(scope="module")
def store(platform) -> rec.RecordStore:
    return rec.RecordStore(s3.client(), platform.deploy_bucket)


@pytest.fixture(scope="module")
def deployed(airflow, platform, store) -> dict:
    """The record of a succeeded deploy, live now, whose model came out of the retrain DAG."""
    current = lineage.current_record(store, "local")
    if current and current.outcome is rec.Outcome.SUCCEEDED and (current.status.model or {}).get("data_version"):
        return current
    model = _retrained_champion(platform.mlflow_uri) or _retrain(airflow, platform)
    _wait_deploys_idle(airflow)
    run_id = airflow.trigger(
        "deploy", {"model": "champion", "model_name": model, "target": "local", "strategy": "blue_green", **FAST}
    )
    state = airflow.wait("deploy", run_id, timeout=900)
    assert state == "success", (state, airflow.task_states("deploy", run_id))
    return store.get("local", rec.deployment_id(run_id))


@pytest.fixture(scope="module")
def status(deployed) -> dict:
    """The CLI's answer, taken when the LB serves the record's version (another deploy may interleave:
    then the CLI is still checked against whatever serves, see the tests)."""
    for _ in range(10):
        st = _cli("status", "--target", "local")
        if st["live"]["ok"] and st["checks"].get("live_matches_record"):
            return st
        time.sleep(3)
    return st


def test_live_version_matches_the_load_balancer(status, platform):
    served = requests.get(platform.lb_url + "/version", timeout=5).json()
    live = status["live"]["version"]
    assert status["live"]["ok"] and status["live"]["url"] == platform.lb_url + "/version"
    for key in ("model_name", "model_version", "run_id"):
        assert live[key] == served[key], key
    assert (status["model"]["name"], status["model"]["version"]) == (served["model_name"], str(served["model_version"]))
    assert status["model"]["run_id"] == served["run_id"]
    # the traffic split names the revision that carries the live version
    weights = status["traffic"]["weights"]
    top = max(weights, key=weights.get)
    assert weights[top] == 100 and status["deployment"]["revision"] == top
    assert status["traffic"]["health"][top]["healthy"] == status["traffic"]["health"][top]["total"] >= 1


def test_model_run_params_metrics_match_mlflow(status, platform):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=platform.mlflow_uri)
    m = status["model"]
    mv = client.get_model_version(m["name"], m["version"])
    run = client.get_run(mv.run_id)
    aliases = sorted(a for a, v in client.get_registered_model(m["name"]).aliases.items() if v == m["version"])
    assert m["run_id"] == mv.run_id
    assert m["aliases"] == aliases
    assert m["params"] == run.data.params and m["params"], "the retrained model's run has params"
    assert m["metrics"] == pytest.approx(run.data.metrics) and m["metrics"]
    assert m["data_version"] == run.data.tags["data_version"] != ""
    assert m["git_sha"] == run.data.tags["git_sha"]
    assert m["version_tags"] == dict(mv.tags)
    assert m["run_url"].endswith(f"/#/experiments/{run.info.experiment_id}/runs/{mv.run_id}")


def test_image_digest_and_labels_match_the_registry(status, platform):
    image = status["image"]
    repo, tag = image["tag"].split("/", 1)[1].rsplit(":", 1)
    resp = requests.head(
        f"http://{platform.registry}/v2/{repo}/manifests/{tag}",
        timeout=5,
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    assert resp.status_code == 200
    assert image["digest"] == image["registry_digest"] == resp.headers["Docker-Content-Digest"]
    assert image["pinned"] == f"{platform.registry}/{repo}@{image['digest']}"
    labels = image["labels"]
    assert labels["org.flightdeck.model.name"] == status["model"]["name"]
    assert labels["org.flightdeck.model.version"] == status["model"]["version"]
    assert labels["org.flightdeck.model.run_id"] == status["model"]["run_id"]
    assert labels["org.flightdeck.data.version"] == status["model"]["data_version"]
    assert image["git_sha"] == labels["org.opencontainers.image.revision"] and len(image["git_sha"]) == 40


def test_deployment_matches_its_record(status, store, deployed):
    d = status["deployment"]
    record = store.get("local", d["deployment_id"])
    model = record.status.model
    assert record.outcome.value == d["outcome"] == "succeeded"
    assert (model["name"], str(model["version"])) == (status["model"]["name"], status["model"]["version"])
    assert model["data_version"] == status["model"]["data_version"]
    assert record.status.image["digest"] == status["image"]["digest"]
    assert d["airflow_url"].endswith("/dags/deploy/runs/" + requests.utils.quote(record.run_id, safe=""))
    assert status["checks"] == {
        "live_matches_record": True,
        "digest_matches_registry": True,
        "mlflow_run_matches": True,
    }
    if d["deployment_id"] == deployed.deployment_id:  # not replaced by another deploy meanwhile
        assert d["run_id"] == deployed.run_id


def test_diff_against_an_earlier_deployment(status, store):
    cur = status["deployment"]
    earlier = [
        r
        for r in store.list("local")
        if r.deployment_id != cur["deployment_id"]
        and r.outcome is rec.Outcome.SUCCEEDED
        and (r.status.model or {}).get("version")
    ]
    assert earlier, "need a second succeeded deployment on the local target to diff against"
    other = earlier[0]
    d = _cli("diff", other.run_id, cur["run_id"], "--target", "local")
    assert d["a"]["run_id"] == other.run_id and d["b"]["run_id"] == cur["run_id"]
    other_digest = (other.status.image or {}).get("digest", "")
    if other_digest != status["image"]["digest"]:
        assert d["changes"]["image"]["digest"] == {"a": other_digest, "b": status["image"]["digest"]}
    same_model = (other.status.model["name"], str(other.status.model["version"])) == (
        status["model"]["name"],
        status["model"]["version"],
    )
    assert bool(d["changes"]["model"]) == (not same_model)
    if not same_model:  # another name, another version, or both (two models' v1 differ by name alone)
        changed = d["changes"]["model"]
        assert {"name", "version"} & set(changed), changed
        for key in ("name", "version"):
            if key in changed:
                assert changed[key]["b"] == status["model"][key]
