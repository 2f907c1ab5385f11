"""`flightdeck status` when the live model version was deleted from the registry: a warning, not a crash.

Real parts as in test_lineage: a real MLflow tracking store (SQLite in tmp), deployment records written
by the deploy code's RecordStore into an in-process S3 (moto), and an HTTP server standing where the
load balancer would be, answering /version for the deleted version.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flightdeck import cli, lineage
from flightdeck import settings as settings_mod
from flightdeck.deploy import records as rec

LB_PORT = 8602  # ops' private range (test_lineage uses 8601)
NAME = "status-model"


@pytest.fixture()
def deleted_champion(tmp_path) -> tuple[str, str]:
    """v1 and v2 registered, v2 champion, then v2 deleted: MLflow drops its alias with it."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("status", artifact_location=str(tmp_path / "artifacts"))
    client.create_registered_model(NAME)
    runs = []
    for _ in range(2):
        run = client.create_run(exp, tags={"data_version": "md5-x"})
        client.set_terminated(run.info.run_id)
        client.create_model_version(NAME, f"runs:/{run.info.run_id}/model", run.info.run_id)
        runs.append(run.info.run_id)
    client.set_registered_model_alias(NAME, "champion", "2")
    client.delete_model_version(NAME, "2")
    assert "champion" not in (client.get_registered_model(NAME).aliases or {})
    return uri, runs[1]


@pytest.fixture()
def lb() -> Iterator[str]:
    """What the load balancer answers: the deleted v2 is what serves."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"model_name": NAME, "model_version": "2", "run_id": "r2"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", LB_PORT), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{LB_PORT}"
    server.shutdown()


def test_status_warns_when_the_live_version_is_gone_from_the_registry(store, deleted_champion, lb):
    uri, run_id = deleted_champion
    store.create(rec.DeploymentSpec("manual__live", "local", "manual__live"))
    store.update(
        "local",
        "manual__live",
        model=rec.ModelInfo(name=NAME, version="2", alias="champion", run_id=run_id, data_version="md5-x"),
        image=rec.ImageInfo(tag="reg/status-model:v2", digest="", pinned="sha256:abc"),
        revision="v2-rev",
        outcome=rec.Outcome.SUCCEEDED,
    )
    s = dataclasses.replace(settings_mod.load(), mlflow_uri=uri, lb_url=lb, airflow_url="http://af:8080")

    st = lineage.status("local", store, settings=s, backend_factory=None)

    assert st["live"]["ok"] and st["checks"]["live_matches_record"]
    assert st["model"]["missing"] is True
    gone = [w for w in st["warnings"] if "is gone from the MLflow registry" in w]
    assert gone == [
        f"the live model {NAME} v2 is gone from the MLflow registry (deleted?): its lineage is unknown, and the "
        "retrain's champion gate refuses to promote against it until it is restored or the champion alias is "
        "set by hand"
    ]
    assert "mlflow_run_matches" not in st["checks"]  # not a MISMATCH: there is nothing left to compare
    text = cli.render_status(st)
    assert f"warning   the live model {NAME} v2 is gone from the MLflow registry" in text
    assert json.loads(json.dumps(st, default=str))["model"]["missing"] is True  # --json works too


def test_status_of_a_registered_live_version_has_no_registry_warning(store, deleted_champion, lb):
    """The same setup serving v1, which the registry still holds: no registry warning."""
    uri, _ = deleted_champion
    from mlflow import MlflowClient

    v1 = MlflowClient(tracking_uri=uri).get_model_version(NAME, "1")
    store.create(rec.DeploymentSpec("manual__v1", "local", "manual__v1"))
    store.update(
        "local",
        "manual__v1",
        model=rec.ModelInfo(name=NAME, version="1", alias="", run_id=v1.run_id, data_version=""),
        image=rec.ImageInfo(pinned="sha256:def", digest=""),
        revision="v1-rev",
        outcome=rec.Outcome.SUCCEEDED,
    )
    s = dataclasses.replace(settings_mod.load(), mlflow_uri=uri, lb_url="http://127.0.0.1:9", airflow_url="x")
    st = lineage.status("local", store, settings=s, backend_factory=None)
    assert st["model"]["missing"] is False and st["model"]["error"] is None
    assert not [w for w in st["warnings"] if "registry" in w or "MLflow lookup" in w]
    assert st["checks"]["mlflow_run_matches"] is True
