"""The retrain DAG through the running scheduler, in an isolated namespace and registry name.

Order matters (module state): run 1 promotes v1; run 2 (new good batch) trains v2 and promotes it only
if it beats v1 on the holdout; run 3 (degraded batch) trains v3 that a gate rejects; run 4 (no new
data) short-circuits and registers nothing.
"""

from __future__ import annotations

import time
import uuid

import pytest

from flightdeck import pipeline_config, tracking
from flightdeck.data import land
from flightdeck.data.store import ObjectStore

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

DAG = "retrain"
NS = f"e2e-{uuid.uuid4().hex[:8]}"
MODEL = f"e2e-retrain-{NS}"
CONF = {"dataset": "breast_cancer", "namespace": NS, "model_name": MODEL, "force": False}
TASKS = ["sync_data", "has_changes", "check_data", "train", "register", "threshold_gate", "champion_gate", "promote"]
STATE: dict[str, object] = {}


@pytest.fixture(scope="module")
def store(platform):
    return ObjectStore()


@pytest.fixture(scope="module")
def cfg():
    return pipeline_config.load("breast_cancer", model_name=MODEL, namespace=NS)


def _run(airflow) -> tuple[str, dict[str, str | None]]:
    run_id = airflow.trigger(DAG, CONF)
    state = airflow.wait(DAG, run_id, timeout=600)
    states = airflow.task_states(DAG, run_id)
    assert state == "success", (state, states, airflow.task_log(DAG, run_id, "train")[-3000:])
    return run_id, states


def _versions() -> dict[str, dict[str, str]]:
    cl = tracking.client()
    return {v.version: dict(v.tags) for v in cl.search_model_versions(f"name = '{MODEL}'")}


def _alias(alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return tracking.client().get_model_version_by_alias(MODEL, alias).version
    except MlflowException:
        return None


def _f1(version: str) -> float:
    cl = tracking.client()
    return cl.get_run(cl.get_model_version(MODEL, version).run_id).data.metrics["f1_macro"]


def test_run1_promotes_version_1(airflow, store, cfg):
    land.land(cfg, store)
    run_id, states = _run(airflow)
    assert states == dict.fromkeys(TASKS, "success")
    assert list(_versions()) == ["1"] and _alias("champion") == "1"
    tags = _versions()["1"]
    assert tags["airflow.dag_id"] == DAG and tags["airflow.run_id"] == run_id
    assert tags["gate.thresholds"] == tags["gate.champion"] == "passed"
    train_log = airflow.task_log(DAG, run_id, "train")
    for stage in ("prepare", "train", "evaluate"):
        assert f"Running stage '{stage}'" in train_log
    assert "GATE PASSED: threshold gate passed: accuracy=" in airflow.task_log(DAG, run_id, "threshold_gate")
    # The promotion is announced as an Asset event a deploy DAG can be scheduled on.
    # (An asset first seen through an alias is registered just after the run ends: poll briefly.)
    uri = f"flightdeck://models/{MODEL}/champion"
    deadline = time.monotonic() + 60
    while not (assets := airflow.get("/assets", uri_pattern=uri)["assets"]) and time.monotonic() < deadline:
        time.sleep(2)
    assert [a["uri"] for a in assets] == [uri]
    events = airflow.get("/assets/events", asset_id=assets[0]["id"])["asset_events"]
    assert [e["extra"]["version"] for e in events] == ["1"]
    assert events[0]["extra"]["model_name"] == MODEL
    STATE["asset_id"] = assets[0]["id"]


def test_run2_new_batch_promoted_only_if_it_beats_v1(airflow, store, cfg):
    land.land(cfg, store)
    run_id, states = _run(airflow)
    assert sorted(_versions()) == ["1", "2"]
    min_delta = cfg.params["gates"]["champion"]["min_delta"]
    beats = _f1("2") >= _f1("1") + min_delta
    tags = _versions()["2"]
    assert tags["gate.thresholds"] == "passed"
    if beats:
        assert (_alias("champion"), _alias("previous")) == ("2", "1")
        assert tags["gate.champion"] == "passed" and states["promote"] == "success"
    else:
        assert _alias("champion") == "1" and tags["gate.champion"] == "failed"
        assert states["promote"] == "skipped"
    STATE["champion"] = _alias("champion")
    assert f"challenger v2 {'beats' if beats else 'does NOT beat'} champion v1" in tags["gate.champion.message"]


def test_run3_degraded_batch_is_trained_but_rejected(airflow, store, cfg):
    land.land(cfg, store, kind="degraded")
    run_id, states = _run(airflow)
    assert sorted(_versions()) == ["1", "2", "3"]
    tags = _versions()["3"]
    assert tags["promotion"] == "rejected"
    assert "failed" in (tags.get("gate.thresholds"), tags.get("gate.champion"))
    assert _alias("champion") == STATE["champion"]  # unchanged
    assert _alias("challenger") == "3"
    assert states["promote"] == "skipped"
    events = airflow.get("/assets/events", asset_id=STATE["asset_id"])["asset_events"]
    assert "3" not in [e["extra"]["version"] for e in events]


def test_run4_no_new_data_short_circuits(airflow, store, cfg):
    run_id, states = _run(airflow)
    assert states["sync_data"] == states["has_changes"] == "success"
    assert {states[t] for t in TASKS[2:]} == {"skipped"}
    assert sorted(_versions()) == ["1", "2", "3"]
    assert "unchanged: data_version=" in airflow.task_log(DAG, run_id, "has_changes")
