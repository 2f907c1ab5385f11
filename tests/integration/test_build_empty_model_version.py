"""A registered version whose artifact folder is empty, against the running MLflow and image registry:
the deploy's build step fails within seconds naming the missing `MLmodel`, and nothing reaches the
registry at 127.0.0.1:5050 (no repository, no tag) or the Docker engine."""

from __future__ import annotations

import time
import uuid

import docker
import pytest
import requests

from flightdeck import images
from flightdeck.deploy.steps import Deploy
from tests.support.records import scratch_records

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BUCKET = "flightdeck-test-empty-model"  # records of a deploy that never happened stay out of the real history


@pytest.fixture(scope="module")
def empty_version(platform):
    """A unique registered model whose version 1 points at a run's artifact folder that holds nothing."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(platform.mlflow_uri)
    name = f"fd-test-empty-{uuid.uuid4().hex[:8]}"
    mlflow.set_tracking_uri(platform.mlflow_uri)
    mlflow.set_experiment("fd-test-empty-model-versions")
    with mlflow.start_run(run_name="no model logged") as run:
        mlflow.log_param("purpose", "a registered version without model files")
    client.create_registered_model(name)
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    yield name, str(mv.version)
    client.delete_registered_model(name)


@pytest.fixture(scope="module")
def store(platform):
    with scratch_records(BUCKET) as store:
        yield store


def test_mlflow_returns_an_empty_folder_for_the_version(empty_version, tmp_path, platform):
    """The premise: MLflow itself raises nothing for a version without files."""
    import mlflow

    name, version = empty_version
    mlflow.set_tracking_uri(platform.mlflow_uri)
    path = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(tmp_path))
    assert list(tmp_path.iterdir()) == [] and path


def test_build_step_fails_in_seconds_naming_mlmodel_and_pushes_nothing(empty_version, store, platform):
    name, version = empty_version
    run_id = f"manual__empty_{uuid.uuid4().hex[:6]}"
    d = Deploy(run_id, {"target": "local", "model": version, "model_name": name}, store=store, backend=object())
    resolved = d.resolve()
    assert resolved["name"] == name and resolved["version"] == version

    start = time.monotonic()
    with pytest.raises(images.ModelFilesMissing) as err:
        d.build()
    elapsed = time.monotonic() - start
    assert elapsed < 10, f"build took {elapsed:.1f}s to notice the missing model"
    assert f"{name} v{version} has no model files: no `MLmodel`" in str(err.value)

    record = store.get("local", d.dep_id)
    assert record.status.failure["step"] == "build" and "MLmodel" in record.status.failure["reason"]
    assert record.status.image is None, "an image was recorded for a version without a model"
    # nothing pushed: the registry has no repository (or no tag) for the model
    tags = requests.get(f"http://{platform.registry}/v2/{name}/tags/list", timeout=5)
    assert tags.status_code == 404 or not (tags.json().get("tags") or []), tags.text
    # nothing built: no local image carries the model's repository
    assert docker.from_env().images.list(name=f"{platform.registry}/{name}") == []
    # and the rollback the DAG runs next starts nothing, with the build's reason
    out = d.rollback(failed_tasks=["build"])
    assert out["restored"] is None and "MLmodel" in out["reason"]
