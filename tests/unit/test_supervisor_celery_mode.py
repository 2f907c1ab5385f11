"""The platform's Celery mode without the platform: its own state folder and defaults, the services it runs
instead of Airflow standalone, and the name, scratch root and log port each worker gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from flightdeck import settings
from flightdeck.supervisor import celery_mode, embedded
from flightdeck.supervisor.process import SupervisorError

CELERY = {
    "FLIGHTDECK_EXECUTOR": "celery",
    "FLIGHTDECK_STATE_DIR": "/srv/fd-celery",
    "FLIGHTDECK_AIRFLOW_PORT": "9180",
    "FLIGHTDECK_POSTGRES_PORT": "9432",
    "FLIGHTDECK_REDIS_PORT": "9379",
}


def test_each_mode_keeps_its_own_state_folder_and_celery_adds_its_servers():
    local = settings.environment({})
    celery = settings.environment({"FLIGHTDECK_EXECUTOR": "celery"})
    assert Path(local["FLIGHTDECK_STATE_DIR"]).name == ".flightdeck"
    assert Path(celery["FLIGHTDECK_STATE_DIR"]).name == ".flightdeck-celery"
    assert celery["FLIGHTDECK_WORKSPACE_DIR"] == celery["FLIGHTDECK_STATE_DIR"] + "/workspace"
    assert (celery["FLIGHTDECK_POSTGRES_PORT"], celery["FLIGHTDECK_REDIS_PORT"]) == ("5432", "6379")
    assert celery["FLIGHTDECK_CELERY_WORKERS"] == "2"
    assert "FLIGHTDECK_POSTGRES_PORT" not in local and "FLIGHTDECK_CELERY_WORKERS" not in local


def test_an_unknown_executor_is_named():
    with pytest.raises(ValueError, match="FLIGHTDECK_EXECUTOR='kubernetes'"):
        settings.environment({"FLIGHTDECK_EXECUTOR": "kubernetes"})


def test_celery_mode_runs_postgres_redis_and_airflow_components_instead_of_standalone():
    env = embedded.full_environment(CELERY)
    s = embedded.services(env)
    assert list(s) == [
        "s3",
        "mlflow",
        "dockerd",
        "registry",
        "postgres",
        "redis",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker-1",
        "airflow-worker-2",
    ]
    assert embedded.airflow_keys(env) == list(s)[6:]
    assert s["mlflow"].command[2:4] == ["--backend-store-uri", "postgresql+psycopg2://mlflow@127.0.0.1:9432/mlflow"]
    pg = s["postgres"]
    assert pg.command[-10:] == [
        "-D",
        "/srv/fd-celery/postgres",
        "-p",
        "9432",
        "-h",
        "127.0.0.1",
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
    ]
    assert pg.ports == [9432] and pg.match == "/srv/fd-celery/postgres"
    assert s["redis"].ports == [9379] and "--appendonly" in s["redis"].command
    scheduler = s["airflow-scheduler"]
    assert scheduler.command[1:] == ["scheduler"] and scheduler.cwd == Path("/srv/fd-celery/airflow")
    assert scheduler.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert (
        scheduler.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://airflow@127.0.0.1:9432/airflow"
    )
    assert scheduler.env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:9379/0"
    assert scheduler.env["AIRFLOW_HOME"] == "/srv/fd-celery/airflow"  # the standalone's variables stay
    assert s["airflow-api-server"].ports == [9180] and s["airflow-api-server"].match == "airflow api"
    assert s["airflow-triggerer"].ports == [9180 + embedded.AIRFLOW_TRIGGER_LOG_OFFSET]


def test_each_worker_has_its_own_name_and_scratch_root_and_serves_no_logs():
    s = embedded.services(embedded.full_environment({**CELERY, "FLIGHTDECK_CELERY_WORKERS": "3"}))
    workers = [s[f"airflow-worker-{i}"] for i in (1, 2, 3)]
    assert [w.env["FLIGHTDECK_WORKER_NAME"] for w in workers] == ["worker-1", "worker-2", "worker-3"]
    assert [w.env["FLIGHTDECK_WORKSPACE_DIR"] for w in workers] == [
        f"/srv/fd-celery/workers/worker-{i}/workspace" for i in (1, 2, 3)
    ]
    assert len({w.env["TMPDIR"] for w in workers}) == 3
    # a running task's log cannot be fetched from worker-N (not a resolvable host): read from S3 once it ends
    assert [list(w.ports) for w in workers] == [[], [], []] and all("--skip-serve-logs" in w.command for w in workers)
    assert workers[0].command[1:5] == ["celery", "worker", "--celery-hostname", "worker-1@%h"]
    assert workers[0].env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "flightdeck.settings.worker_hostname"
    assert all(w.stop_descendants for w in workers), "a stopped worker takes its running tasks with it"


def test_down_stops_the_scheduler_first_and_the_api_server_last():
    platform = embedded.EmbeddedPlatform(CELERY)
    assert platform._airflow_stop_order() == [
        "airflow-scheduler",
        "airflow-worker-1",
        "airflow-worker-2",
        "airflow-triggerer",
        "airflow-dag-processor",
        "airflow-api-server",
    ]


@pytest.mark.parametrize("count", ["0", "two", "-1"])
def test_a_worker_count_that_is_not_a_positive_number_is_named(count):
    with pytest.raises(SupervisorError, match=f"FLIGHTDECK_CELERY_WORKERS='{count}'"):
        celery_mode.worker_names({"FLIGHTDECK_CELERY_WORKERS": count})


def test_a_task_instance_records_the_worker_name_else_the_machine(monkeypatch):
    monkeypatch.setenv("FLIGHTDECK_WORKER_NAME", "worker-2")
    assert settings.worker_hostname() == "worker-2"
    monkeypatch.delenv("FLIGHTDECK_WORKER_NAME")
    import socket

    assert settings.worker_hostname() == socket.getfqdn()


def test_the_workspace_root_follows_the_worker(monkeypatch, tmp_path):
    from flightdeck import pipeline_config
    from flightdeck.data.sync import Workspace

    monkeypatch.setenv("FLIGHTDECK_WORKSPACE_DIR", str(tmp_path / "worker-1"))
    ws = Workspace(pipeline_config.load("breast_cancer"), store=None)  # type: ignore[arg-type]
    assert ws.root.parent == tmp_path / "worker-1"
