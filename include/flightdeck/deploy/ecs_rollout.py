"""Watching an ECS rolling deployment: one waiter for every way we watch one.

The rule (when a rollout is done, has failed, or cannot be judged) is data: the botocore waiter
model `service_deployment_complete` in waiters/ecs.json, served by `RolloutHook` (the provider's
EcsHook with our `waiter_path`, the way the provider serves its own waiters). Everything that
watches a rollout runs that waiter: the deferred `EcsDeploymentTrigger` (provider's `async_wait`),
the operator's synchronous path (provider's `wait`) and `ecs.deployment_state` (one poll). This
module turns how such a wait ended into one `RolloutEvent`:

  COMPLETED     the PRIMARY deployment is ours and ECS says COMPLETED.
  FAILED        a verdict on the rollout: ECS says FAILED (its circuit breaker rolls back), or
                another deployment became PRIMARY (superseded). The deploy rolls back.
  TIMEOUT       still in progress after the waiter's attempts: the deploy rolls back, as before.
  WATCH_FAILED  the watcher itself could not judge the rollout: the service is missing or
                inactive, it has no PRIMARY deployment, an API error that is not transient,
                connection errors past botocore's own retries, no credentials. The watch fails
                with that reason and the deploy does NOT roll back (ECS may be completing the
                rollout fine); see `EcsWatchError`.

Transient errors are retried where the provider retries them: throttling and 5xx answers reach
the waiter as error responses, and `wait`/`async_wait` poll again for any code in the provider's
RETRIABLE_ERROR_CODES (ThrottlingException, ServerException, ...); connection errors are retried
by the botocore client (its retry mode and attempts come from the connection's `config_kwargs`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypedDict

import jmespath
from airflow.providers.amazon.aws.exceptions import (
    WaiterMaxAttemptsError,
    WaiterNoCredentialsError,
    WaiterTerminalFailure,
)
from airflow.providers.amazon.aws.hooks.ecs import EcsHook
from airflow.sdk.exceptions import AirflowException
from botocore.exceptions import WaiterError
from botocore.waiter import AcceptorConfig, WaiterModel

from flightdeck.errors import FlightdeckError

log = logging.getLogger(__name__)

WAITER_PATH = Path(__file__).with_name("waiters") / "ecs.json"
WAITER = "service_deployment_complete"
# Failure acceptors (their `expected`) that are ECS's verdict on the rollout; every other failure
# acceptor of the waiter means the answer itself was unexpected, i.e. the watcher cannot judge.
ROLLOUT_FAILURES = frozenset({"FAILED", "SUPERSEDED"})
# logged on every attempt by wait()/async_wait(): state, running/desired tasks, ECS's reason
STATUS_QUERIES = [
    "services[0].deployments[?status=='PRIMARY'] | [0].rolloutState",
    "services[0].deployments[?status=='PRIMARY'] | [0].{running: runningCount, desired: desiredCount}",
    "services[0].deployments[?status=='PRIMARY'] | [0].rolloutStateReason",
    "failures[0].reason",
]
# XCom key under which the operator leaves a watcher error for the deploy DAG's rollback task
WATCH_ERROR_XCOM_KEY = "watch_error"

Status = Literal["COMPLETED", "FAILED", "TIMEOUT", "WATCH_FAILED"]


class RolloutEvent(TypedDict):
    """What the trigger yields and the operator's synchronous path produces."""

    status: Status
    deployment_id: str
    state: str  # the waiter acceptor that ended the wait (COMPLETED, SUPERSEDED, MISSING, ...), TIMEOUT or ERROR
    reason: str


class EcsRolloutFailed(AirflowException, FlightdeckError):
    """ECS's verdict: the rollout failed, was superseded or did not finish in time. Roll back."""


class EcsWatchError(AirflowException, FlightdeckError):
    """The watcher could not judge the rollout (unexpected answer or an error of its own).

    Not a verdict on the rollout: the deploy must not roll back on it.
    """


class RolloutHook(EcsHook):
    """The provider's EcsHook, serving our waiter model (waiters/ecs.json) to `get_waiter`.

    Its one waiter takes a parameter: `get_waiter(WAITER, parameters={"deployment_id": ...})`.
    """

    @property
    def waiter_path(self) -> Path:
        """Our waiter model (waiters/ecs.json); the provider's AwsBaseHook.get_waiter reads it from here."""
        return WAITER_PATH


def waiter_parameters(deployment_id: str) -> dict[str, str]:
    """The `parameters` of `RolloutHook.get_waiter(WAITER, ...)` for watching `deployment_id`."""
    return {"deployment_id": deployment_id}


@lru_cache(maxsize=32)
def acceptors(deployment_id: str) -> tuple[AcceptorConfig, ...]:
    """The rollout waiter's acceptors, rendered for `deployment_id`, in botocore's order."""
    config = json.loads(WAITER_PATH.read_text())
    config = RolloutHook._apply_parameters_value(config, WAITER, waiter_parameters(deployment_id))
    return tuple(WaiterModel(config).get_waiter(WAITER).acceptors)


def matched_state(response: Mapping[str, Any], deployment_id: str) -> str | None:
    """The `expected` of the acceptor botocore's waiter matches on `response` (first match wins), or
    None: no acceptor matched, the waiter keeps polling (IN_PROGRESS, or a retriable error)."""
    for acceptor in acceptors(deployment_id):
        if acceptor.matcher_func(response):
            return str(acceptor.expected)
    return None


def describe(state: str, response: Mapping[str, Any], deployment_id: str, service: str) -> str:
    """A reason for a user, naming what the answer said (ECS's own reason where it gives one)."""

    def q(expr: str) -> Any:
        return jmespath.search(expr, response)

    primary = q("services[0].deployments[?status=='PRIMARY'] | [0]") or {}
    if state in ("MISSING", "DESCRIBE_FAILED"):
        failures = ", ".join(f"{f.get('arn', service)}: {f.get('reason', '?')}" for f in q("failures") or [])
        return f"describe_services found no service {service} ({failures})"
    if state == "NO_SERVICE":
        return f"describe_services returned no service {service} and no failure"
    if state in ("INACTIVE", "DRAINING"):
        return f"service {service} is {state} (deleted while its rollout was watched)"
    if state == "NO_PRIMARY":
        return f"service {service} has no PRIMARY deployment"
    if state == "SUPERSEDED":
        ours = q(f"services[0].deployments[?id=='{deployment_id}'] | [0].rolloutStateReason") or ""
        why = f": {ours}" if ours else ""
        return (
            f"deployment {deployment_id} superseded by {primary.get('id')} (the circuit breaker rolled back or "
            f"another deploy started){why}"
        )
    if state in ("FAILED", "COMPLETED"):
        return primary.get("rolloutStateReason") or f"ECS reports the rollout {state}"
    return f"unexpected answer for service {service}: no acceptor of the waiter names it"


def rollout_event(
    deployment_id: str, service: str, error: BaseException | None = None, *, waiter_delay: int = 0, attempts: int = 0
) -> RolloutEvent:
    """The event for a wait on `deployment_id` that returned (error None) or raised `error`.

    `error` is what the provider's `wait`/`async_wait` (or the client under them) raised:
    WaiterTerminalFailure: a failure acceptor matched; which one decides FAILED or WATCH_FAILED.
    WaiterMaxAttemptsError: TIMEOUT (unless every attempt lacked credentials: WATCH_FAILED).
    Anything else (a non-retriable API error, connection errors past botocore's retries, a bug):
    WATCH_FAILED, naming the error.
    """
    if error is None:
        return RolloutEvent(status="COMPLETED", deployment_id=deployment_id, state="COMPLETED", reason="")
    if isinstance(error, WaiterTerminalFailure):
        state = matched_state(error.last_response, deployment_id) or "UNKNOWN"
        return RolloutEvent(
            status="FAILED" if state in ROLLOUT_FAILURES else "WATCH_FAILED",
            deployment_id=deployment_id,
            state=state,
            reason=describe(state, error.last_response, deployment_id, service),
        )
    if isinstance(error, WaiterMaxAttemptsError) and not isinstance(error, WaiterNoCredentialsError):
        return RolloutEvent(
            status="TIMEOUT",
            deployment_id=deployment_id,
            state="TIMEOUT",
            reason=f"still in progress after {attempts} polls {waiter_delay}s apart",
        )
    return RolloutEvent(
        status="WATCH_FAILED",
        deployment_id=deployment_id,
        state="ERROR",
        reason=f"watching service {service} failed: {type(error).__name__}: {error}",
    )


def raise_for(event: Mapping[str, Any], service: str) -> str:
    """The deployment id of a COMPLETED event; otherwise the exception the watch fails with: EcsWatchError
    for WATCH_FAILED (no rollback), EcsRolloutFailed for FAILED, superseded or timed out."""
    status, deployment_id = event["status"], event["deployment_id"]
    if status == "COMPLETED":
        return deployment_id
    what = f"ECS deployment {deployment_id} of {service}"
    if status == "WATCH_FAILED":
        raise EcsWatchError(f"{what}: the watch failed, not the rollout (no rollback): {event['reason']}")
    if status == "FAILED":
        raise EcsRolloutFailed(f"{what} FAILED: {event['reason']}")
    raise EcsRolloutFailed(f"{what} {status}: {event['reason']}")


def poll_once(ecs: Any, cluster: str, service: str, deployment_id: str) -> tuple[str, str]:
    """One attempt of the rollout waiter with the client `ecs`: (state, reason).

    state: COMPLETED, IN_PROGRESS (no acceptor matched), or the failure acceptor that matched
    (FAILED, SUPERSEDED, MISSING, NO_PRIMARY, ...). A retriable error answer (throttling) reads as
    IN_PROGRESS, as the waiter would poll again; any other error answer raises EcsWatchError.
    """
    waiter = RolloutHook(aws_conn_id=None).get_waiter(WAITER, parameters=waiter_parameters(deployment_id), client=ecs)
    try:
        waiter.wait(cluster=cluster, services=[service], WaiterConfig={"MaxAttempts": 1, "Delay": 0})
    except WaiterError as e:
        response = e.last_response or {}
        state = matched_state(response, deployment_id)
        if state is not None:
            return state, describe(state, response, deployment_id, service)
        code = (response.get("Error") or {}).get("Code")
        if code:
            from airflow.providers.amazon.aws.utils.waiter_with_logging import RETRIABLE_ERROR_CODES

            if code not in RETRIABLE_ERROR_CODES:
                raise EcsWatchError(f"watching service {service} failed: {e}") from e
            return "IN_PROGRESS", f"{code} (retriable): {response['Error'].get('Message', '')}"
        primary = jmespath.search("services[0].deployments[?status=='PRIMARY'] | [0]", response) or {}
        return "IN_PROGRESS", primary.get("rolloutStateReason", "")
    return "COMPLETED", ""
