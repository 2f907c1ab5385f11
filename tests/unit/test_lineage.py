"""Lineage and the `flightdeck` CLI on real local parts: deployment records written by the deploy code's
RecordStore into an in-process S3 (moto), a real MLflow tracking store (SQLite in tmp), and a real HTTP
server standing where the load balancer would be."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flightdeck import cli, lineage
from flightdeck import settings as settings_mod
from flightdeck.deploy import records as rec
from flightdeck.deploy.params import DeployParams

LB_PORT = 8601  # ops' private range


@pytest.fixture(scope="module")
def mlflow_models(tmp_path_factory) -> tuple[str, dict[str, dict]]:
    """Two trained-and-registered versions with different params, metrics and data versions."""
    import mlflow
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("lineage", artifact_location=str(root / "artifacts"))
    out = {}
    for version, (c, f1, data) in enumerate([("1.0", 0.91, "md5-aaa"), ("0.5", 0.94, "md5-bbb")], start=1):
        run = client.create_run(
            exp, run_name=f"train-{version}", tags={"data_version": data, "git_sha": f"{version}" * 40, "dataset": "bc"}
        )
        client.log_param(run.info.run_id, "C", c)
        client.log_param(run.info.run_id, "max_iter", "500")
        client.log_metric(run.info.run_id, "f1_macro", f1)
        client.set_terminated(run.info.run_id)
        if version == 1:
            client.create_registered_model("bc-model")
        mv = client.create_model_version("bc-model", f"runs:/{run.info.run_id}/model", run.info.run_id)
        out[str(mv.version)] = {"run_id": run.info.run_id, "data_version": data, "f1": f1, "C": c, "experiment_id": exp}
    client.set_registered_model_alias("bc-model", "champion", "2")
    client.set_registered_model_alias("bc-model", "previous", "1")
    assert mlflow.__version__
    return uri, out


def _record(
    store: rec.RecordStore, run_id: str, version: str, models: dict, outcome: str, digest: str, started: str
) -> rec.DeploymentRecord:
    """A finished deploy as the steps leave it: spec, status, and the events `started` then live/rolled back
    (4 s later)."""
    dep = rec.deployment_id(run_id)
    store.create(rec.DeploymentSpec(dep, "local", run_id, params=DeployParams(strategy="blue_green", bake_seconds=20)))
    finished = started.replace(":01Z", ":05Z")
    rolled_back = outcome == "rolled_back"
    reason = "wait_healthy: 0/1 up" if rolled_back else ""
    return store.update(
        "local",
        dep,
        step="resolve",
        detail={"status": "ok"},
        model=rec.ModelInfo(
            name="bc-model",
            version=version,
            alias="champion",
            run_id=models[version]["run_id"],
            data_version=models[version]["data_version"],
        ),
        image=rec.ImageInfo(
            tag=f"reg:5050/bc-model:v{version}-abc",
            digest=digest,
            pinned=f"reg:5050/bc-model@{digest}",
            labels={"org.opencontainers.image.revision": f"sha{version}"},
        ),
        revision=f"v{version}-rev",
        outcome=rec.Outcome(outcome),
        started_at=started,
        finished_at=finished,
        events=[rec.Event(rec.EventKind.STARTED, started)],
        event=rec.Event(rec.EventKind.ROLLED_BACK if rolled_back else rec.EventKind.LIVE, finished, reason=reason),
        rollback=(
            rec.RollbackInfo(reason=reason, failed_step="wait_healthy", at=finished, restored={"v1-rev": 100})
            if rolled_back
            else None
        ),
    )


def _settings(mlflow_uri: str, lb_url: str = "http://127.0.0.1:9") -> settings_mod.Settings:
    import dataclasses

    return dataclasses.replace(settings_mod.load(), mlflow_uri=mlflow_uri, lb_url=lb_url, airflow_url="http://af:8080")


def test_records_are_found_by_run_id_or_deployment_id_and_listed_newest_first(store, mlflow_models):
    _, models = mlflow_models
    _record(store, "manual__2026-01-01T00:00:00+00:00", "1", models, "succeeded", "sha256:111", "2026-01-01T00:00:01Z")
    _record(
        store, "manual__2026-01-02T00:00:00+00:00", "2", models, "rolled_back", "sha256:222", "2026-01-02T00:00:01Z"
    )
    by_run = lineage.find_record(store, "manual__2026-01-02T00:00:00+00:00")
    by_dep = lineage.find_record(store, "manual__2026-01-02T00_00_00_00_00", target="local")
    assert by_run.deployment_id == by_dep.deployment_id == "manual__2026-01-02T00_00_00_00_00"
    with pytest.raises(LookupError, match="no deployment record 'nope'"):
        lineage.find_record(store, "nope")
    rows = lineage.history(store, "local", "http://af:8080")  # events, newest first
    assert [(r["event"], r["model_version"]) for r in rows] == [
        ("rolled_back", "2"),
        ("started", "2"),
        ("live", "1"),
        ("started", "1"),
    ]
    assert rows[0]["at"] == "2026-01-02T00:00:05Z" and rows[0]["reason"] == "wait_healthy: 0/1 up"
    assert rows[0]["rollback"] == {
        "reason": "wait_healthy: 0/1 up",
        "failed_step": "wait_healthy",
        "restored": {"v1-rev": 100},
    }
    assert rows[0]["airflow_url"] == "http://af:8080/dags/deploy/runs/manual__2026-01-02T00%3A00%3A00%2B00%3A00"
    # RecordStore.put keeps current/<target>.json at the last finished deploy
    assert lineage.current_record(store, "local").status.model["version"] == "2"
    text = cli.render_history(rows)
    assert "2026-01-02T00:00:05  rolled_back     bc-model v2" in text and "reason: wait_healthy: 0/1 up" in text
    assert "2026-01-01T00:00:05  live            bc-model v1" in text


def test_diff_names_every_changed_link(store, mlflow_models):
    uri, models = mlflow_models
    _record(store, "run-a", "1", models, "succeeded", "sha256:111", "2026-01-01T00:00:01Z")
    _record(store, "run-b", "2", models, "succeeded", "sha256:222", "2026-01-02T00:00:01Z")
    d = lineage.diff("run-a", "run-b", store, settings=_settings(uri))
    ch = d["changes"]
    assert ch["model"] == {
        "version": {"a": "1", "b": "2"},
        "run_id": {"a": models["1"]["run_id"], "b": models["2"]["run_id"]},
    }
    assert ch["data"] == {"data_version": {"a": "md5-aaa", "b": "md5-bbb"}}
    assert ch["params"] == {"C": {"a": "1.0", "b": "0.5"}}  # max_iter unchanged: not listed
    assert ch["metrics"]["f1_macro"]["delta"] == pytest.approx(0.03)
    assert ch["image"]["digest"] == {"a": "sha256:111", "b": "sha256:222"}
    assert ch["code"]["image_git_sha"] == {"a": "sha1", "b": "sha2"}
    assert ch["code"]["training_git_sha"] == {"a": "1" * 40, "b": "2" * 40}
    assert not d["identical"] and d["errors"] == []
    text = cli.render_diff(d)
    assert "f1_macro: 0.91 -> 0.94  (+0.03)" in text and "C: 1.0 -> 0.5" in text
    same = lineage.diff("run-b", "run-b", store, settings=_settings(uri))
    assert same["identical"] and not any(same["changes"].values())


def test_model_lineage_reads_aliases_params_metrics_and_tags(mlflow_models):
    uri, models = mlflow_models
    m = lineage.model_lineage("bc-model", "2", uri, mlflow_url="http://mlflow:5001")
    assert m["aliases"] == ["champion"] and m["run_id"] == models["2"]["run_id"]
    assert m["params"] == {"C": "0.5", "max_iter": "500"} and m["metrics"] == {"f1_macro": 0.94}
    assert (m["data_version"], m["git_sha"], m["dataset"]) == ("md5-bbb", "2" * 40, "bc")
    assert m["run_url"] == f"http://mlflow:5001/#/experiments/{models['2']['experiment_id']}/runs/{m['run_id']}"
    missing = lineage.model_lineage("bc-model", "9", uri)
    assert missing["error"] and missing["run_id"] == ""
    assert lineage.model_lineage("", "0", uri)["error"].startswith("no registered model version")


class _VersionHandler(BaseHTTPRequestHandler):
    body: dict = {}

    def do_GET(self) -> None:  # http.server's naming
        payload = json.dumps(self.body).encode()
        self.send_response(200 if self.path == "/version" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def lb_server() -> Iterator[type[_VersionHandler]]:
    handler = type("H", (_VersionHandler,), {"body": {}})
    server = ThreadingHTTPServer(("127.0.0.1", LB_PORT), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler
    server.shutdown()
    server.server_close()


def test_status_flags_a_live_version_that_disagrees_with_the_record(store, mlflow_models, lb_server):
    uri, models = mlflow_models
    _record(store, "run-a", "1", models, "succeeded", "sha256:111", "2026-01-01T00:00:01Z")
    lb_server.body = {"model_name": "bc-model", "model_version": "2", "run_id": models["2"]["run_id"]}
    s = _settings(uri, lb_url=f"http://127.0.0.1:{LB_PORT}")
    st = lineage.status("local", store, settings=s, backend_factory=None)
    assert st["live"]["ok"] and st["live"]["version"]["model_version"] == "2"
    assert st["deployment"]["run_id"] == "run-a"
    assert st["model"]["version"] == "2" and st["model"]["aliases"] == ["champion"]  # what serves, not the record
    assert st["checks"]["live_matches_record"] is False
    assert st["checks"]["mlflow_run_matches"] is False
    assert any("the LB serves bc-model v2 but the deployment record says bc-model v1" in w for w in st["warnings"])
    # reg:5050 does not resolve: the registry check fails instead of passing silently
    assert st["checks"]["digest_matches_registry"] is False and st["image"]["registry_error"]
    lb_server.body = {"model_name": "bc-model", "model_version": "1", "run_id": models["1"]["run_id"]}
    st = lineage.status("local", store, settings=s, backend_factory=None)
    assert st["checks"]["live_matches_record"] and st["checks"]["mlflow_run_matches"]
    assert "model     bc-model v1  aliases previous" in cli.render_status(st)


def test_status_without_a_deployment_or_a_live_lb(store, mlflow_models):
    st = lineage.status("local", store, settings=_settings(mlflow_models[0]), backend_factory=None)
    assert st["deployment"] is None and not st["live"]["ok"]
    assert "no finished deployment on target local" in st["warnings"]


def test_cli_json_and_exit_codes(store, mlflow_models, monkeypatch, capsys):
    uri, models = mlflow_models
    _record(store, "run-a", "1", models, "succeeded", "sha256:111", "2026-01-01T00:00:01Z")
    _record(store, "run-b", "2", models, "succeeded", "sha256:222", "2026-01-02T00:00:01Z")
    monkeypatch.setattr(cli, "_store", lambda s: store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert cli.main(["diff", "run-a", "run-b", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changes"]["model"]["version"] == {"a": "1", "b": "2"}
    assert cli.main(["history", "--json"]) == 0
    events = [(r["run_id"], r["event"]) for r in json.loads(capsys.readouterr().out)]
    assert events == [("run-b", "live"), ("run-b", "started"), ("run-a", "live"), ("run-a", "started")]
    assert cli.main(["diff", "run-a", "missing"]) == 1
    assert "no deployment record 'missing'" in capsys.readouterr().err


def test_image_reference_parsing():
    assert lineage._split_ref("127.0.0.1:5050/m@sha256:ab") == ("127.0.0.1:5050", "m", "sha256:ab")
    assert lineage._split_ref("127.0.0.1:5050/team/m:v1-abc") == ("127.0.0.1:5050", "team/m", "v1-abc")
    assert lineage._split_ref("127.0.0.1:5050/m") == ("127.0.0.1:5050", "m", "latest")


def test_a_deploy_in_flight_is_a_note_not_a_warning(store, mlflow_models, lb_server):
    uri, models = mlflow_models
    _record(store, "run-a", "1", models, "succeeded", "sha256:111", "2026-01-01T00:00:01Z")
    store.create(rec.DeploymentSpec("run-b", "local", "run-b"))
    store.update("local", "run-b", started_at="2026-01-02T00:00:01Z")
    lb_server.body = {"model_name": "bc-model", "model_version": "1", "run_id": models["1"]["run_id"]}
    st = lineage.status(
        "local", store, settings=_settings(uri, lb_url=f"http://127.0.0.1:{LB_PORT}"), backend_factory=None
    )
    assert st["notes"] == ["deploy run-b is in progress"]
    assert st["latest_attempt"]["outcome"] == "in_progress" and st["deployment"]["run_id"] == "run-a"
    assert not any("in progress" in w for w in st["warnings"])
    assert "note      deploy run-b is in progress" in cli.render_status(st)
