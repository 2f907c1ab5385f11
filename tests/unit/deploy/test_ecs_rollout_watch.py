"""The ECS rollout watcher on its own: the waiter model's acceptors (fed ECS answers), the trigger's
events (its aiobotocore client answered by botocore's Stubber: no network), and how the operator
ends on each event. The same watcher against a moto server: tests/integration/test_deploy_ecs.py."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import AioSession
from aiobotocore.stub import AioStubber
from airflow.providers.amazon.aws.utils.waiter_with_logging import RETRIABLE_ERROR_CODES
from botocore.exceptions import EndpointConnectionError

from flightdeck.deploy import ecs_rollout as ro

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "plugins"))
from flightdeck_deploy_operators import EcsDeploymentTrigger, EcsServiceDeployOperator

OURS = "ecs-svc/1111111111111111111"
OTHER = "ecs-svc/2222222222222222222"
SERVICE = "flightdeck-serving-v1"


def deployment(id_: str, status: str, rollout: str | None, reason: str = "") -> dict[str, Any]:
    d: dict[str, Any] = {"id": id_, "status": status, "runningCount": 1, "desiredCount": 2}
    if rollout is not None:
        d["rolloutState"] = rollout
    if reason:
        d["rolloutStateReason"] = reason
    return d


def answer(*deployments: dict[str, Any], status: str = "ACTIVE") -> dict[str, Any]:
    return {"services": [{"serviceName": SERVICE, "status": status, "deployments": list(deployments)}], "failures": []}


MISSING = {
    "services": [],
    "failures": [{"arn": f"arn:aws:ecs:us-east-1:123456789012:service/x/{SERVICE}", "reason": "MISSING"}],
}


# -- the waiter model (include/flightdeck/deploy/waiters/ecs.json) -------------------------------------------------
@pytest.mark.parametrize(
    ("response", "state"),
    [
        (answer(deployment(OURS, "PRIMARY", "COMPLETED")), "COMPLETED"),
        (answer(deployment(OURS, "PRIMARY", "IN_PROGRESS"), deployment(OTHER, "ACTIVE", "COMPLETED")), None),
        (answer(deployment(OURS, "PRIMARY", None)), None),  # no rolloutState yet: keep polling
        (answer(deployment(OURS, "PRIMARY", "FAILED", "tasks failed to start")), "FAILED"),
        # the circuit breaker rolled back: the old deployment is PRIMARY again and COMPLETED -> not a success
        (answer(deployment(OTHER, "PRIMARY", "COMPLETED"), deployment(OURS, "ACTIVE", "FAILED")), "SUPERSEDED"),
        (MISSING, "MISSING"),
        ({"services": [], "failures": [{"arn": "x", "reason": "ACCESS_DENIED"}]}, "DESCRIBE_FAILED"),
        ({"services": [], "failures": []}, "NO_SERVICE"),
        (answer(deployment(OURS, "PRIMARY", "IN_PROGRESS"), status="INACTIVE"), "INACTIVE"),
        (answer(deployment(OURS, "PRIMARY", "IN_PROGRESS"), status="DRAINING"), "DRAINING"),
        (answer(deployment(OURS, "ACTIVE", "IN_PROGRESS")), "NO_PRIMARY"),
        (answer(), "NO_PRIMARY"),
        ({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, None),
    ],
    ids=[
        "completed",
        "in-progress",
        "no-rollout-state",
        "failed",
        "superseded",
        "missing",
        "describe-failure",
        "no-service",
        "inactive",
        "draining",
        "no-primary",
        "no-deployments",
        "throttled",
    ],
)
def test_waiter_acceptor_matched_by_each_ecs_answer(response, state):
    assert ro.matched_state(response, OURS) == state


def test_rollout_verdicts_are_only_failed_and_superseded_every_other_failure_is_the_watchers():
    failures = {str(a.expected) for a in ro.acceptors(OURS) if a.state == "failure"}
    assert failures == {
        "MISSING",
        "DESCRIBE_FAILED",
        "NO_SERVICE",
        "INACTIVE",
        "DRAINING",
        "NO_PRIMARY",
        "SUPERSEDED",
        "FAILED",
    }
    assert ro.ROLLOUT_FAILURES < failures
    assert [str(a.expected) for a in ro.acceptors(OURS) if a.state == "success"] == ["COMPLETED"]


def test_a_throttled_answer_matches_no_acceptor_and_the_provider_retries_its_code():
    throttled = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
    assert ro.matched_state(throttled, OURS) is None
    assert "ThrottlingException" in RETRIABLE_ERROR_CODES


def test_the_hook_serves_the_waiter_with_this_deployments_id():
    import boto3

    client = boto3.client("ecs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    hook = ro.RolloutHook(aws_conn_id=None)
    waiter = hook.get_waiter(ro.WAITER, parameters=ro.waiter_parameters(OURS), client=client)
    assert waiter.config.operation == "DescribeServices"
    assert any(OURS in a.argument for a in waiter.config.acceptors)  # the superseded rule, rendered
    from airflow.sdk.exceptions import AirflowException

    with pytest.raises(AirflowException, match="not supplied"):  # no id, no superseded rule: refused
        hook.get_waiter(ro.WAITER, client=client)


# -- the trigger ---------------------------------------------------------------------------------------------------
def trigger(**kw: Any) -> EcsDeploymentTrigger:
    args = {
        "cluster": "flightdeck",
        "service": SERVICE,
        "deployment_id": OURS,
        "waiter_delay": 0,
        "waiter_max_attempts": 3,
        "aws_conn_id": None,
        "region_name": "us-east-1",
        **kw,
    }
    return EcsDeploymentTrigger(**args)


def test_trigger_serializes_to_itself():
    t = trigger(botocore_config={"retries": {"mode": "standard"}})
    path, kwargs = t.serialize()
    assert path == "flightdeck_deploy_operators.EcsDeploymentTrigger"
    assert kwargs["deployment_id"] == OURS and kwargs["service"] == SERVICE and kwargs["cluster"] == "flightdeck"
    assert EcsDeploymentTrigger(**kwargs).serialize() == (path, kwargs)


class _Stubbed:
    """What hook.get_async_conn() returns: an aiobotocore ECS client whose answers are queued."""

    def __init__(self, answers: list[dict[str, Any] | str]) -> None:
        self.answers = answers

    async def __aenter__(self):
        session = AioSession()
        self._cm = session.create_client(
            "ecs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        client = await self._cm.__aenter__()
        self.stubber = AioStubber(client)
        for a in self.answers:
            if isinstance(a, str):  # an error code
                self.stubber.add_client_error(
                    "describe_services", service_error_code=a, service_message=a, http_status_code=400
                )
            else:
                self.stubber.add_response("describe_services", a)
        self.stubber.activate()
        return client

    async def __aexit__(self, *exc):
        return await self._cm.__aexit__(*exc)


def run_trigger(monkeypatch, answers: list[dict[str, Any] | str] | Exception, **kw: Any) -> dict[str, Any]:
    async def conn(self):
        if isinstance(answers, Exception):
            raise answers
        return _Stubbed(answers)

    monkeypatch.setattr(ro.RolloutHook, "get_async_conn", conn)

    async def first_event():
        async for event in trigger(**kw).run():
            return event.payload

    return asyncio.run(first_event())


def test_trigger_retries_a_throttle_logs_each_poll_and_completes(monkeypatch, caplog):
    answers = [
        "ThrottlingException",
        answer(deployment(OURS, "PRIMARY", "IN_PROGRESS", "started")),
        answer(deployment(OURS, "PRIMARY", "COMPLETED")),
    ]
    with caplog.at_level(logging.INFO):
        event = run_trigger(monkeypatch, answers)
    assert event == {"status": "COMPLETED", "deployment_id": OURS, "state": "COMPLETED", "reason": ""}
    text = caplog.text
    assert "retriable error: ThrottlingException" in text
    assert f"ECS deployment {OURS} of {SERVICE}: IN_PROGRESS - {{'running': 1, 'desired': 2}} - started" in text


def test_trigger_reports_a_missing_service_as_a_watch_failure_naming_it(monkeypatch):
    event = run_trigger(monkeypatch, [MISSING])
    assert event["status"] == "WATCH_FAILED" and event["state"] == "MISSING"
    assert SERVICE in event["reason"] and "MISSING" in event["reason"]


def test_trigger_reports_no_primary_deployment_as_a_watch_failure(monkeypatch):
    event = run_trigger(monkeypatch, [answer(deployment(OURS, "ACTIVE", "IN_PROGRESS"))])
    assert (event["status"], event["state"]) == ("WATCH_FAILED", "NO_PRIMARY")
    assert "no PRIMARY deployment" in event["reason"]


def test_trigger_reports_the_circuit_breakers_failure_with_ecs_reason(monkeypatch):
    event = run_trigger(monkeypatch, [answer(deployment(OURS, "PRIMARY", "FAILED", "tasks failed to start"))])
    assert event == {"status": "FAILED", "deployment_id": OURS, "state": "FAILED", "reason": "tasks failed to start"}


def test_trigger_reports_a_superseded_deployment_as_failed(monkeypatch):
    event = run_trigger(
        monkeypatch,
        [answer(deployment(OTHER, "PRIMARY", "COMPLETED"), deployment(OURS, "ACTIVE", "FAILED", "circuit breaker"))],
    )
    assert (event["status"], event["state"]) == ("FAILED", "SUPERSEDED")
    assert OTHER in event["reason"] and "circuit breaker" in event["reason"]


def test_trigger_times_out_after_its_attempts(monkeypatch):
    event = run_trigger(monkeypatch, [answer(deployment(OURS, "PRIMARY", "IN_PROGRESS"))] * 2, waiter_max_attempts=2)
    assert (event["status"], event["state"]) == ("TIMEOUT", "TIMEOUT")
    assert "still in progress after 2 polls" in event["reason"]


def test_trigger_reports_a_non_retriable_api_error_as_a_watch_failure(monkeypatch):
    event = run_trigger(monkeypatch, ["AccessDeniedException"])
    assert (event["status"], event["state"]) == ("WATCH_FAILED", "ERROR")
    assert "AccessDeniedException" in event["reason"]


def test_trigger_reports_a_connection_error_as_a_watch_failure_not_a_crash(monkeypatch):
    event = run_trigger(monkeypatch, EndpointConnectionError(endpoint_url="https://ecs.us-east-1.amazonaws.com"))
    assert (event["status"], event["state"]) == ("WATCH_FAILED", "ERROR")
    assert "EndpointConnectionError" in event["reason"]


# -- how the operator ends on each event ---------------------------------------------------------------------------
class FakeTI:
    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def operator() -> EcsServiceDeployOperator:
    return EcsServiceDeployOperator(
        task_id="roll_service",
        cluster="flightdeck",
        service=SERVICE,
        task_definition="td:2",
        aws_conn_id=None,
        deferrable=True,
    )


def test_operator_returns_the_deployment_id_on_completed():
    ti = FakeTI()
    event = dict(ro.rollout_event(OURS, SERVICE))
    assert operator().execute_complete({"ti": ti}, event) == OURS and ti.xcom == {}


@pytest.mark.parametrize("status", ["FAILED", "TIMEOUT"])
def test_operator_fails_a_rollout_verdict_as_rollout_failed_for_rollback(status):
    ti = FakeTI()
    with pytest.raises(ro.EcsRolloutFailed, match=f"{status}: why") as e:
        operator().execute_complete(
            {"ti": ti}, {"status": status, "deployment_id": OURS, "state": status, "reason": "why"}
        )
    assert not isinstance(e.value, ro.EcsWatchError) and ti.xcom == {}


def test_operator_fails_a_watch_failure_as_its_own_error_and_leaves_the_reason_for_rollback():
    ti = FakeTI()
    event = {"status": "WATCH_FAILED", "deployment_id": OURS, "state": "MISSING", "reason": "no service x"}
    with pytest.raises(ro.EcsWatchError, match="the watch failed, not the rollout .*no service x"):
        operator().execute_complete({"ti": ti}, event)
    assert ti.xcom == {ro.WATCH_ERROR_XCOM_KEY: "no service x"}


def test_operator_builds_one_hook_of_the_rollout_hook_class():
    op = operator()
    assert isinstance(op.hook, ro.RolloutHook) and op.hook is op.hook
    assert {"cluster", "service", "task_definition", "desired_count", "aws_conn_id"} <= set(op.template_fields)
