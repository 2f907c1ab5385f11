"""train.runner: which runner params.yaml picks, that the choice stays out of the model's params, how the
train step dispatches, and the shapes of what goes to a container or to ECS (task definition, run_task,
EcsRunTaskOperator's arguments)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from flightdeck import pipeline_config, retrain, train_runner
from flightdeck.train_runner import EcsTrainConfig, EcsTrainTask, Runner, TrainRequest

SYNCED = {"dataset": "breast_cancer", "namespace": "ns1", "params_hash": "abc", "data_version": "d" * 32}


def _params(tmp_path: Path, runner: Any) -> Path:
    raw = pipeline_config.read_params()
    if runner is None:
        raw["train"].pop("runner", None)
    else:
        raw["train"]["runner"] = runner
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_params_yaml_ships_the_worker_runner():
    assert pipeline_config.read_params()["train"]["runner"] == "worker"
    assert train_runner.configured_runner() is Runner.WORKER


@pytest.mark.parametrize("value", ["worker", "container", "ecs"])
def test_configured_runner_reads_train_runner(value):
    assert train_runner.configured_runner({"train": {"runner": value}}) is Runner(value)


def test_runner_defaults_to_worker_when_unset():
    assert train_runner.configured_runner({"train": {}}) is Runner.WORKER
    assert train_runner.configured_runner({}) is Runner.WORKER


def test_unknown_runner_is_a_config_error_naming_the_choices():
    with pytest.raises(pipeline_config.ConfigError, match=r"train.runner 'kubernetes'.*worker.*container.*ecs"):
        train_runner.configured_runner({"train": {"runner": "kubernetes"}})
    with pytest.raises(pipeline_config.ConfigError):
        train_runner.resolve_runner("lambda")


def test_resolve_runner_argument_wins_over_params():
    assert train_runner.resolve_runner("ecs") is Runner.ECS
    assert train_runner.resolve_runner(Runner.CONTAINER) is Runner.CONTAINER
    assert train_runner.resolve_runner(None) is train_runner.configured_runner()


def test_runner_is_not_a_model_parameter(tmp_path):
    """Switching runners must not retrain (params hash) nor show as an MLflow param or a DVC param."""
    on_worker = pipeline_config.load("breast_cancer", path=_params(tmp_path, "worker"))
    in_container = pipeline_config.load("breast_cancer", path=_params(tmp_path, "container"))
    assert "runner" not in on_worker.params["train"]
    assert on_worker.params == in_container.params
    assert on_worker.params_hash == in_container.params_hash


def test_train_dispatches_on_the_runner(monkeypatch):
    seen: dict[str, Any] = {}

    def fake(name):
        def run(*args, **kwargs):
            seen[name] = (args, kwargs)
            return {"runner": name}

        return run

    monkeypatch.setattr(retrain, "train_in_process", fake("worker"))
    monkeypatch.setattr(train_runner, "train_in_container", fake("container"))
    monkeypatch.setattr(train_runner, "train_on_ecs", fake("ecs"))
    monkeypatch.setattr(retrain.settings, "git_sha", lambda: "f" * 40)
    assert retrain.train(SYNCED, dag_id="retrain", run_id="r1", runner="worker") == {"runner": "worker"}
    assert seen["worker"][1]["run_id"] == "r1"
    assert retrain.train(SYNCED, dag_id="retrain", run_id="r1", runner="container") == {"runner": "container"}
    request = seen["container"][0][0]
    assert isinstance(request, TrainRequest)
    assert (request.synced, request.dag_id, request.run_id, request.git_sha) == (SYNCED, "retrain", "r1", "f" * 40)
    assert retrain.train(SYNCED, dag_id="retrain", run_id="r2", runner="ecs") == {"runner": "ecs"}
    assert seen["ecs"][0][0].run_id == "r2" and seen["ecs"][0][0].token != request.token


def test_train_reads_the_runner_from_params_when_it_starts(monkeypatch):
    monkeypatch.setattr(train_runner, "read_params", lambda: {"train": {"runner": "container"}})
    monkeypatch.setattr(train_runner, "train_in_container", lambda request, **kw: {"ran": "container"})
    assert retrain.train(SYNCED, run_id="r1") == {"ran": "container"}


def test_request_round_trips_and_is_keyed_by_dataset_run_and_attempt():
    req = TrainRequest(synced=SYNCED, dag_id="retrain", run_id="manual__2026-01-01T00:00:00+00:00", git_sha="a" * 40)
    assert TrainRequest.from_json(req.to_json()) == req
    assert req.request_key == f"train-runs/ns1/breast_cancer/manual__2026-01-01T00_00_00_00_00/{req.token}/request.json"
    assert req.result_key.endswith(f"/{req.token}/result.json")
    retry = TrainRequest(synced=SYNCED, dag_id="retrain", run_id=req.run_id, git_sha="a" * 40)
    assert retry.result_key != req.result_key  # a retry never reads an older attempt's result
    with pytest.raises(train_runner.TrainRunnerError, match="git_sha"):
        TrainRequest.from_json(json.dumps({"synced": {}, "dag_id": "d", "run_id": "r", "token": "t"}))


def test_container_environment_carries_the_platform_not_the_state_dir():
    environ = {
        "FLIGHTDECK_STATE_DIR": "/worker/state",
        "FLIGHTDECK_WORKSPACE_DIR": "/worker/state/workers/worker-1/workspace",
        "FLIGHTDECK_S3_PORT": "8533",
        "FLIGHTDECK_MLFLOW_PORT": "5201",
        "PATH": "/usr/bin",
        "HOME": "/root",
    }
    env = train_runner.container_environment(environ, credentials=False)
    assert env["FLIGHTDECK_S3_ENDPOINT"] == "http://127.0.0.1:8533"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5201"
    assert env["FLIGHTDECK_DATA_BUCKET"] == "flightdeck-data"
    assert (
        "FLIGHTDECK_STATE_DIR" not in env
        and "FLIGHTDECK_WORKSPACE_DIR" not in env
        and "PATH" not in env
        and "HOME" not in env
    )
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AIRFLOW_CONN_AWS_DEFAULT"} & set(env)
    local = train_runner.container_environment(environ, credentials=True)
    assert local["AWS_ACCESS_KEY_ID"] == "flightdeck"
    assert json.loads(local["AIRFLOW_CONN_AWS_DEFAULT"])["extra"]["endpoint_url"] == "http://127.0.0.1:8533"


def test_log_lines_are_reassembled_across_chunks():
    chunks = [b"Running stage 'pre", b"pare':\n> python -m flightdeck", b".stages.prepare\nlast", b" line"]
    assert list(train_runner._lines(chunks)) == [
        "Running stage 'prepare':",
        "> python -m flightdeck.stages.prepare",
        "last line",
    ]


def _ecs_task(**cfg: Any) -> EcsTrainTask:
    config = EcsTrainConfig(
        cluster="ml",
        image="123456789012.dkr.ecr.us-east-1.amazonaws.com/flightdeck-train:0123456789ab",
        subnets=("subnet-1", "subnet-2"),
        security_groups=("sg-1",),
        execution_role_arn="arn:aws:iam::123456789012:role/exec",
        task_role_arn="arn:aws:iam::123456789012:role/train",
        **cfg,
    )
    return EcsTrainTask(
        cfg=config,
        command=tuple(train_runner.command("s3://flightdeck-data/train-runs/x/r/t/request.json")),
        environment={"MLFLOW_TRACKING_URI": "https://mlflow.example", "FLIGHTDECK_DATA_BUCKET": "flightdeck-data"},
        started_by="flightdeck-train:t",
    )


def test_ecs_task_definition_logs_to_cloudwatch_with_awslogs():
    td = _ecs_task().task_definition()
    (container,) = td["containerDefinitions"]
    assert container["name"] == "train" and container["essential"] is True
    assert container["image"].endswith("/flightdeck-train:0123456789ab")
    assert container["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": "/flightdeck/train",
            "awslogs-region": "us-east-1",
            "awslogs-stream-prefix": "train",
            "awslogs-create-group": "true",
        },
    }
    assert container["environment"] == [
        {"name": "FLIGHTDECK_DATA_BUCKET", "value": "flightdeck-data"},
        {"name": "MLFLOW_TRACKING_URI", "value": "https://mlflow.example"},
    ]
    assert "command" not in container  # per run, in the overrides
    assert td["family"] == "flightdeck-train" and td["networkMode"] == "awsvpc"
    assert td["requiresCompatibilities"] == ["FARGATE"] and (td["cpu"], td["memory"]) == ("1024", "4096")
    assert td["taskRoleArn"].endswith("role/train") and td["executionRoleArn"].endswith("role/exec")


def test_ecs_bridge_network_sizes_the_container_not_the_task():
    task = _ecs_task(network_mode="bridge", launch_type="EC2", memory="2048")
    td = task.task_definition()
    assert td["containerDefinitions"][0]["memory"] == 2048 and "requiresCompatibilities" not in td
    assert "networkConfiguration" not in task.run_task_request("arn:td")


def test_ecs_run_task_request_carries_the_command_and_network():
    req = _ecs_task().run_task_request("arn:aws:ecs:us-east-1:123456789012:task-definition/flightdeck-train:3")
    assert req["cluster"] == "ml" and req["count"] == 1 and req["launchType"] == "FARGATE"
    assert req["taskDefinition"].endswith("flightdeck-train:3")
    assert req["overrides"] == {
        "containerOverrides": [
            {"name": "train", "command": ["run", "--request", "s3://flightdeck-data/train-runs/x/r/t/request.json"]}
        ]
    }
    assert req["networkConfiguration"] == {
        "awsvpcConfiguration": {
            "subnets": ["subnet-1", "subnet-2"],
            "securityGroups": ["sg-1"],
            "assignPublicIp": "DISABLED",
        }
    }
    assert req["startedBy"] == "flightdeck-train:t"


def test_the_same_run_as_ecs_run_task_operator_arguments():
    """EcsRunTaskOperator (Amazon provider) accepts the arguments, and its log stream is the one we read."""
    from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator

    task = _ecs_task()
    kwargs = task.operator_kwargs("flightdeck-train", aws_conn_id="aws_default")
    op = EcsRunTaskOperator(task_id="train", **kwargs)
    assert op.overrides == task.overrides() and op.cluster == "ml" and op.launch_type == "FARGATE"
    assert op.network_configuration == task.network_configuration()
    assert op.awslogs_group == "/flightdeck/train"
    # the operator reads `<awslogs_stream_prefix>/<task id>`; awslogs writes `<prefix>/<container>/<task id>`
    arn = "arn:aws:ecs:us-east-1:123456789012:task/ml/0123abcd"
    assert f"{op.awslogs_stream_prefix}/0123abcd" == task.log_stream(arn)


def test_ecs_config_from_env_needs_an_image_and_falls_back_to_the_deploy_target():
    with pytest.raises(pipeline_config.ConfigError, match="FLIGHTDECK_ECS_TRAIN_IMAGE"):
        EcsTrainConfig.from_env({})
    cfg = EcsTrainConfig.from_env(
        {
            "FLIGHTDECK_ECS_TRAIN_IMAGE": "repo/flightdeck-train:abc",
            "FLIGHTDECK_ECS_CLUSTER": "deploy-cluster",
            "FLIGHTDECK_ECS_SUBNETS": "subnet-a,subnet-b",
            "FLIGHTDECK_ECS_TRAIN_SUBNETS": "subnet-t",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
    )
    assert cfg.cluster == "deploy-cluster" and cfg.subnets == ("subnet-t",) and cfg.region == "eu-west-1"
    assert cfg.task_role_arn == ""  # never the serving task's role


def test_user_code_datasets_are_refused_off_the_worker(monkeypatch):
    """train.code_path lives in the checkout, not in the train image: say so instead of failing in the container."""
    real = retrain.run_config

    def with_user_code(synced):
        cfg = real(synced)
        cfg.params["train"]["code_path"] = "examples/my_model"
        return cfg

    monkeypatch.setattr(retrain, "run_config", with_user_code)
    monkeypatch.setattr(train_runner, "train_in_container", lambda *a, **k: pytest.fail("must not run"))
    with pytest.raises(pipeline_config.ConfigError, match=r"train.code_path 'examples/my_model'.*runner: worker"):
        retrain.train(SYNCED, run_id="r1", runner="container")


def test_request_keeps_the_schema_column_order():
    """The schema's column order is the model's feature order: a sorted round trip reordered the container's
    signature (found by test_train_container.py's field-by-field comparison)."""
    columns = {"mean_radius": {"type": "number"}, "area_error": {"type": "number"}, "diagnosis": {"type": "integer"}}
    synced = {**SYNCED, "schema": {"schema": {"columns": columns}, "target": "diagnosis", "task": "classification"}}
    req = TrainRequest(synced=synced, dag_id="retrain", run_id="r", git_sha="a" * 40)
    back = TrainRequest.from_json(req.to_json())
    assert list(back.synced["schema"]["schema"]["columns"]) == ["mean_radius", "area_error", "diagnosis"]
