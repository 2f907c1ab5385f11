"""train.runner ecs against a moto server: the task definition (awslogs), run_task, the wait until the task
stops, the log lines copied from CloudWatch Logs and the summary read from S3 are real API calls with real
request/response shapes, through the provider's EcsHook and AwsLogsHook.

moto runs no container: nothing trains here. What the train container would have done is INJECTED when
the runner first describes its task (moto moves a task to STOPPED over a few describe calls, exit code 0):
its awslogs lines go to CloudWatch Logs and its summary to S3, both on moto; a failing container is
injected by rewriting describe_tasks' exit code. That the container itself trains like the worker is
proven locally (test_train_container.py), with the same image and command.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from flightdeck import train_runner
from flightdeck.data.store import ObjectStore
from flightdeck.train_runner import EcsTrainConfig, TrainRequest, TrainRunnerError, TrainTaskFailed
from tests.support.moto_aws import client, moto_server, sandbox

pytestmark = pytest.mark.integration

PORT = 8489
ENDPOINT = f"http://127.0.0.1:{PORT}"
CONN = "moto_train"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/flightdeck-train:0123456789ab"
SYNCED = {"dataset": "breast_cancer", "namespace": "ecs-it", "params_hash": "p" * 32, "data_version": "d" * 32}
SUMMARY = {"mlflow_run_id": "r" * 32, "model_uri": "models:/m-1", "metrics": {"f1_macro": 0.97}, "dataset": "x"}


@pytest.fixture(scope="module")
def moto():
    with moto_server(PORT, CONN) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def cfg(moto) -> EcsTrainConfig:
    infra = sandbox.prerequisites(ENDPOINT)
    # awsvpc tasks in a VPC with DNS hostnames (moto 5.2.5 fails placing one in a VPC without: a 500)
    client(ENDPOINT, "ec2").modify_vpc_attribute(VpcId=infra["vpc"], EnableDnsHostnames={"Value": True})
    client(ENDPOINT, "ecs").create_cluster(clusterName="flightdeck-train-it")
    return EcsTrainConfig(
        cluster="flightdeck-train-it",
        image=IMAGE,
        subnets=tuple(infra["subnets"]),
        security_groups=(infra["security_group"],),
        task_role_arn="arn:aws:iam::123456789012:role/flightdeck-train",
        execution_role_arn="arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
    )


@pytest.fixture(scope="module")
def store(moto) -> ObjectStore:
    s = ObjectStore(aws_conn_id=CONN)
    client(ENDPOINT, "s3").create_bucket(Bucket=s.bucket)
    return s


class ContainerStandIn:
    """The ECS client, with what the train container would have written INJECTED when the runner first
    describes the task: its awslogs lines (CloudWatch Logs) and its summary (S3), and optionally another
    exit code in describe_tasks' answer."""

    def __init__(
        self,
        ecs: Any,
        logs: Any,
        store: ObjectStore,
        task: EcsTrainConfig,
        *,
        exit_code: int = 0,
        write_result: bool = True,
        lines: tuple[str, ...] = (),
    ) -> None:
        self._ecs, self._logs, self._store, self._cfg = ecs, logs, store, task
        self.exit_code, self.write_result, self.lines = exit_code, write_result, lines
        self.ran: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ecs, name)

    def run_task(self, **kwargs: Any) -> Any:
        self.ran["request"] = kwargs
        return self._ecs.run_task(**kwargs)

    def describe_tasks(self, **kwargs: Any) -> Any:
        answer = self._ecs.describe_tasks(**kwargs)
        task = answer["tasks"][0]
        if "arn" not in self.ran:
            self.ran["arn"] = task["taskArn"]
            self._inject(task)
        for c in task.get("containers", []):
            c["exitCode"] = self.exit_code  # INJECTED for the failure case (moto reports 0)
        return answer

    def _inject(self, task: dict[str, Any]) -> None:
        command = task["overrides"]["containerOverrides"][0]["command"]
        request_uri = command[command.index("--request") + 1]
        request = TrainRequest.from_json(self._store.read(request_uri.split("/", 3)[3]))
        stream = f"train/train/{task['taskArn'].rsplit('/', 1)[-1]}"
        try:
            self._logs.create_log_group(logGroupName=self._cfg.log_group)
        except self._logs.exceptions.ResourceAlreadyExistsException:
            pass
        self._logs.create_log_stream(logGroupName=self._cfg.log_group, logStreamName=stream)
        if self.lines:
            self._logs.put_log_events(
                logGroupName=self._cfg.log_group,
                logStreamName=stream,
                logEvents=[{"timestamp": int(time.time() * 1000) + i, "message": m} for i, m in enumerate(self.lines)],
            )
        if self.write_result:
            self._store.write(request.result_key, json.dumps({**SUMMARY, "run_id": request.run_id}).encode())


def _run(cfg, store, **stand_in: Any) -> tuple[dict[str, Any] | None, ContainerStandIn, Exception | None]:
    ecs, logs = train_runner.ecs_clients(CONN)
    fake = ContainerStandIn(ecs, logs, store, cfg, **stand_in)
    request = TrainRequest(
        synced=SYNCED, dag_id="retrain", run_id="scheduled__2026-12-07T00:00:00+00:00", git_sha="a" * 40
    )
    try:
        return (
            train_runner.train_on_ecs(request, cfg=cfg, store=store, clients=(fake, logs), waiter_delay=0),
            fake,
            None,
        )
    except Exception as exc:  # the failure cases assert on it
        return None, fake, exc


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_ecs_train_task_runs_the_request_and_returns_the_containers_summary(cfg, store):
    lines = ("Running stage 'prepare':", "> python -m flightdeck.stages.prepare", "MLflow run rrrr")
    handler, logger = _Lines(), logging.getLogger("flightdeck.train_runner")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        summary, fake, error = _run(cfg, store, lines=lines)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert error is None, error
    assert summary == {**SUMMARY, "run_id": "scheduled__2026-12-07T00:00:00+00:00"}
    ecs = client(ENDPOINT, "ecs")
    (described,) = ecs.describe_tasks(cluster=cfg.cluster, tasks=[fake.ran["arn"]])["tasks"]
    command = described["overrides"]["containerOverrides"][0]["command"]
    assert command[:2] == ["run", "--request"] and command[2].startswith(f"s3://{store.bucket}/train-runs/ecs-it/")
    request = TrainRequest.from_json(store.read(command[2].split("/", 3)[3]))
    assert request.synced == SYNCED and request.git_sha == "a" * 40
    assert described["launchType"] == "FARGATE" and described["startedBy"] == f"flightdeck-train:{request.token}"
    td = ecs.describe_task_definition(taskDefinition=described["taskDefinitionArn"])["taskDefinition"]
    (container,) = td["containerDefinitions"]
    assert container["image"] == IMAGE and container["name"] == "train"
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    assert container["logConfiguration"]["options"]["awslogs-group"] == "/flightdeck/train"
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert "MLFLOW_TRACKING_URI" in env and "FLIGHTDECK_DATA_BUCKET" in env
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AIRFLOW_CONN_AWS_DEFAULT"} & set(env)  # task role
    assert td["taskRoleArn"].endswith("role/flightdeck-train")
    net = fake.ran["request"]["networkConfiguration"]["awsvpcConfiguration"]
    assert net["subnets"] == list(cfg.subnets) and net["securityGroups"] == list(cfg.security_groups)
    logged = [m for m in handler.messages if m.startswith("[ecs ")]
    assert [m.split("] ", 1)[1] for m in logged] == list(lines)


def test_runs_of_the_same_image_share_one_task_definition_revision(cfg, store):
    first, fake1, _ = _run(cfg, store)
    second, fake2, _ = _run(cfg, store)
    ecs = client(ENDPOINT, "ecs")
    arns = [
        ecs.describe_tasks(cluster=cfg.cluster, tasks=[f.ran["arn"]])["tasks"][0]["taskDefinitionArn"]
        for f in (fake1, fake2)
    ]
    assert arns[0] == arns[1]
    assert ecs.list_task_definitions(familyPrefix=cfg.family)["taskDefinitionArns"] == [arns[0]]
    assert first and second


def test_a_non_zero_exit_fails_with_the_log_tail(cfg, store):
    summary, _, error = _run(cfg, store, exit_code=1, lines=("Traceback ...", "DvcReproFailed: stage train"))
    assert summary is None and isinstance(error, TrainTaskFailed)
    assert "exit code 1" in str(error) and "DvcReproFailed: stage train" in str(error)


def test_exit_zero_without_a_summary_is_not_trusted(cfg, store):
    summary, _, error = _run(cfg, store, write_result=False)
    assert summary is None and isinstance(error, TrainRunnerError) and not isinstance(error, TrainTaskFailed)
    assert "wrote no result" in str(error)
