"""The serving image, built from the root Dockerfile through the platform's Docker engine.

A model is trained, logged and registered in the real MLflow server (`serving-test-model`),
downloaded the way the deploy DAG does it, baked in with `--build-arg MODEL_DIR`, and the
container is run and called: /readyz, /predict, /version, labels, non-root user, HEALTHCHECK.
The same registered model is also fetched at start through `models:/serving-test-model@champion`.
"""

from __future__ import annotations

import shutil
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.model_examples import log_breast_cancer_model  # noqa: E402

pytestmark = pytest.mark.integration
MODEL_NAME = "serving-test-model"
PORT = 8141


def _features():
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).data


@pytest.fixture(scope="module")
def registered(platform):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(platform.mlflow_uri)
    version, estimator = log_breast_cancer_model(MODEL_NAME, "lr")
    MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", str(version))
    return str(version), estimator


@pytest.fixture(scope="module")
def image(registered, platform):
    import docker
    import mlflow
    from mlflow import MlflowClient

    version, _ = registered
    run_id = MlflowClient().get_model_version(MODEL_NAME, version).run_id
    ctx_dir = REPO / "build" / f"serving-test-{uuid.uuid4().hex[:8]}"
    ctx_dir.mkdir(parents=True)
    try:
        local = mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/{version}", dst_path=str(ctx_dir))
        client = docker.from_env()
        tag = f"flightdeck-serving-test:{version}"
        built, _ = client.images.build(
            path=str(REPO),
            target="serving",
            tag=tag,
            rm=True,
            buildargs={
                "MODEL_DIR": Path(local).relative_to(REPO).as_posix(),
                "MODEL_NAME": MODEL_NAME,
                "MODEL_VERSION": version,
                "RUN_ID": run_id,
                "DATA_VERSION": "sklearn-breast-cancer",
                "GIT_SHA": "0" * 40,
            },
        )
    finally:
        shutil.rmtree(ctx_dir, ignore_errors=True)
    yield client, built, tag, version, run_id
    client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def container(image):
    client, _, tag, *_ = image
    started = time.monotonic()
    box = client.containers.run(
        tag,
        detach=True,
        ports={"8080/tcp": ("127.0.0.1", PORT)},
        environment={"IMAGE_TAG": tag, "SERVING_WORKERS": "2"},
        name=f"serving-test-{uuid.uuid4().hex[:8]}",
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{PORT}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            box.reload()
            assert box.status in ("created", "running"), box.logs().decode()[-2000:]
            time.sleep(0.2)
        else:
            pytest.fail("container never became ready:\n" + box.logs().decode()[-2000:])
        yield box, time.monotonic() - started
    finally:
        box.remove(force=True)


def test_image_is_non_root_labelled_with_lineage_and_has_a_healthcheck(image):
    _, built, _, version, run_id = image
    config = built.attrs["Config"]
    assert config["User"] and config["User"].split(":")[0] not in ("", "0", "root")
    labels = config["Labels"]
    assert labels["flightdeck.model.name"] == MODEL_NAME
    assert labels["flightdeck.model.version"] == version
    assert labels["flightdeck.run_id"] == run_id
    assert labels["org.opencontainers.image.revision"] == "0" * 40
    assert "/readyz" in " ".join(config["Healthcheck"]["Test"])
    assert "8080/tcp" in config["ExposedPorts"]
    assert "--no-control-socket" in config["Cmd"]


def test_container_answers_readyz_predict_and_version(container, registered, image):
    _, estimator = registered
    *_, version, run_id = image
    base = f"http://127.0.0.1:{PORT}"
    assert requests.get(f"{base}/readyz", timeout=5).json()["status"] == "ready"

    X = _features()
    rows = X.iloc[:20].to_dict(orient="records")
    resp = requests.post(f"{base}/predict", json={"rows": rows}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["predictions"] == estimator.predict(X.iloc[:20]).tolist()

    bad = requests.post(f"{base}/predict", json={"rows": [{"mean radius": "x"}]}, timeout=10)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "missing_columns"

    info = requests.get(f"{base}/version", timeout=5).json()
    assert info["model_name"] == MODEL_NAME and info["model_version"] == version
    assert info["run_id"] == run_id and info["data_version"] == "sklearn-breast-cancer"
    assert info["image_tag"].startswith("flightdeck-serving-test:")
    assert info["predict_path"] == "sklearn-native"
    metrics = requests.get(f"{base}/metrics", timeout=5).text
    assert f'model_version="{version}",route="/predict",status="200"' in metrics


def test_docker_marks_the_container_healthy(container):
    box, _ = container
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        box.reload()
        health = box.attrs["State"].get("Health", {}).get("Status")
        if health == "healthy":
            return
        assert health in ("starting", None), box.attrs["State"]
        time.sleep(1)
    pytest.fail(f"health stayed {box.attrs['State'].get('Health')}")


def test_model_fetched_from_mlflow_at_start(registered, platform):
    from serving.app import create_app

    version, estimator = registered
    app = create_app(
        {
            "MODEL_DIR": "/nonexistent",
            "MODEL_URI": f"models:/{MODEL_NAME}@champion",
            "MLFLOW_TRACKING_URI": platform.mlflow_uri,
        }
    )
    client = app.test_client()
    info = client.get("/version").get_json()
    assert info["model_name"] == MODEL_NAME and info["model_version"] == version
    assert info["model_uri"] == f"models:/{MODEL_NAME}@champion"
    X = _features()
    resp = client.post("/predict", json={"rows": X.iloc[:5].to_dict(orient="records")})
    assert resp.get_json()["predictions"] == estimator.predict(X.iloc[:5]).tolist()


TABULAR_PORT = 8142


def test_lean_image_serves_a_categorical_pipeline_natively(tmp_path):
    """A training-side pipeline (string categories, nulls, HGB) through `images.build_image`: the MLmodel
    picks the lean image (no pandas, no MLflow), whose build loads the model and whose server answers
    as sklearn does, probabilities included."""
    import docker
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    from flightdeck import images
    from tests.support.model_examples import save_tabular_model

    model = save_tabular_model(tmp_path / "model", HistGradientBoostingClassifier(max_iter=50, random_state=0))
    assert images.serving_build_args(model.path) == {"WITH_MLFLOW": "0"}
    client = docker.from_env()
    ref = images.ModelRef(name="serving-test-tabular", version="1")
    built = images.build_image(ref, registry="local", model_dir=model.path, sha="0" * 40, client=client)
    box = client.containers.run(
        built.tag, detach=True, ports={"8080/tcp": ("127.0.0.1", TABULAR_PORT)}, environment={"SERVING_WORKERS": "1"}
    )
    try:
        no_pandas = client.containers.run(built.tag, ["python", "-c", "import pandas"], remove=True, stderr=True)
    except docker.errors.ContainerError as exc:
        no_pandas = exc.stderr
    try:
        assert b"No module named 'pandas'" in no_pandas
        base = f"http://127.0.0.1:{TABULAR_PORT}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        assert "fast-hgb" in requests.get(f"{base}/version", timeout=5).json()["evaluator"]
        rows = [
            {"age": None, "visits": 3, "city": "atlantis", "plan": "pro", "member": True},
            {"age": 52.5, "visits": 40, "city": None, "plan": "free", "member": False},
        ]
        frame = pd.DataFrame(
            {
                "age": [float("nan"), 52.5],
                "visits": [3.0, 40.0],
                "city": pd.Series(["atlantis", None], dtype=object),
                "plan": pd.Series(["pro", "free"], dtype=object),
                "member": [1.0, 0.0],
            }
        )
        body = requests.post(f"{base}/predict", json={"rows": rows, "return_probabilities": True}, timeout=10).json()
        assert body["predictions"] == model.estimator.predict(frame).tolist()
        assert body["probabilities"] == model.estimator.predict_proba(frame).tolist()
        assert body["classes"] == model.estimator.classes_.tolist()
    finally:
        box.remove(force=True)
        client.images.remove(built.tag, force=True)


AUTH_PORT = 8143


def test_api_keys_mounted_as_the_local_target_does_guard_scoring_not_probes(image, registered, tmp_path):
    """The image with the key file mounted where the local target mounts it (deploy/local.py KEYS_MOUNT):
    probes stay open, scoring needs the key (either header), and a second key written into the mounted file
    is accepted without a restart (rotation), by every worker."""
    from flightdeck.deploy.local import KEYS_MOUNT

    client, _, tag, *_ = image
    keys = tmp_path / "serving-api-keys"
    keys.write_text("first-key-7c1d2e\n")
    keys.chmod(0o644)  # the server runs as uid 10001
    box = client.containers.run(
        tag,
        detach=True,
        ports={"8080/tcp": ("127.0.0.1", AUTH_PORT)},
        environment={"SERVING_API_KEYS_FILE": KEYS_MOUNT, "SERVING_WORKERS": "2"},
        volumes={str(keys): {"bind": KEYS_MOUNT, "mode": "ro"}},
        name=f"serving-test-auth-{uuid.uuid4().hex[:8]}",
    )
    base = f"http://127.0.0.1:{AUTH_PORT}"
    rows = {"rows": _features().iloc[:3].to_dict(orient="records")}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:  # no key: open
                    break
            except requests.RequestException:
                pass
            box.reload()
            assert box.status in ("created", "running") and time.monotonic() < deadline, box.logs().decode()[-2000:]
            time.sleep(0.2)
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        refused = requests.post(f"{base}/predict", json=rows, timeout=10)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert requests.get(f"{base}/version", timeout=5).status_code == 401
        ok = requests.post(f"{base}/predict", json=rows, headers={"Authorization": "Bearer first-key-7c1d2e"})
        assert ok.status_code == 200 and len(ok.json()["predictions"]) == 3
        keys.write_text("first-key-7c1d2e\nsecond-key-9f8e7d\n")  # in place: a bind-mounted file keeps its inode
        deadline = time.monotonic() + 30
        answers: list[int] = []
        while time.monotonic() < deadline:
            answers = [  # several calls: both workers must have reloaded
                requests.post(f"{base}/predict", json=rows, headers={"X-API-Key": "second-key-9f8e7d"}).status_code
                for _ in range(6)
            ]
            if set(answers) == {200}:
                break
            time.sleep(1)
        assert set(answers) == {200}, answers
        assert (
            requests.post(
                f"{base}/invocations",
                json={"dataframe_records": rows["rows"]},
                headers={"X-API-Key": "first-key-7c1d2e"},
                timeout=10,
            ).status_code
            == 200
        )
    finally:
        box.remove(force=True)
