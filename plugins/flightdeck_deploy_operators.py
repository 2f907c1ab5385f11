"""Operators the Amazon provider lacks for deploys, in the provider's shape.

Ec2InstanceRefreshOperator starts an EC2 Auto Scaling instance refresh of a live group to a new launch
template version (MinHealthyPercentage, checkpoints, AutoRollback on) and watches it with the waiter
`instance_refresh_complete` (include/flightdeck/deploy/waiters/autoscaling.json, served by
`AutoScalingHook`), in the worker (the provider's `wait`) or deferred to InstanceRefreshTrigger (the
provider's AwsBaseWaiterTrigger as it is). A refresh that fails, is cancelled or is rolled back by Auto
Scaling fails the task, so the DAG's rollback task makes sure the group is back on its previous version.

EcsServiceDeployOperator updates an ECS service to a task definition with the deployment circuit
breaker (rollback on) and watches the deployment with the rollout waiter
(include/flightdeck/deploy/waiters/ecs.json, served by `RolloutHook`), either in the worker (the
provider's `wait`) or deferred to the triggerer (EcsDeploymentTrigger, the provider's
`async_wait`, with `defer(timeout=...)`). Both log the rollout's status on every attempt and retry
throttling as the provider does. The deployment id is returned to XCom.

How the watch ends (flightdeck.deploy.ecs_rollout.RolloutEvent):
- COMPLETED: the task succeeds.
- FAILED (ECS's circuit breaker failed it, or another deployment superseded ours) or TIMEOUT:
  EcsRolloutFailed, so the DAG's rollback task rolls back.
- WATCH_FAILED (missing service, no PRIMARY deployment, an error of the watcher itself):
  EcsWatchError, and the reason is left in XCom under `watch_error`; the rollback task reads it
  and does not roll back a rollout that nobody judged.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

from airflow.configuration import conf
from airflow.providers.amazon.aws.hooks.ecs import EcsHook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger
from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.amazon.aws.utils.waiter_with_logging import async_wait, wait
from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import TriggerEvent

from flightdeck.deploy.backend import InstanceRefreshSpec
from flightdeck.deploy.ecs_rollout import (
    STATUS_QUERIES,
    WAITER,
    WATCH_ERROR_XCOM_KEY,
    RolloutHook,
    raise_for,
    rollout_event,
    waiter_parameters,
)
from flightdeck.deploy.instance_refresh import COMPLETE as REFRESH_COMPLETE
from flightdeck.deploy.instance_refresh import STATUS_QUERIES as REFRESH_STATUS_QUERIES
from flightdeck.deploy.instance_refresh import (
    AutoScalingHook,
    RefreshStatus,
    desired_version,
    refresh_budget_s,
    start_refresh,
    wait_for,
)
from flightdeck.deploy.instance_refresh import latest as latest_refresh


class EcsDeploymentTrigger(AwsBaseWaiterTrigger):
    """Waits in the triggerer for ECS deployment `deployment_id` of `service` to finish its rollout.

    Yields one RolloutEvent (status COMPLETED, FAILED, TIMEOUT or WATCH_FAILED, with a reason).
    """

    aws_hook_class = RolloutHook

    def __init__(
        self,
        *,
        cluster: str,
        service: str,
        deployment_id: str,
        waiter_delay: int = 15,
        waiter_max_attempts: int = 40,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict | None = None,
    ) -> None:
        super().__init__(
            serialized_fields={"cluster": cluster, "service": service, "deployment_id": deployment_id},
            waiter_name=WAITER,
            waiter_args={"cluster": cluster, "services": [service]},
            failure_message=f"ECS deployment {deployment_id} of {service} did not complete",
            status_message=f"ECS deployment {deployment_id} of {service}",
            status_queries=STATUS_QUERIES,
            return_key="deployment_id",
            return_value=deployment_id,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            aws_conn_id=aws_conn_id,
            region_name=region_name,
            verify=verify,
            botocore_config=botocore_config,
        )
        self.cluster, self.service, self.deployment_id = cluster, service, deployment_id

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the rollout waiter every `waiter_delay` seconds up to `waiter_max_attempts` times; yield one
        TriggerEvent carrying a RolloutEvent (COMPLETED, FAILED, WATCH_FAILED, with the reason)."""
        # The base class's run() with two changes, both for the superseded-deployment rule:
        # 1. get_waiter(parameters=...): "the PRIMARY deployment is not ours => failed, superseded"
        #    needs this run's deployment id in the waiter's acceptor; a static JSON cannot hold it
        #    and the base builds the waiter without parameters.
        # 2. How the wait ended becomes a RolloutEvent that tells a verdict on the rollout (FAILED,
        #    superseded or not) from an answer the watcher cannot judge (WATCH_FAILED), instead of
        #    one "error" status; and errors the base lets escape (connection errors after botocore's
        #    retries) end in WATCH_FAILED too, since a crashed trigger fails the task like a failed
        #    rollout would, and the deploy would roll back a rollout nobody judged.
        hook = self.hook()
        try:
            async with await hook.get_async_conn() as client:
                waiter = hook.get_waiter(
                    self.waiter_name,
                    parameters=waiter_parameters(self.deployment_id),
                    deferrable=True,
                    client=client,
                    config_overrides=self.waiter_config_overrides,
                )
                await async_wait(
                    waiter,
                    self.waiter_delay,
                    self.attempts,
                    self.waiter_args,
                    self.failure_message,
                    self.status_message,
                    self.status_queries,
                )
        except Exception as error:  # every way the wait can end is an event: see rollout_event
            self.log.warning("watch of %s ended: %s: %s", self.deployment_id, type(error).__name__, error)
            yield TriggerEvent(self._event(error))
        else:
            yield TriggerEvent(self._event(None))

    def _event(self, error: BaseException | None) -> dict[str, Any]:
        return dict(
            rollout_event(
                self.deployment_id, self.service, error, waiter_delay=self.waiter_delay, attempts=self.attempts
            )
        )


class EcsServiceDeployOperator(AwsBaseOperator[EcsHook]):
    """Roll an ECS service to `task_definition` (ECS rolling deployment + circuit breaker).

    :param cluster: the ECS cluster
    :param service: the service to update
    :param task_definition: family:revision or ARN to roll to
    :param desired_count: optional new desired count
    :param wait_for_completion: watch the rollout (default True); False returns the deployment id at once
    :param waiter_delay: seconds between polls
    :param waiter_max_attempts: polls before the rollout counts as timed out (then rolled back)
    :param deferrable: watch in the triggerer (EcsDeploymentTrigger)
    """

    aws_hook_class = RolloutHook
    template_fields: Sequence[str] = aws_template_fields("cluster", "service", "task_definition", "desired_count")

    def __init__(
        self,
        *,
        cluster: str,
        service: str,
        task_definition: str,
        desired_count: int | None = None,
        wait_for_completion: bool = True,
        waiter_delay: int = 15,
        waiter_max_attempts: int = 40,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cluster, self.service, self.task_definition = cluster, service, task_definition
        self.desired_count = desired_count
        self.wait_for_completion, self.deferrable = wait_for_completion, deferrable
        self.waiter_delay, self.waiter_max_attempts = waiter_delay, waiter_max_attempts

    def execute(self, context: Any) -> str:
        """UpdateService to the task definition (and desired count), then wait for ECS's rollout: here, or
        deferred to EcsDeploymentTrigger. Returns the deployment id (XCom). Raises EcsRolloutFailed when
        the rollout failed or was superseded, EcsWatchError when the watcher cannot judge it."""
        kwargs: dict[str, Any] = {
            "cluster": self.cluster,
            "service": self.service,
            "taskDefinition": self.task_definition,
            "deploymentConfiguration": {
                "deploymentCircuitBreaker": {"enable": True, "rollback": True},
                "maximumPercent": 200,
                "minimumHealthyPercent": 100,
            },
        }
        if self.desired_count is not None:
            kwargs["desiredCount"] = int(self.desired_count)
        svc = self.hook.conn.update_service(**kwargs)["service"]
        deployment_id = next(d["id"] for d in svc["deployments"] if d["status"] == "PRIMARY")
        self.log.info("service %s deploying %s as %s", self.service, self.task_definition, deployment_id)
        if not self.wait_for_completion:
            return deployment_id
        if self.deferrable:
            self.defer(
                trigger=EcsDeploymentTrigger(
                    cluster=self.cluster,
                    service=self.service,
                    deployment_id=deployment_id,
                    waiter_delay=self.waiter_delay,
                    waiter_max_attempts=self.waiter_max_attempts,
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
                # as the provider's ECS operators: if the trigger dies, the timeout does not restart;
                # 60 s more lets the trigger end with its own TIMEOUT event first
                timeout=timedelta(seconds=self.waiter_max_attempts * self.waiter_delay + 60),
            )
        waiter = self.hook.get_waiter(WAITER, parameters=waiter_parameters(deployment_id))
        try:
            wait(
                waiter=waiter,
                waiter_delay=self.waiter_delay,
                waiter_max_attempts=self.waiter_max_attempts,
                args={"cluster": self.cluster, "services": [self.service]},
                failure_message=f"ECS deployment {deployment_id} of {self.service} did not complete",
                status_message=f"ECS deployment {deployment_id} of {self.service}",
                status_args=STATUS_QUERIES,
            )
        except Exception as error:  # every way the wait can end is an event: see rollout_event
            event = rollout_event(
                deployment_id,
                self.service,
                error,
                waiter_delay=self.waiter_delay,
                attempts=self.waiter_max_attempts,
            )
        else:
            event = rollout_event(deployment_id, self.service)
        return self.execute_complete(context, dict(event))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> str:
        """Resume after the trigger: the deployment id when `event` says COMPLETED (a watcher error also
        goes to XCom for the rollback task). Raises EcsRolloutFailed or EcsWatchError otherwise."""
        if event["status"] == "WATCH_FAILED" and context.get("ti") is not None:
            context["ti"].xcom_push(key=WATCH_ERROR_XCOM_KEY, value=event["reason"])
        if event["status"] != "COMPLETED":
            self.log.error("ECS deployment %s of %s: %s", event["deployment_id"], self.service, event)
        return raise_for(event, self.service)


class InstanceRefreshTrigger(AwsBaseWaiterTrigger):
    """Waits in the triggerer for instance refresh `instance_refresh_id` of Auto Scaling group `group` to
    end (waiter `instance_refresh_complete`, waiters/autoscaling.json), logging its status and percentage
    on every attempt. Yields {"status": "success", "instance_refresh_id": ...}, or the base trigger's
    {"status": "error", ...} for a refresh that failed, was cancelled, rolled back or timed out; the
    operator's execute_complete then fails the task (and the DAG's rollback runs)."""

    aws_hook_class = AutoScalingHook

    def __init__(
        self,
        *,
        group: str,
        instance_refresh_id: str,
        waiter_delay: int = 15,
        waiter_max_attempts: int = 80,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict | None = None,
    ) -> None:
        super().__init__(
            serialized_fields={"group": group, "instance_refresh_id": instance_refresh_id},
            waiter_name=REFRESH_COMPLETE,
            waiter_args={"AutoScalingGroupName": group, "InstanceRefreshIds": [instance_refresh_id]},
            failure_message=f"instance refresh {instance_refresh_id} of {group} did not succeed",
            status_message=f"instance refresh {instance_refresh_id} of {group}",
            status_queries=REFRESH_STATUS_QUERIES,
            return_key="instance_refresh_id",
            return_value=instance_refresh_id,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            aws_conn_id=aws_conn_id,
            region_name=region_name,
            verify=verify,
            botocore_config=botocore_config,
        )


class Ec2InstanceRefreshOperator(AwsBaseOperator[AutoScalingHook]):
    """Roll an Auto Scaling group to a launch template version by an instance refresh (AutoRollback on).

    :param refresh: the InstanceRefreshSpec (group, launch template id and version, MinHealthyPercentage,
        checkpoints, warmup), as a mapping or its JSON (templated, e.g. from `start_new`'s XCom)
    :param wait_for_completion: watch the refresh (default True); False returns the refresh id at once
    :param waiter_delay: seconds between polls
    :param waiter_max_attempts: polls before the refresh counts as timed out (then rolled back), on top of
        the time its checkpoints hold it (instance_refresh.refresh_budget_s)
    :param deferrable: watch in the triggerer (InstanceRefreshTrigger)
    """

    aws_hook_class = AutoScalingHook
    template_fields: Sequence[str] = aws_template_fields("refresh")

    def __init__(
        self,
        *,
        refresh: InstanceRefreshSpec | str,
        wait_for_completion: bool = True,
        waiter_delay: int = 15,
        waiter_max_attempts: int = 80,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.refresh = refresh
        self.wait_for_completion, self.deferrable = wait_for_completion, deferrable
        self.waiter_delay, self.waiter_max_attempts = waiter_delay, waiter_max_attempts

    def execute(self, context: Any) -> str:
        """StartInstanceRefresh (or adopt the one already running to the same version, on a retry), then wait
        for it: here or deferred to InstanceRefreshTrigger. Returns the refresh id (XCom). Raises
        AirflowException when the refresh fails, is cancelled, rolls back or times out."""
        spec: InstanceRefreshSpec = json.loads(self.refresh) if isinstance(self.refresh, str) else self.refresh
        group = spec["group"]
        last = latest_refresh(self.hook.conn, group)
        if last and RefreshStatus(last["Status"]).active and desired_version(last) == spec["version"]:
            refresh_id = last["InstanceRefreshId"]
            self.log.info(
                "instance refresh %s of %s to version %s is running: watching it", refresh_id, group, spec["version"]
            )
        else:
            refresh_id = start_refresh(self.hook.conn, spec)
        if not self.wait_for_completion:
            return refresh_id
        # the checkpoints hold the refresh on purpose: they do not count against the attempts
        attempts = self.waiter_max_attempts + math.ceil(refresh_budget_s(spec) / max(self.waiter_delay, 1))
        if self.deferrable:
            self.defer(
                trigger=InstanceRefreshTrigger(
                    group=group,
                    instance_refresh_id=refresh_id,
                    waiter_delay=self.waiter_delay,
                    waiter_max_attempts=attempts,
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=attempts * self.waiter_delay + 60),
            )
        wait_for(self.hook.conn, REFRESH_COMPLETE, group, refresh_id, delay_s=self.waiter_delay, max_attempts=attempts)
        return refresh_id

    def execute_complete(self, context: Any, event: dict[str, Any]) -> str:
        """Resume after the trigger: the refresh id when `event` says success. Raises AirflowException otherwise."""
        validated = validate_execute_complete_event(event)
        if validated.get("status") != "success":
            raise AirflowException(f"instance refresh did not succeed: {validated}")
        return validated["instance_refresh_id"]
