"""A second, multiclass dataset trained, gated and promoted by configuration alone (params.yaml `wine`)."""

from __future__ import annotations

import uuid

import pytest

from flightdeck import pipeline_config, retrain, settings, tracking
from flightdeck.data import generate, land
from flightdeck.data.store import ObjectStore
from flightdeck.reachability import ping_mlflow

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTDECK_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        ObjectStore().ping()
        ping_mlflow(settings.load().mlflow_uri)
        yield


def test_wine_by_config_alone(env):
    ns = f"it-wine-{uuid.uuid4().hex[:8]}"
    model = f"it-wine-{ns}"
    cfg = pipeline_config.load("wine", model_name=model, namespace=ns)
    land.land(cfg, ObjectStore())
    result = retrain.run_all("wine", model_name=model, namespace=ns)
    assert result["outcome"] == "promoted", result
    reg = result["registered"]
    cl = tracking.client()
    version = cl.get_model_version_by_alias(model, "champion")
    assert version.version == reg["version"] == "1"
    assert version.tags["dataset"] == "wine"
    assert version.tags["gate.thresholds"] == "passed"
    run = cl.get_run(reg["mlflow_run_id"])
    assert run.data.params["data.target"] == "cultivar"
    assert run.data.metrics["f1_macro"] >= cfg.params["gates"]["thresholds"]["f1_macro"]
    assert run.info.experiment_id == cl.get_experiment_by_name("flightdeck-retrain-" + ns + "-wine").experiment_id

    import mlflow

    holdout = generate.holdout(cfg)
    predicted = mlflow.pyfunc.load_model(f"models:/{model}@champion")
    labels = predicted.predict(holdout.drop(columns=[cfg.target]))
    assert set(labels) == {0, 1, 2}  # multiclass end to end
