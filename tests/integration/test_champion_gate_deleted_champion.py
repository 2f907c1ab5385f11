"""The champion gate against the running MLflow when the champion's version was deleted from the
registry (MLflow removes its alias): it compares against what is live, else `previous`, and refuses
with a clear reason when the live version itself is gone; never "no champion yet: first model" while
a model is live. Unique registered model names, deployment records in a bucket of their own."""

from __future__ import annotations

import json
import uuid

import pytest

from flightdeck import gates, model_registry, retrain
from flightdeck.deploy import records as rec
from tests.support.records import scratch_records

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BUCKET = "flightdeck-test-champion-gate"


@pytest.fixture(scope="module")
def mlflow_client(platform):
    from mlflow import MlflowClient

    return MlflowClient(platform.mlflow_uri)


@pytest.fixture
def model(mlflow_client, platform):
    """A unique registered model with versions 1-3 (v3 is the challenger); no model files are needed:
    the reference is chosen before anything is scored."""
    import mlflow

    name = f"fd-test-gate-{uuid.uuid4().hex[:8]}"
    mlflow.set_tracking_uri(platform.mlflow_uri)
    mlflow.set_experiment("fd-test-champion-gate")
    mlflow_client.create_registered_model(name)
    for _ in range(3):
        with mlflow.start_run() as run:
            pass
        mlflow_client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    yield name
    mlflow_client.delete_registered_model(name)


@pytest.fixture
def records(platform):
    with scratch_records(BUCKET) as store:
        yield store


def deployed(store: rec.RecordStore, name: str, version: str, run_id: str) -> None:
    """A finished deploy of `version` on local: current/local.json in the test bucket says it serves."""
    dep_id = rec.deployment_id(run_id)
    store.create(rec.DeploymentSpec(dep_id, "local", run_id))
    model = rec.ModelInfo(name=name, version=version, alias="", run_id="", data_version="")
    store.update("local", dep_id, outcome=rec.Outcome.SUCCEEDED, model=model)


def promoted_then_deleted(client, name: str, champion: str, previous: str) -> None:
    client.set_registered_model_alias(name, "previous", previous)
    client.set_registered_model_alias(name, "champion", champion)
    client.delete_model_version(name, champion)
    assert "champion" not in (client.get_registered_model(name).aliases or {})  # MLflow dropped the alias


def registered(name: str) -> dict:
    """What the register step hands the gates for challenger v3 (breast_cancer's configuration)."""
    import pandas as pd

    from flightdeck import pipeline_config
    from flightdeck.data.schema import infer

    cfg = pipeline_config.load("breast_cancer")
    schema = infer(pd.DataFrame({"mean radius": [1.0, 2.0, 3.0], cfg.target: [0, 1, 0]}), cfg.target, cfg.task)
    return {
        "dataset": "breast_cancer",
        "model_name": name,
        "namespace": None,
        "version": "3",
        "metrics": {"f1_macro": 0.99},
        "holdout_version": "md5-test",
        "mlflow_run_id": "",
        "schema": {"schema": schema.to_params()["schema"], "target": cfg.target, "task": cfg.task.value},
    }


def test_deleted_live_champion_refuses_with_a_clear_reason(model, records, mlflow_client):
    deployed(records, model, "2", "manual__live_v2")
    promoted_then_deleted(mlflow_client, model, champion="2", previous="1")

    with pytest.raises(gates.ChampionUnknown) as err:
        retrain.champion_gate(registered(model), records=records)
    message = str(err.value)
    assert f"{model} has no `champion` alias and v2 is live on local (deploy run manual__live_v2)" in message
    assert "gone from the registry" in message and "not promoted on thresholds alone" in message
    tags = model_registry.version_tags(model, "3")
    assert tags["gate.champion"] == "refused" and "v2 is live on local" in tags["gate.champion.message"]
    assert model_registry.alias_version(model, "champion") is None  # nothing was promoted


def test_deleted_champion_compares_against_the_live_version(model, records, mlflow_client):
    deployed(records, model, "1", "manual__live_v1")  # a rollback left v1 serving
    promoted_then_deleted(mlflow_client, model, champion="2", previous="1")
    ref = retrain.champion_reference(model, "3", records)
    assert ref.version == "1" and ref.source.startswith("live on local (deploy run manual__live_v1)")


def test_deleted_champion_never_deployed_compares_against_previous(model, records, mlflow_client):
    promoted_then_deleted(mlflow_client, model, champion="2", previous="1")
    assert retrain.champion_reference(model, "3", records) == gates.ChampionRef(
        "1", "alias previous; the champion alias is gone"
    )


def test_a_model_never_promoted_or_deployed_is_the_first_model(model, records):
    assert retrain.champion_reference(model, "3", records) == gates.ChampionRef(None, "")


def test_an_existing_champion_alias_is_used_without_reading_records(model, mlflow_client):
    mlflow_client.set_registered_model_alias(model, "champion", "2")

    class NoRecords:
        def __getattr__(self, name):
            raise AssertionError("deployment records read although the champion alias exists")

    assert retrain.champion_reference(model, "3", NoRecords()) == gates.ChampionRef("2", "alias champion")


def test_records_of_another_model_do_not_count(model, records, mlflow_client):
    records.s3.put_object(
        Bucket=BUCKET,
        Key="current/local.json",
        Body=json.dumps(  # a schema-1 record, as older buckets hold: read through the upgrade
            {
                "target": "local",
                "outcome": "succeeded",
                "run_id": "r",
                "model": {"name": "someone-else", "version": "2"},
            }
        ).encode(),
    )
    promoted_then_deleted(mlflow_client, model, champion="2", previous="1")
    assert retrain.champion_reference(model, "3", records).version == "1"  # previous, not someone-else's v2
