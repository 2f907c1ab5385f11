"""Continuous deployment turns champion Asset events into deploy confs, and into nothing while it is off."""

from __future__ import annotations

from flightdeck.deploy.continuous import deploy_confs
from flightdeck.monitoring.config import ContinuousDeployConfig

DAG_ID = "continuous_deploy"


def test_off_deploys_nothing():
    assert deploy_confs([{"model_name": "m", "version": "3"}], ContinuousDeployConfig(enabled=False)) == []


def test_on_pins_the_newest_promoted_version_of_each_model_with_the_configured_canary():
    events = [
        {"model_name": "m", "version": "3"},
        {"model_name": "m", "version": "4"},
        {"model_name": "other", "version": "1"},
        {"model_name": "", "version": "9"},  # malformed: skipped
    ]
    cfg = ContinuousDeployConfig(enabled=True, canary_percent=25, canary_steps=3, bake_seconds=5)
    confs = deploy_confs(events, cfg)
    assert [(c["model_name"], c["model"]) for c in confs] == [("m", "4"), ("other", "1")]
    assert confs[0] == {
        "model": "4",
        "model_name": "m",
        "target": "local",
        "strategy": "canary",
        "canary_percent": 25,
        "canary_steps": 3,
        "bake_seconds": 5,
    }


def test_the_dag_runs_on_every_champion_event_and_triggers_deploy(dag):
    assert [a.uri for a in dag.schedule] == ["flightdeck://models/champion"]
    trigger = dag.get_task("deploy")
    assert trigger.operator_class.__name__ == "TriggerDagRunOperator"
    assert trigger.partial_kwargs["trigger_dag_id"] == "deploy"
    assert dag.get_task("plan").downstream_task_ids == {"deploy"}
