"""Operators the Amazon provider lacks for deploys, in the provider's shape.

EcsServiceDeployOperator updates an ECS service to a task definition with the deployment circuit
breaker (rollback on) and watches the deployment until ECS reports COMPLETED or FAILED, either in
the worker (waiter_delay x waiter_max_attempts) or deferred to the triggerer. The deployment id is
returned to XCom. A FAILED rollout (ECS already rolling back to the last good deployment) fails
the task with ECS's reason, so the DAG's rollback task records it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.configuration import conf
from airflow.providers.amazon.aws.hooks.ecs import EcsHook
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from flightdeck.deploy.ecs import deployment_state


class EcsDeploymentTrigger(BaseTrigger):
    """Polls the service's PRIMARY deployment (aiobotocore client from the provider's hook)."""

    def __init__(self, *, cluster: str, service: str, deployment_id: str, aws_conn_id: str | None,
                 waiter_delay: int, waiter_max_attempts: int, region_name: str | None = None) -> None:
        super().__init__()
        self.cluster, self.service, self.deployment_id = cluster, service, deployment_id
        self.aws_conn_id, self.region_name = aws_conn_id, region_name
        self.waiter_delay, self.waiter_max_attempts = waiter_delay, waiter_max_attempts

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{self.__class__.__module__}.{self.__class__.__name__}", {
            "cluster": self.cluster, "service": self.service, "deployment_id": self.deployment_id,
            "aws_conn_id": self.aws_conn_id, "waiter_delay": self.waiter_delay,
            "waiter_max_attempts": self.waiter_max_attempts, "region_name": self.region_name})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = EcsHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        async with await hook.get_async_conn() as client:
            for _ in range(self.waiter_max_attempts):
                resp = await client.describe_services(cluster=self.cluster, services=[self.service])
                primary = next(d for d in resp["services"][0]["deployments"] if d["status"] == "PRIMARY")
                state = primary.get("rolloutState", "IN_PROGRESS")
                if primary["id"] != self.deployment_id:
                    state = "FAILED"  # superseded: the circuit breaker rolled back or someone redeployed
                if state in ("COMPLETED", "FAILED"):
                    yield TriggerEvent({"status": state, "deployment_id": self.deployment_id,
                                        "reason": primary.get("rolloutStateReason", "")})
                    return
                await asyncio.sleep(self.waiter_delay)
        yield TriggerEvent({"status": "TIMEOUT", "deployment_id": self.deployment_id,
                            "reason": "still in progress"})


class EcsServiceDeployOperator(BaseOperator):
    """Roll an ECS service to `task_definition` (ECS rolling deployment + circuit breaker)."""

    template_fields: Sequence[str] = ("cluster", "service", "task_definition", "desired_count")

    def __init__(self, *, cluster: str, service: str, task_definition: str, desired_count: int | None = None,
                 aws_conn_id: str | None = "aws_default", region_name: str | None = None,
                 wait_for_completion: bool = True, waiter_delay: int = 15, waiter_max_attempts: int = 40,
                 deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster, self.service, self.task_definition = cluster, service, task_definition
        self.desired_count = desired_count
        self.aws_conn_id, self.region_name = aws_conn_id, region_name
        self.wait_for_completion, self.deferrable = wait_for_completion, deferrable
        self.waiter_delay, self.waiter_max_attempts = waiter_delay, waiter_max_attempts

    @property
    def hook(self) -> EcsHook:
        return EcsHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    def execute(self, context: Any) -> str:
        kwargs: dict[str, Any] = {
            "cluster": self.cluster, "service": self.service, "taskDefinition": self.task_definition,
            "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": True, "rollback": True},
                                        "maximumPercent": 200, "minimumHealthyPercent": 100}}
        if self.desired_count is not None:
            kwargs["desiredCount"] = int(self.desired_count)
        svc = self.hook.conn.update_service(**kwargs)["service"]
        deployment_id = next(d["id"] for d in svc["deployments"] if d["status"] == "PRIMARY")
        self.log.info("service %s deploying %s as %s", self.service, self.task_definition, deployment_id)
        if not self.wait_for_completion:
            return deployment_id
        if self.deferrable:
            self.defer(trigger=EcsDeploymentTrigger(
                cluster=self.cluster, service=self.service, deployment_id=deployment_id,
                aws_conn_id=self.aws_conn_id, region_name=self.region_name, waiter_delay=self.waiter_delay,
                waiter_max_attempts=self.waiter_max_attempts), method_name="execute_complete")
        for _ in range(self.waiter_max_attempts):
            state, reason = deployment_state(self.hook.conn, self.cluster, self.service)
            if state == "COMPLETED":
                return deployment_id
            if state == "FAILED":
                raise AirflowException(f"ECS deployment {deployment_id} of {self.service} FAILED "
                                       f"(circuit breaker rolls back): {reason}")
            time.sleep(self.waiter_delay)
        raise AirflowException(f"ECS deployment {deployment_id} of {self.service} still in progress after "
                               f"{self.waiter_delay * self.waiter_max_attempts}s")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> str:
        if event["status"] != "COMPLETED":
            raise AirflowException(f"ECS deployment {event['deployment_id']} of {self.service} "
                                   f"{event['status']}: {event['reason']}")
        return event["deployment_id"]
