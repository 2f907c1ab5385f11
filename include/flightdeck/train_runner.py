"""Where the retrain DAG's train step runs: on the Airflow worker, in a container of the `train` image, or
as an ECS task (params.yaml `train.runner: worker | container | ecs`, read when the step starts).

Every runner runs the same function, `flightdeck.retrain.train_in_process`: rebuild the dataset's DVC
workspace from S3 at the run's data version, `dvc repro`, then `tracking.log_training_run`. Off the
worker, the step's input (the sync step's output plus the DAG and run ids and the worker's git sha) is
written to S3 as a `TrainRequest`, the container runs `python -m flightdeck.train_runner run --request
s3://...`, writes the step's summary next to it and exits; the worker reads the summary back, so the task's
XCom is the same dict whichever runner trained. A retried task makes a new request (a new attempt token)
and the container finds the MLflow run of the dag run by its tags, as the worker does (reuse when complete,
delete when half done): one run per dag run, whatever ran it.

- `container`: the Docker SDK on the worker's engine (the Docker provider is not in the lock): host
  networking (S3 and MLflow listen on 127.0.0.1 here), the container's output streamed line by line into
  the task log, the container removed after, TrainContainerFailed on a non-zero exit.
- `ecs`: a task definition (awslogs to CloudWatch Logs) and `run_task`, the request the Amazon provider's
  EcsRunTaskOperator makes (`EcsTrainTask.operator_kwargs` gives that operator's arguments); waits with
  the ECS `tasks_stopped` waiter, copies the task's CloudWatch log lines into the task log, TrainTaskFailed
  on a non-zero exit code. Only the API contract is tested, against moto: moto runs no container, so
  there its tests inject the log lines and the summary a container would have written.

S3 layout (data bucket): `train-runs/<dataset key>/<dag run id>/<attempt token>/{request,result}.json`,
kept as the record of what ran where.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from flightdeck import settings as settings_mod
from flightdeck.errors import FlightdeckError
from flightdeck.pipeline_config import RUNNER_KEY, ConfigError, read_params

log = logging.getLogger(__name__)

REQUEST_PREFIX = "train-runs"
RESULT_LINE_PREFIX = "FLIGHTDECK_TRAIN_RESULT "  # the summary as the container's last stdout line (for a human)
CONTAINER_NAME = "train"  # the container in the ECS task definition
# What a container off the worker is given from the worker's environment (settings.environment()): where
# S3, MLflow and the buckets are; never the worker's folders (state dir, workspace root): the container's
# workspace is its own, rebuilt from S3.
_PLATFORM_ENV = re.compile(r"^(FLIGHTDECK_(?!STATE_DIR$|WORKSPACE_DIR$).+|MLFLOW_.+|AWS_DEFAULT_REGION)$")
# Credentials: local keys of the embedded S3 reach a local container; an ECS task uses its task role.
_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AIRFLOW_CONN_AWS_DEFAULT")


class Runner(StrEnum):
    """params.yaml `train.runner`."""

    WORKER = "worker"
    CONTAINER = "container"
    ECS = "ecs"


class TrainRunnerError(FlightdeckError, RuntimeError):
    """The train step could not run, or finished without its summary, off the worker."""


class TrainContainerFailed(TrainRunnerError):
    """The train container exited non-zero; the message has its exit code and last log lines."""


class TrainTaskFailed(TrainRunnerError):
    """The ECS train task stopped with a non-zero (or no) exit code; the message has the reason and log tail."""


def configured_runner(params: Mapping[str, Any] | None = None) -> Runner:
    """The runner params.yaml names (`train.runner`; `params`: params.yaml already read), default worker.

    Raises ConfigError naming the allowed values when it is something else."""
    raw = read_params() if params is None else params
    value = ((raw.get("train") or {}).get(RUNNER_KEY)) or Runner.WORKER.value
    try:
        return Runner(str(value))
    except ValueError:
        raise ConfigError(
            f"train.{RUNNER_KEY} {value!r}: use one of {[r.value for r in Runner]} (params.yaml)"
        ) from None


def resolve_runner(runner: str | Runner | None) -> Runner:
    """`runner` when given (a Runner or its value), else params.yaml's. Raises ConfigError for an unknown value."""
    if runner is None or runner == "":
        return configured_runner()
    return configured_runner({"train": {RUNNER_KEY: str(runner)}})


@dataclass(frozen=True)
class TrainRequest:
    """What the train step needs off the worker: the sync step's output (`synced`, its XCom dict), the DAG
    and run ids that tag the MLflow run, the worker's git sha (the container has no .git) and this attempt's
    token (a new one per try: a retry never reads an older attempt's result)."""

    synced: dict[str, Any]
    dag_id: str
    run_id: str
    git_sha: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    @property
    def prefix(self) -> str:
        """The attempt's S3 prefix in the data bucket: train-runs/<dataset key>/<run id, made key-safe>/<token>."""
        key = f"{self.synced['namespace']}/{self.synced['dataset']}" if self.synced.get("namespace") else ""
        key = key or str(self.synced["dataset"])
        safe_run = re.sub(r"[^A-Za-z0-9._=-]", "_", self.run_id)
        return f"{REQUEST_PREFIX}/{key}/{safe_run}/{self.token}"

    @property
    def request_key(self) -> str:
        """S3 key of this request (JSON)."""
        return f"{self.prefix}/request.json"

    @property
    def result_key(self) -> str:
        """S3 key the container writes the step's summary to (JSON)."""
        return f"{self.prefix}/result.json"

    def to_json(self) -> str:
        """The request as JSON (every field). Key order is kept, as Airflow's XCom keeps it: the schema's
        columns are a mapping whose order is the model's feature order (its signature, its input example)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> TrainRequest:
        """The inverse of to_json. Raises TrainRunnerError when a field is missing."""
        data = json.loads(text)
        missing = sorted({"synced", "dag_id", "run_id", "git_sha", "token"} - set(data))
        if missing:
            raise TrainRunnerError(f"train request lacks {missing}")
        return cls(**{k: data[k] for k in ("synced", "dag_id", "run_id", "git_sha", "token")})


def command(request_uri: str) -> list[str]:
    """The train image's command for one request (its ENTRYPOINT is `python -m flightdeck.train_runner`)."""
    return ["run", "--request", request_uri]


def container_environment(environ: Mapping[str, str] | None = None, *, credentials: bool) -> dict[str, str]:
    """The platform's environment for a container off the worker: S3 endpoint and buckets, MLflow URI and its
    client limits, region, registry and model name (settings.environment() of `environ`), without the state
    dir; with `credentials`, also the S3 keys and the aws_default connection (the embedded platform's local
    keys; on ECS the task role gives credentials and none are put in the task definition)."""
    env = settings_mod.environment(environ)
    out = {k: v for k, v in env.items() if _PLATFORM_ENV.match(k)}
    if credentials:
        out.update({k: env[k] for k in _CREDENTIAL_ENV if env.get(k)})
    return out


def _store(aws_conn_id: str | None) -> Any:
    from flightdeck.data.store import ObjectStore

    return ObjectStore(aws_conn_id=aws_conn_id)


def put_request(request: TrainRequest, store: Any) -> str:
    """Write `request` to the data bucket (an ObjectStore); returns its s3:// URI."""
    store.write(request.request_key, request.to_json().encode(), metadata={"dag-run": request.run_id[:200]})
    return f"s3://{store.bucket}/{request.request_key}"


def read_result(request: TrainRequest, store: Any, where: str) -> dict[str, Any]:
    """The summary the container wrote for `request`. Raises TrainRunnerError, naming `where` it ran, when
    there is none (the container exited 0 without finishing: not a state the step can trust)."""
    if not store.exists(request.result_key):
        raise TrainRunnerError(
            f"{where} exited 0 but wrote no result to s3://{store.bucket}/{request.result_key}: the train step "
            "did not finish there"
        )
    return json.loads(store.read(request.result_key))


# -- the container's side ---------------------------------------------------------------------------------


def run_request(request_uri: str, *, aws_conn_id: str | None = "aws_default") -> dict[str, Any]:
    """In the train container: read the request, train exactly as the worker does, write the summary.

    Returns the summary (the train step's XCom dict). Raises TrainRunnerError for a request outside the
    data bucket, ConfigError when this image's params.yaml renders other params than the worker's (the
    image is stale: rebuild it), and whatever the train step raises (DvcReproFailed, ServiceUnavailable)."""
    from flightdeck import retrain

    store = _store(aws_conn_id)
    prefix = f"s3://{store.bucket}/"
    if not request_uri.startswith(prefix):
        raise TrainRunnerError(f"train request {request_uri} is not in the data bucket {store.bucket}")
    request = TrainRequest.from_json(store.read(request_uri[len(prefix) :]))
    os.environ["FLIGHTDECK_GIT_SHA"] = request.git_sha  # the worker's commit: the image has no .git
    cfg = retrain.run_config(request.synced)
    if cfg.params_hash != request.synced["params_hash"]:
        raise ConfigError(
            f"this train image renders params {cfg.params_hash} for {cfg.key}, the worker synced "
            f"{request.synced['params_hash']}: the image's params.yaml is not the worker's (rebuild the train image)"
        )
    log.info("train request %s: dag %s run %s on %s", request.token, request.dag_id, request.run_id, cfg.key)
    summary = retrain.train_in_process(
        request.synced, dag_id=request.dag_id, run_id=request.run_id, aws_conn_id=aws_conn_id
    )
    store.write(request.result_key, json.dumps(summary).encode())
    return summary


# -- local container (Docker SDK) -----------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerRun:
    """One train container: image, command, environment, network mode, name and labels (docker run's)."""

    image: str
    command: tuple[str, ...]
    environment: dict[str, str]
    name: str
    network_mode: str = "host"
    labels: dict[str, str] = field(default_factory=dict)


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Whole lines from a stream of byte chunks (Docker's log stream splits lines anywhere)."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        *whole, buf = buf.split(b"\n")
        for line in whole:
            yield line.decode(errors="replace").rstrip("\r")
    if buf:
        yield buf.decode(errors="replace")


def run_container(spec: ContainerRun, *, client: Any = None, tail: int = 30) -> list[str]:
    """Run `spec` detached, copy each line of its output (stdout and stderr) into this log as it comes,
    wait for it and remove it (also when this process is interrupted). Returns the last `tail` lines.

    Raises TrainContainerFailed with the exit code and those lines when it exits non-zero, and the Docker
    SDK's errors (docker.errors.ImageNotFound, APIError) when it cannot start."""
    import docker

    client = client or docker.from_env()
    container = client.containers.run(
        spec.image,
        list(spec.command),
        environment=spec.environment,
        network_mode=spec.network_mode,
        name=spec.name,
        labels=spec.labels,
        detach=True,
    )
    last: list[str] = []
    try:
        log.info("train container %s (%s) started from %s", spec.name, container.short_id, spec.image)
        for line in _lines(container.logs(stream=True, follow=True)):
            log.info("[%s] %s", spec.name, line)
            last = [*last[-(tail - 1) :], line]
        status = container.wait()
        code = int(status.get("StatusCode", -1))
    finally:
        try:
            container.remove(force=True)
        except docker.errors.APIError as exc:  # already gone (removed by hand): nothing left to clean
            log.warning("could not remove train container %s: %s", spec.name, exc)
    if code != 0:
        raise TrainContainerFailed(
            f"train container {spec.name} ({spec.image}) exited {code}; last lines:\n" + "\n".join(last)
        )
    return last


def train_in_container(
    request: TrainRequest,
    *,
    image: str | None = None,
    aws_conn_id: str | None = "aws_default",
    client: Any = None,
) -> dict[str, Any]:
    """The train step in a local container of the train image (`image`, default: images.ensure_train_image()
    built from this checkout and pushed to the local registry). Returns the step's summary dict.

    Raises TrainContainerFailed (non-zero exit), TrainRunnerError (no summary written), images.PushFailed and
    the Docker SDK's errors."""
    store = _store(aws_conn_id)
    if image is None:
        from flightdeck import images

        image = images.ensure_train_image(client=client).tag
    uri = put_request(request, store)
    spec = ContainerRun(
        image=image,
        command=tuple(command(uri)),
        environment={**container_environment(credentials=True), "FLIGHTDECK_GIT_SHA": request.git_sha},
        name=f"flightdeck-train-{request.token}",
        labels={"org.flightdeck.role": "train", "org.flightdeck.dag_run": request.run_id[:200]},
    )
    run_container(spec, client=client)
    return read_result(request, store, f"train container {spec.name}")


# -- ECS (EcsRunTaskOperator's request, through the provider's hooks) ----------------------------------------


@dataclass(frozen=True)
class EcsTrainConfig:
    """The ECS train task's settings: cluster, image (in ECR), launch type and network, size, roles and the
    awslogs group. `from_env` reads FLIGHTDECK_ECS_TRAIN_* and falls back to the deploy target's FLIGHTDECK_ECS_*."""

    cluster: str
    image: str
    family: str = "flightdeck-train"
    launch_type: str = "FARGATE"
    network_mode: str = "awsvpc"
    cpu: str = "1024"
    memory: str = "4096"
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    assign_public_ip: bool = False
    execution_role_arn: str = ""  # pulls the image, writes awslogs
    task_role_arn: str = ""  # the container's own credentials: S3 (data bucket) and nothing else
    log_group: str = "/flightdeck/train"
    log_stream_prefix: str = "train"
    region: str = "us-east-1"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EcsTrainConfig:
        """From FLIGHTDECK_ECS_TRAIN_{CLUSTER,IMAGE,FAMILY,LAUNCH_TYPE,NETWORK_MODE,CPU,MEMORY,SUBNETS,
        SECURITY_GROUPS,EXECUTION_ROLE_ARN,TASK_ROLE_ARN,LOG_GROUP}, else FLIGHTDECK_ECS_* of the deploy target.
        Raises ConfigError when no image is set (the train image in ECR, e.g. pushed by images.ensure_train_image)."""
        env = os.environ if environ is None else environ

        def get(name: str, default: str = "") -> str:
            return env.get(f"FLIGHTDECK_ECS_TRAIN_{name}") or env.get(f"FLIGHTDECK_ECS_{name}") or default

        image = env.get("FLIGHTDECK_ECS_TRAIN_IMAGE", "")
        if not image:
            raise ConfigError("train.runner ecs needs FLIGHTDECK_ECS_TRAIN_IMAGE: the train image in ECR")
        return cls(
            cluster=get("CLUSTER", "flightdeck"),
            image=image,
            family=env.get("FLIGHTDECK_ECS_TRAIN_FAMILY") or "flightdeck-train",
            launch_type=get("LAUNCH_TYPE", "FARGATE"),
            network_mode=get("NETWORK_MODE", "awsvpc"),
            cpu=env.get("FLIGHTDECK_ECS_TRAIN_CPU") or "1024",
            memory=env.get("FLIGHTDECK_ECS_TRAIN_MEMORY") or "4096",
            subnets=tuple(filter(None, get("SUBNETS").split(","))),
            security_groups=tuple(filter(None, get("SECURITY_GROUPS").split(","))),
            execution_role_arn=get("EXECUTION_ROLE_ARN"),
            task_role_arn=env.get("FLIGHTDECK_ECS_TRAIN_TASK_ROLE_ARN", ""),
            log_group=env.get("FLIGHTDECK_ECS_TRAIN_LOG_GROUP") or "/flightdeck/train",
            region=env.get("AWS_DEFAULT_REGION") or "us-east-1",
        )


@dataclass(frozen=True)
class EcsTrainTask:
    """One train step as an ECS task: the task definition to register and the run_task request, in the
    shapes boto3's ECS client takes (and EcsRunTaskOperator passes on)."""

    cfg: EcsTrainConfig
    command: tuple[str, ...]
    environment: dict[str, str]
    started_by: str

    def task_definition(self) -> dict[str, Any]:
        """register_task_definition kwargs: one essential container of the train image, its environment,
        awslogs to `log_group` (stream `<prefix>/train/<task id>`), Fargate size when awsvpc."""
        c = self.cfg
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "image": c.image,
            "essential": True,
            "environment": [{"name": k, "value": v} for k, v in sorted(self.environment.items())],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": c.log_group,
                    "awslogs-region": c.region,
                    "awslogs-stream-prefix": c.log_stream_prefix,
                    "awslogs-create-group": "true",
                },
            },
        }
        kwargs: dict[str, Any] = {
            "family": c.family,
            "networkMode": c.network_mode,
            "containerDefinitions": [container],
            "tags": [{"key": "flightdeck.role", "value": "train"}],
        }
        # The container's hard limit is the task's memory: required with bridge networking, valid on Fargate.
        container["memory"] = int(c.memory)
        if c.network_mode == "awsvpc":
            kwargs.update(requiresCompatibilities=[c.launch_type], cpu=c.cpu, memory=c.memory)
        if c.execution_role_arn:
            kwargs["executionRoleArn"] = c.execution_role_arn
        if c.task_role_arn:
            kwargs["taskRoleArn"] = c.task_role_arn
        return kwargs

    def overrides(self) -> dict[str, Any]:
        """The run's container override: the request's command (the definition is shared by every run)."""
        return {"containerOverrides": [{"name": CONTAINER_NAME, "command": list(self.command)}]}

    def network_configuration(self) -> dict[str, Any] | None:
        """awsvpcConfiguration from the subnets and security groups (None for bridge/host networking)."""
        if self.cfg.network_mode != "awsvpc":
            return None
        return {
            "awsvpcConfiguration": {
                "subnets": list(self.cfg.subnets),
                "securityGroups": list(self.cfg.security_groups),
                "assignPublicIp": "ENABLED" if self.cfg.assign_public_ip else "DISABLED",
            }
        }

    def run_task_request(self, task_definition_arn: str) -> dict[str, Any]:
        """run_task kwargs for one task of `task_definition_arn`."""
        kwargs: dict[str, Any] = {
            "cluster": self.cfg.cluster,
            "taskDefinition": task_definition_arn,
            "count": 1,
            "launchType": self.cfg.launch_type,
            "overrides": self.overrides(),
            "startedBy": self.started_by[:128],
            "tags": [{"key": "flightdeck.role", "value": "train"}],
        }
        network = self.network_configuration()
        if network:
            kwargs["networkConfiguration"] = network
        return kwargs

    def operator_kwargs(self, task_definition: str, *, aws_conn_id: str | None = "aws_default") -> dict[str, Any]:
        """The same run as EcsRunTaskOperator arguments (Amazon provider): for a DAG that wires the step as
        that operator instead of this module's runner (the result is then read with read_result)."""
        kwargs: dict[str, Any] = {
            "task_definition": task_definition,
            "cluster": self.cfg.cluster,
            "overrides": self.overrides(),
            "launch_type": self.cfg.launch_type,
            "container_name": CONTAINER_NAME,
            "awslogs_group": self.cfg.log_group,
            "awslogs_region": self.cfg.region,
            "awslogs_stream_prefix": f"{self.cfg.log_stream_prefix}/{CONTAINER_NAME}",
            "aws_conn_id": aws_conn_id,
            "wait_for_completion": True,
        }
        network = self.network_configuration()
        if network:
            kwargs["network_configuration"] = network
        return kwargs

    def log_stream(self, task_arn: str) -> str:
        """The awslogs stream of a task: `<prefix>/<container>/<task id>` (AWS's awslogs driver naming)."""
        return f"{self.cfg.log_stream_prefix}/{CONTAINER_NAME}/{task_arn.rsplit('/', 1)[-1]}"


def ensure_task_definition(ecs: Any, task: EcsTrainTask) -> str:
    """The ARN of the family's latest ACTIVE revision when it equals `task.task_definition()` (image,
    environment, logs, size, roles), else a newly registered revision: runs of the same image share one."""
    wanted = task.task_definition()
    try:
        current = ecs.describe_task_definition(taskDefinition=wanted["family"])["taskDefinition"]
    except ecs.exceptions.ClientException:
        current = None
    if current and current.get("status") == "ACTIVE" and _same_definition(current, wanted):
        return current["taskDefinitionArn"]
    arn = ecs.register_task_definition(**wanted)["taskDefinition"]["taskDefinitionArn"]
    log.info("registered train task definition %s (%s)", arn, task.cfg.image)
    return arn


def _same_definition(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    keys = ("image", "environment", "logConfiguration", "essential", "name")
    have, want = current["containerDefinitions"][0], wanted["containerDefinitions"][0]
    if any(have.get(k) != want.get(k) for k in keys):
        return False
    return all(
        str(current.get(k) or "") == str(wanted.get(k) or "")
        for k in ("networkMode", "cpu", "memory", "executionRoleArn", "taskRoleArn")
    )


def run_ecs_task(
    task: EcsTrainTask,
    *,
    ecs: Any,
    logs: Any,
    waiter_delay: int = 6,
    waiter_max_attempts: int = 600,
) -> list[str]:
    """Register (or reuse) the task definition, run one task, wait until it stops (botocore's `tasks_stopped`
    waiter, as the Amazon provider's EcsRunTaskOperator uses: every `waiter_delay` s, at most
    `waiter_max_attempts` times), copy its awslogs lines into this log, and return them. `ecs`/`logs`: boto3
    clients (EcsHook / AwsLogsHook .conn).

    Raises TrainTaskFailed when the task is not placed (run_task failures), does not stop in time, or its
    container stops with a non-zero or no exit code (the stop reason and the last log lines in the message)."""
    from botocore.exceptions import WaiterError

    arn = ensure_task_definition(ecs, task)
    answer = ecs.run_task(**task.run_task_request(arn))
    if answer.get("failures") or not answer.get("tasks"):
        raise TrainTaskFailed(f"ECS did not start the train task: {answer.get('failures')}")
    task_arn = answer["tasks"][0]["taskArn"]
    log.info("ECS train task %s started on %s (%s)", task_arn, task.cfg.cluster, arn)
    try:
        ecs.get_waiter("tasks_stopped").wait(
            cluster=task.cfg.cluster,
            tasks=[task_arn],
            WaiterConfig={"Delay": waiter_delay, "MaxAttempts": waiter_max_attempts},
        )
    except WaiterError as exc:
        raise TrainTaskFailed(
            f"ECS train task {task_arn} did not stop within {waiter_delay * waiter_max_attempts} s: {exc}"
        ) from exc
    described = ecs.describe_tasks(cluster=task.cfg.cluster, tasks=[task_arn])["tasks"][0]
    lines = task_log_lines(logs, task.cfg.log_group, task.log_stream(task_arn))
    for line in lines:
        log.info("[ecs %s] %s", task_arn.rsplit("/", 1)[-1], line)
    containers = [c for c in described.get("containers", []) if c.get("name") == CONTAINER_NAME]
    code = containers[0].get("exitCode") if containers else None
    if code != 0:
        reason = described.get("stoppedReason") or (containers[0].get("reason") if containers else "") or "unknown"
        raise TrainTaskFailed(
            f"ECS train task {task_arn} stopped with exit code {code} ({reason}); last log lines:\n"
            + "\n".join(lines[-30:])
        )
    return lines


def task_log_lines(logs: Any, group: str, stream: str) -> list[str]:
    """Every message of one CloudWatch Logs stream, oldest first ([] when the stream does not exist: a task
    that never started writes none)."""
    out: list[str] = []
    kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
    while True:
        try:
            page = logs.get_log_events(**kwargs)
        except logs.exceptions.ResourceNotFoundException:
            return out
        out.extend(e["message"] for e in page.get("events", []))
        token = page.get("nextForwardToken")
        if not page.get("events") or token == kwargs.get("nextToken"):
            return out
        kwargs["nextToken"] = token


def ecs_clients(aws_conn_id: str | None) -> tuple[Any, Any]:
    """(ecs, logs) boto3 clients from the Amazon provider's EcsHook and AwsLogsHook on `aws_conn_id`."""
    from airflow.providers.amazon.aws.hooks.ecs import EcsHook
    from airflow.providers.amazon.aws.hooks.logs import AwsLogsHook

    return EcsHook(aws_conn_id=aws_conn_id).conn, AwsLogsHook(aws_conn_id=aws_conn_id).conn


def train_on_ecs(
    request: TrainRequest,
    *,
    cfg: EcsTrainConfig | None = None,
    aws_conn_id: str | None = "aws_default",
    store: Any = None,
    clients: tuple[Any, Any] | None = None,
    waiter_delay: int = 6,
) -> dict[str, Any]:
    """The train step as an ECS task of the train image (`cfg`, default EcsTrainConfig.from_env()). Returns the
    step's summary dict, read from S3 where the container wrote it.

    The task gets the platform's environment without credentials (its task role has them). Raises
    TrainTaskFailed (see run_ecs_task), TrainRunnerError (exit 0 without a summary) and ConfigError (no image)."""
    cfg = cfg or EcsTrainConfig.from_env()
    store = store or _store(aws_conn_id)
    ecs, logs = clients or ecs_clients(aws_conn_id)
    uri = put_request(request, store)
    task = EcsTrainTask(
        cfg=cfg,
        command=tuple(command(uri)),
        environment=container_environment(credentials=False),
        started_by=f"flightdeck-train:{request.token}",
    )
    run_ecs_task(task, ecs=ecs, logs=logs, waiter_delay=waiter_delay)
    return read_result(request, store, "ECS train task")


# -- the container's entry point ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m flightdeck.train_runner run --request s3://...`: the train image's entry point. Exit 0 and
    the summary as the last stdout line; 1 with the error on stderr when a FlightdeckError stops it."""
    parser = argparse.ArgumentParser(prog="python -m flightdeck.train_runner", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run one train request (what the container does)")
    run.add_argument("--request", required=True, help="s3://<data bucket>/train-runs/.../request.json")
    run.add_argument("--aws-conn-id", default="aws_default")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = run_request(args.request, aws_conn_id=args.aws_conn_id)
    except FlightdeckError as exc:
        print(f"train step failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(RESULT_LINE_PREFIX + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
