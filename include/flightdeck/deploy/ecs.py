"""The AWS target: one ECS service + ALB target group per revision behind a weighted listener.

start_revision registers a task definition (awslogs to CloudWatch Logs), creates a target group
(health check on /readyz) and an ECS service attached to it (deployment circuit breaker with
rollback on), and registers Application Auto Scaling (min/max, CPU target tracking).
set_weights rewrites the listener's weighted forward; target_health reads the target group's
health and the ALB's per-target-group request/5xx counts from CloudWatch. All clients come from
the Amazon provider's hooks (EcsHook, and AwsBaseHook for elbv2, autoscaling, CloudWatch, logs).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flightdeck import settings as settings_mod
from flightdeck.deploy.alb import TAG_REV, HealthCheck, ListenerTraffic, WeightedListener
from flightdeck.deploy.backend import (
    DEFAULT_ROLL_PLAN,
    EcsRollSpec,
    RevisionSpec,
    RollPlan,
    ScalingMetric,
    ScalingSpec,
    TargetHealth,
)
from flightdeck.errors import FlightdeckError

log = logging.getLogger(__name__)

SPEC_TAGS = ("revision", "image", "digest", "model_name", "model_version", "replicas", "run_id")


@dataclass(frozen=True)
class EcsConfig:
    cluster: str
    listener_arn: str
    vpc_id: str
    app: str = "flightdeck-serving"
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    launch_type: str = "FARGATE"
    network_mode: str = "awsvpc"  # bridge for EC2 capacity (and moto)
    cpu: str = "256"
    memory: str = "512"
    execution_role_arn: str = ""
    task_role_arn: str = ""  # the serving task's own role: what writes captures to S3 ("" = capture is off)
    container_port: int = 8080
    health_port: int = 8081  # the image's SERVING_HEALTH_PORT: ALB checks that do not queue behind scoring
    log_group: str = "/flightdeck/serving"
    region: str = "us-east-1"
    min_capacity: int = 1
    max_capacity: int = 4
    cpu_target: float = 60.0
    health_interval_s: int = 10
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2
    metrics_window_s: int = 300
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    api_keys_secret_arn: str = ""  # Secrets Manager secret of model-endpoint API keys (serving/auth.py); "" = off

    @classmethod
    def from_env(cls) -> EcsConfig:
        """The target's settings from FLIGHTDECK_ECS_* (cluster, listener, VPC, subnets, security groups,
        launch type, roles) and AWS_DEFAULT_REGION; unset ones get the class's defaults."""
        e = os.environ.get
        return cls(
            cluster=e("FLIGHTDECK_ECS_CLUSTER", "flightdeck"),
            listener_arn=e("FLIGHTDECK_ECS_LISTENER_ARN", ""),
            vpc_id=e("FLIGHTDECK_ECS_VPC_ID", ""),
            app=e("FLIGHTDECK_ECS_APP", "flightdeck-serving"),
            subnets=tuple(filter(None, e("FLIGHTDECK_ECS_SUBNETS", "").split(","))),
            security_groups=tuple(filter(None, e("FLIGHTDECK_ECS_SECURITY_GROUPS", "").split(","))),
            launch_type=e("FLIGHTDECK_ECS_LAUNCH_TYPE", "FARGATE"),
            network_mode=e("FLIGHTDECK_ECS_NETWORK_MODE", "awsvpc"),
            execution_role_arn=e("FLIGHTDECK_ECS_EXECUTION_ROLE_ARN", ""),
            task_role_arn=e("FLIGHTDECK_ECS_TASK_ROLE_ARN", ""),
            region=e("AWS_DEFAULT_REGION", "us-east-1"),
            api_keys_secret_arn=settings_mod.load().serving_api_keys_secret_arn,
        )


class EcsTargetError(FlightdeckError, RuntimeError):
    """The ECS target cannot do what was asked: a roll of a service it does not run."""


class EcsBackend(ListenerTraffic):
    """Backend over ECS services, ALB target groups and a weighted listener."""

    rolls_in_place = True  # strategy rolling: ECS's rolling update of the live service

    def __init__(self, cfg: EcsConfig, clients: Callable[[str], Any], name: str = "ecs") -> None:
        self.cfg = cfg
        self.name = name
        self._client = clients
        self.ecs, self.elb = clients("ecs"), clients("elbv2")
        self.scaling = clients("application-autoscaling")
        self.cw, self.logs = clients("cloudwatch"), clients("logs")
        self.listener = WeightedListener(self.elb, self.cw, cfg.listener_arn, cfg.metrics_window_s)

    @classmethod
    def from_settings(cls, aws_conn_id: str | None = "aws_default", cfg: EcsConfig | None = None) -> EcsBackend:
        """The backend on the provider's hooks (EcsHook, AwsLogsHook, AwsBaseHook) for `aws_conn_id`,
        configured from the environment (EcsConfig.from_env) unless `cfg` is given."""
        from flightdeck.deploy.aws import client as hook_client

        def clients(service: str) -> Any:
            if service == "ecs":
                from airflow.providers.amazon.aws.hooks.ecs import EcsHook

                return EcsHook(aws_conn_id=aws_conn_id).conn
            if service == "logs":
                from airflow.providers.amazon.aws.hooks.logs import AwsLogsHook

                return AwsLogsHook(aws_conn_id=aws_conn_id).conn
            return hook_client(service, aws_conn_id)

        return cls(cfg or EcsConfig.from_env(), clients)

    # -- naming ----------------------------------------------------------------------------------
    def service_name(self, revision: str) -> str:
        """The revision's ECS service: `<app>-<revision>`."""
        return f"{self.cfg.app}-{revision}"

    def family(self, revision: str) -> str:
        """The revision's task definition family: `<app>-<revision>`."""
        return f"{self.cfg.app}-{revision}"

    def _service_by_name(self, name: str) -> dict[str, Any] | None:
        """The ACTIVE service of that name (a deleted one lingers as INACTIVE for a while), or None."""
        found = self.ecs.describe_services(cluster=self.cfg.cluster, services=[name]).get("services", [])
        return found[0] if found and found[0]["status"] == "ACTIVE" else None

    def _service(self, revision: str) -> dict[str, Any] | None:
        return self._service_by_name(self.service_name(revision))

    def _scaling_resource(self, revision: str) -> str:
        return f"service/{self.cfg.cluster}/{self.service_name(revision)}"

    # -- Backend interface -------------------------------------------------------------------------
    def register(self, spec: RevisionSpec) -> str:
        """Register the revision's task definition (idempotent by family + tags); returns its ARN."""
        c = self.cfg
        try:
            self.logs.create_log_group(logGroupName=c.log_group)
        except self.logs.exceptions.ResourceAlreadyExistsException:
            pass
        container: dict[str, Any] = {
            "name": "serving",
            "image": spec.image,
            "essential": True,
            "portMappings": [
                {"containerPort": c.container_port, "protocol": "tcp"},
                {"containerPort": c.health_port, "protocol": "tcp"},
            ],
            "environment": [{"name": k, "value": str(v)} for k, v in sorted(spec.env.items())],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": c.log_group,
                    "awslogs-region": c.region,
                    "awslogs-stream-prefix": spec.revision,
                },
            },
            "healthCheck": {
                "command": [
                    "CMD-SHELL",
                    f'python3 -c "import urllib.request as u; u.urlopen('
                    f"'http://127.0.0.1:{c.container_port}/healthz')\"",
                ],
                "interval": 10,
                "timeout": 5,
                "retries": 3,
                "startPeriod": 30,
            },
        }
        if c.api_keys_secret_arn:  # injected by ECS at task start (the execution role reads the secret)
            container["secrets"] = [{"name": "SERVING_API_KEYS", "valueFrom": c.api_keys_secret_arn}]
        kwargs: dict[str, Any] = {
            "family": self.family(spec.revision),
            "networkMode": c.network_mode,
            "containerDefinitions": [container],
            "tags": [{"key": f"fd.{k}", "value": str(getattr(spec, k))[:256]} for k in SPEC_TAGS],
        }
        if c.network_mode == "awsvpc":
            kwargs.update(requiresCompatibilities=[c.launch_type], cpu=c.cpu, memory=c.memory)
        else:
            container["memory"] = int(c.memory)
        if c.execution_role_arn:
            kwargs["executionRoleArn"] = c.execution_role_arn
        if c.task_role_arn:
            kwargs["taskRoleArn"] = c.task_role_arn
        arn = self.ecs.register_task_definition(**kwargs)["taskDefinition"]["taskDefinitionArn"]
        log.info("registered task definition %s (%s)", arn, spec.image)
        return arn

    def start_revision(self, spec: RevisionSpec) -> None:
        """Backend.start_revision: a task definition, a target group and a service of `spec.replicas`
        tasks behind it at 0 % of the listener; an existing service is adopted. Raises botocore's
        ClientError when AWS refuses."""
        c = self.cfg
        if self._service(spec.revision) is not None:
            log.info("service %s exists: adopting it", self.service_name(spec.revision))
            return
        task_def = self.register(spec)
        tg_arn = self.listener.create_target_group(
            spec.revision,
            app=c.app,
            vpc_id=c.vpc_id,
            port=c.container_port,
            target_type="ip" if c.network_mode == "awsvpc" else "instance",
            # awsvpc: the task's own health port; bridge mode maps ports dynamically, so the traffic port
            check=HealthCheck(
                port=str(c.health_port) if c.network_mode == "awsvpc" else "traffic-port",
                interval_s=c.health_interval_s,
                healthy_threshold=c.healthy_threshold,
                unhealthy_threshold=c.unhealthy_threshold,
            ),
        )
        service: dict[str, Any] = {
            "cluster": c.cluster,
            "serviceName": self.service_name(spec.revision),
            "taskDefinition": task_def,
            "desiredCount": spec.replicas,
            "launchType": c.launch_type,
            "loadBalancers": [
                {"targetGroupArn": tg_arn, "containerName": "serving", "containerPort": c.container_port}
            ],
            "healthCheckGracePeriodSeconds": 30,
            "deploymentConfiguration": {
                "deploymentCircuitBreaker": {"enable": True, "rollback": True},
                "maximumPercent": 200,
                "minimumHealthyPercent": 100,
            },
            "tags": [{"key": TAG_REV, "value": spec.revision}],
        }
        if c.network_mode == "awsvpc":
            service["networkConfiguration"] = {
                "awsvpcConfiguration": {
                    "subnets": list(c.subnets),
                    "securityGroups": list(c.security_groups),
                    "assignPublicIp": "DISABLED",
                }
            }
        self.ecs.create_service(**service)
        resource = self._scaling_resource(spec.revision)
        scaling = spec.scaling or ScalingSpec(c.min_capacity, c.max_capacity, ScalingMetric.CPU, c.cpu_target)
        self.scaling.register_scalable_target(
            ServiceNamespace="ecs",
            ResourceId=resource,
            ScalableDimension="ecs:service:DesiredCount",
            MinCapacity=max(scaling.min_capacity, spec.replicas),
            MaxCapacity=max(scaling.max_capacity, spec.replicas),
        )
        if scaling.metric == ScalingMetric.REQUEST_COUNT_PER_TARGET:
            metric = {
                "PredefinedMetricType": "ALBRequestCountPerTarget",
                "ResourceLabel": self.listener.resource_label(tg_arn),
            }
        else:
            metric = {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}
        self.scaling.put_scaling_policy(
            PolicyName=f"{self.service_name(spec.revision)}-target-tracking",
            ServiceNamespace="ecs",
            ResourceId=resource,
            ScalableDimension="ecs:service:DesiredCount",
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": float(scaling.target_value),
                "ScaleInCooldown": 60,
                "ScaleOutCooldown": 60,
                "PredefinedMetricSpecification": metric,
            },
        )
        log.info(
            "created service %s behind %s with autoscaling %d..%d on %s",
            self.service_name(spec.revision),
            tg_arn,
            scaling.min_capacity,
            scaling.max_capacity,
            metric["PredefinedMetricType"],
        )

    def target_health(self, revision: str) -> TargetHealth:
        """Backend.target_health: the target group's health states, the service's desired count, and the
        ALB's RequestCount and HTTPCode_Target_5XX_Count for the group over the last `metrics_window_s` seconds."""
        svc = self._service(revision)
        desired = svc["desiredCount"] if svc else 0
        return self.listener.target_health(revision, desired)

    def stop_revision(self, revision: str) -> None:
        """Backend.stop_revision: out of the listener, scaling target deregistered, service scaled to 0
        and deleted, target group deleted; idempotent."""
        tg_arn = self.listener.tg_arn(revision)
        if tg_arn is not None:
            self.listener.detach(tg_arn)
        name = self.service_name(revision)
        try:
            self.scaling.deregister_scalable_target(
                ServiceNamespace="ecs",
                ResourceId=self._scaling_resource(revision),
                ScalableDimension="ecs:service:DesiredCount",
            )
        except self.scaling.exceptions.ObjectNotFoundException:
            pass
        if self._service_by_name(name) is not None:
            self.ecs.update_service(cluster=self.cfg.cluster, service=name, desiredCount=0)
            self.ecs.delete_service(cluster=self.cfg.cluster, service=name, force=True)
            log.info("deleted service %s", name)
        if tg_arn is not None:
            self.listener.delete_target_group(tg_arn)

    def weights(self) -> dict[str, int]:
        """Backend.weights: the listener weight of each of the app's services (0 without a target group)."""
        by_arn = self.listener.weights_by_arn()
        out: dict[str, int] = {}
        arns = self.ecs.list_services(cluster=self.cfg.cluster).get("serviceArns", [])
        prefix = f"{self.cfg.app}-"
        for arn in arns:
            name = arn.rsplit("/", 1)[-1]
            if not name.startswith(prefix):
                continue
            if self._service_by_name(name) is None:
                continue
            revision = name[len(prefix) :]
            tg = self.listener.tg_arn(revision)
            out[revision] = by_arn.get(tg, 0) if tg else 0
        return dict(sorted(out.items()))

    # -- ECS's own rolling update of a live service (strategy "rolling") ----------------------------
    def prepare_roll(self, spec: RevisionSpec, plan: RollPlan = DEFAULT_ROLL_PLAN) -> EcsRollSpec:
        """Register `spec` as the next task definition of its (live) service's family (`plan` is not used:
        ECS paces its own rolling update).

        A rolling deploy keeps the service, its target group and listener weight: ECS replaces the
        tasks (minimum healthy 100%, maximum 200%) and its deployment circuit breaker rolls back a
        rollout whose tasks fail. `spec.revision` names the live service being rolled.

        Raises EcsTargetError when that service does not exist.
        """
        svc = self._service(spec.revision)
        if svc is None:
            raise EcsTargetError(f"no live ECS service {self.service_name(spec.revision)} to roll")
        return EcsRollSpec(
            cluster=self.cfg.cluster,
            service=svc["serviceName"],
            previous_task_definition=svc["taskDefinition"],
            task_definition=self.register(spec),
        )

    def roll_back(self, roll: Mapping[str, str]) -> None:
        """Put the service back on the task definition it ran before the roll (idempotent: after a
        FAILED rollout the circuit breaker has usually done so already) and retire the new one."""
        svc = self._service_by_name(roll["service"])
        if svc is not None and svc["taskDefinition"] != roll["previous_task_definition"]:
            self.ecs.update_service(
                cluster=roll["cluster"], service=roll["service"], taskDefinition=roll["previous_task_definition"]
            )
            log.warning("service %s back on %s", roll["service"], roll["previous_task_definition"])
        if roll.get("task_definition") and roll["task_definition"] != roll["previous_task_definition"]:
            self.ecs.deregister_task_definition(taskDefinition=roll["task_definition"])

    def spec(self, revision: str) -> RevisionSpec | None:
        """Backend.spec: read back from the task definition's tags (None when there is none)."""
        # a live service's own task definition (after a rolling update that is the family's newest
        # one that succeeded); a retired revision's newest task definition otherwise
        svc = self._service(revision)
        try:
            td = self.ecs.describe_task_definition(
                taskDefinition=svc["taskDefinition"] if svc else self.family(revision), include=["TAGS"]
            )
        except self.ecs.exceptions.ClientException:
            return None
        tags = {t["key"][3:]: t["value"] for t in td.get("tags", []) if t["key"].startswith("fd.")}
        container = td["taskDefinition"]["containerDefinitions"][0]
        env = {e["name"]: e["value"] for e in container.get("environment", [])}
        return RevisionSpec(
            revision=revision,
            image=tags.get("image", ""),
            digest=tags.get("digest", ""),
            model_name=tags.get("model_name", ""),
            model_version=tags.get("model_version", ""),
            replicas=int(tags.get("replicas", "1")),
            env=env,
            run_id=tags.get("run_id", ""),
        )


def deployment_state(ecs: Any, cluster: str, service: str, deployment_id: str) -> tuple[str, str]:
    """(state, reason) of ECS deployment `deployment_id` of `service`: one poll of the rollout waiter.

    The same waiter (flightdeck.deploy.ecs_rollout, waiters/ecs.json) that the roll_service task
    runs: state is COMPLETED, IN_PROGRESS, FAILED (with the circuit breaker's rollback on, ECS is
    already restoring the last completed deployment), SUPERSEDED (another deployment is PRIMARY),
    or what the watcher cannot judge: MISSING, INACTIVE, DRAINING, NO_PRIMARY, ... Raises
    ecs_rollout.EcsWatchError on an error answer that is not transient.
    """
    from flightdeck.deploy.ecs_rollout import poll_once

    return poll_once(ecs, cluster, service, deployment_id)
