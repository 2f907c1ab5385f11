"""The retrain steps against the real S3 (SeaweedFS) and MLflow server, in an isolated namespace.

One script-level run (the same functions the DAG's tasks call) promotes v1; the tests then restore
its dataset from S3 by the version's data_version tag, retry steps, feed bad batches and unplug services.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pandas as pd
import pytest

from flightdeck import pipeline_config, retrain, settings, tracking
from flightdeck.data import generate, land
from flightdeck.data import sync as data_sync
from flightdeck.data.store import ObjectStore
from flightdeck.provisioning import aws_connection_json
from flightdeck.reachability import ServiceUnavailable, ping_mlflow

pytestmark = pytest.mark.integration

NS = f"it-{uuid.uuid4().hex[:8]}"
MODEL = f"it-retrain-{NS}"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Real services (fail, never skip, when down), a private state dir and the aws_default connection."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTDECK_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        ObjectStore().ping()
        ping_mlflow(settings.load().mlflow_uri)
        yield mp


@pytest.fixture(scope="module")
def cfg(env):
    return pipeline_config.load("breast_cancer", model_name=MODEL, namespace=NS)


@pytest.fixture(scope="module")
def first(env, cfg):
    land.land(cfg, ObjectStore())
    return retrain.run_all("breast_cancer", model_name=MODEL, namespace=NS)


def _client():
    return tracking.client()


def test_first_run_promotes_version_1_with_full_lineage(first, cfg):
    assert first["outcome"] == "promoted"
    reg = first["registered"]
    assert reg["version"] == "1"
    cl = _client()
    assert cl.get_model_version_by_alias(MODEL, "champion").version == "1"
    assert cl.get_model_version_by_alias(MODEL, "challenger").version == "1"
    tags = cl.get_model_version(MODEL, "1").tags
    assert tags["data_version"] == first["synced"]["data_version"]
    assert tags["gate.thresholds"] == "passed" and tags["gate.champion"] == "passed"
    assert "first model" in tags["gate.champion.message"]
    assert tags["promotion"] == "promoted"
    run = cl.get_run(reg["mlflow_run_id"])
    assert run.data.tags["git_sha"] and run.data.tags["airflow.dag_id"] == "script"
    assert run.data.tags["airflow.run_id"] == reg["run_id"] and run.data.tags["flightdeck.outcome"] == "promoted"
    assert run.data.params["train.family"] == "logistic_regression"
    assert run.data.metrics["f1_macro"] == pytest.approx(reg["metrics"]["f1_macro"])
    children = cl.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert len(children) == len(cfg.params["train"]["search"]["logistic_regression"]["C"])
    assert all("cv_f1_macro" in c.data.metrics for c in children)
    # the version's baseline for watching it live (monitoring.baseline), logged with its run
    import mlflow

    profile = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="baseline/profile.json")
        ).read_text()
    )
    assert profile["rows"] == int(run.data.metrics["train_rows"]) and len(profile["features"]) == 30
    assert profile["prediction"]["rows"] == int(run.data.metrics["holdout_rows"])


def test_logged_model_has_signature_example_and_explicit_requirements(first):
    import mlflow

    uri = f"models:/{MODEL}/1"
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None
    assert len(info.signature.inputs.input_names()) == 30
    assert info.saved_input_example_info is not None
    reqs = Path(mlflow.artifacts.download_artifacts(f"{uri}/requirements.txt")).read_text().split()
    assert reqs == tracking.pip_requirements()
    assert not any(r.lower().startswith(("flask", "mlflow==")) for r in reqs)
    model = mlflow.pyfunc.load_model(uri)
    holdout = generate.holdout(pipeline_config.load("breast_cancer"))
    predicted = model.predict(holdout.drop(columns=["diagnosis"]).head(10))
    assert set(predicted) <= {0, 1}


def test_restore_exact_dataset_of_a_model_version_from_s3(first, tmp_path):
    """The version's data_version tag alone brings back its dataset (dvc pull into a clean folder)."""
    data_version = _client().get_model_version(MODEL, "1").tags["data_version"]
    dest = tmp_path / "clean"
    restored = data_sync.restore(data_version, dest)
    assert hashlib.md5(restored.read_bytes()).hexdigest() == data_version
    assert sorted(p.name for p in dest.iterdir()) == [".dvc", ".dvcignore", "dataset.csv", "dataset.csv.dvc"]
    assert len(pd.read_csv(restored)) == first["synced"]["rows"]


def test_unchanged_data_and_params_short_circuit(first):
    again = retrain.run_all("breast_cancer", model_name=MODEL, namespace=NS)
    assert again["outcome"] == "skipped"
    assert list(again["timings"]) == ["sync", "has_changes"]
    assert [v.version for v in _client().search_model_versions(f"name = '{MODEL}'")] == ["1"]


def test_malformed_batches_are_quarantined_and_nothing_changes(first, cfg):
    store = ObjectStore()
    before = data_sync.Manifest.read(store, cfg.key)
    keys = [land.land(cfg, store, "malformed", kind) for kind in ("missing_column", "wrong_type", "empty")]
    result = retrain.run_all("breast_cancer", model_name=MODEL, namespace=NS)
    assert result["outcome"] == "skipped"
    reasons = {q["key"]: q["reason"] for q in result["synced"]["quarantined"]}
    assert set(reasons) == set(keys)
    assert "missing columns: ['mean_radius']" in reasons[keys[0]]
    assert "column 'mean_texture': 10 value(s) are not number, e.g. row 1: 'not-a-number'" in reasons[keys[1]]
    assert "empty file" in reasons[keys[2]]
    prefix = data_sync.prefixes(cfg.key)
    assert store.list(prefix["landing"]) == []
    for q in result["synced"]["quarantined"]:
        key, moved = q["key"], q["to"]
        assert moved.startswith(prefix["quarantine"]) and moved.endswith(key.rsplit("/", 1)[-1])
        assert store.metadata(moved)["reason"] == reasons[key]
        assert store.read(moved + ".reason.txt").decode().strip() == reasons[key]
    assert data_sync.Manifest.read(store, cfg.key) == before
    assert [v.version for v in _client().search_model_versions(f"name = '{MODEL}'")] == ["1"]


def test_batch_failing_data_checks_is_quarantined_and_dataset_kept(first, cfg):
    store = ObjectStore()
    before = data_sync.Manifest.read(store, cfg.key)
    batch = generate.good_batch(cfg, 50)
    batch.loc[batch.index[:30], "mean_area"] *= 100  # structurally fine, fails the range check
    key = data_sync.prefixes(cfg.key)["landing"] + "batch-0050.csv"
    store.write(key, generate.to_csv_bytes(batch))
    result = retrain.run_all("breast_cancer", model_name=MODEL, namespace=NS)
    assert result["outcome"] == "data_rejected"
    (moved,) = [k for k in store.list(data_sync.prefixes(cfg.key)["quarantine"]) if k.endswith("/batch-0050.csv")]
    reason = store.metadata(moved)["reason"]
    assert reason.startswith("merged dataset failed data checks:") and "out-of-range fraction" in reason
    assert data_sync.Manifest.read(store, cfg.key) == before
    # The rejected candidate was pushed (content-addressed, harmless); the committed one still restores.
    assert data_sync.restore(before.data_version, Path(os.environ["FLIGHTDECK_STATE_DIR"]) / "r2").exists()


def test_train_and_register_retry_without_duplicates(first, cfg):
    """A retried task reuses its complete run / version; an attempt that died half way is replaced."""
    import mlflow

    other = f"{MODEL}-retry"
    synced = {**first["synced"], "model_name": other}
    dag_run = f"manual__retry-{uuid.uuid4().hex[:8]}"
    ctx = tracking.RunContext(
        "retrain", dag_run, synced["data_version"], synced["holdout_version"], synced["params_hash"]
    )
    mlflow.set_experiment(cfg.experiment_name)
    with mlflow.start_run(tags={**ctx.tags(cfg), "flightdeck.role": "training"}) as dead:
        mlflow.log_param("half", "way")  # an attempt that died before completing
    a = retrain.train(synced, dag_id="retrain", run_id=dag_run)
    b = retrain.train(synced, dag_id="retrain", run_id=dag_run)
    assert a["mlflow_run_id"] == b["mlflow_run_id"] != dead.info.run_id
    cl = _client()
    assert cl.get_run(dead.info.run_id).info.lifecycle_stage == "deleted"
    live = tracking.find_runs(cl, cfg, {"airflow.run_id": dag_run})
    assert [r.info.run_id for r in live] == [a["mlflow_run_id"]]
    v1, v2 = retrain.register(a), retrain.register(b)
    assert v1["version"] == v2["version"] == "1"
    assert len(cl.search_model_versions(f"name = '{other}'")) == 1


def test_unreachable_mlflow_names_the_service(env):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:8299")
        with pytest.raises(ServiceUnavailable, match=r"^MLflow unreachable at http://127.0.0.1:8299"):
            tracking.client()


def test_unreachable_s3_names_the_service(env):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_json("http://127.0.0.1:8298"))
        mp.setenv("AWS_MAX_ATTEMPTS", "1")
        with pytest.raises(ServiceUnavailable, match=r"^S3 unreachable at http://127.0.0.1:8298"):
            retrain.sync_data("breast_cancer", namespace=NS)


def test_promoted_model_loads_in_the_serving_loader(first, tmp_path):
    """What the serving image does with the champion: a local model dir, no MLflow at load time."""
    import sys

    import mlflow

    repo = str(Path(__file__).resolve().parents[2])
    if repo not in sys.path:  # serving/ is a top-level folder, not an installed package
        sys.path.insert(0, repo)
    from serving.model import load_model_dir

    model_dir = mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion", dst_path=str(tmp_path))
    loaded = load_model_dir(model_dir)
    assert loaded.flavor == "sklearn" and loaded.predict_path == "sklearn-native"
    assert set(loaded.smoke_test()) <= {0, 1}
