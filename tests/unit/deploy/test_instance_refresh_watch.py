"""The EC2 instance refresh's watch and start, without AWS: which DescribeInstanceRefreshes answers end the
waiters (waiters/autoscaling.json), what StartInstanceRefresh is asked, and the trigger's serialization."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from botocore.waiter import WaiterModel

from flightdeck.deploy import instance_refresh as ir
from flightdeck.deploy.backend import InstanceRefreshSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "plugins"))


def _acceptor_state(waiter: str, response: dict) -> str | None:
    import json

    model = WaiterModel(json.loads(ir.WAITER_PATH.read_text())).get_waiter(waiter)
    for acceptor in model.acceptors:
        if acceptor.matcher_func(response):
            return acceptor.state
    return None  # no acceptor: the waiter polls again


@pytest.mark.parametrize(
    ("status", "complete", "rolled_back"),
    [
        ("Pending", None, None),
        ("InProgress", None, None),
        ("Baking", None, None),
        ("Cancelling", None, None),  # still replacing: roll_back waits for it to settle
        ("Successful", "success", None),
        ("Failed", "failure", None),
        ("Cancelled", "failure", None),
        ("RollbackInProgress", "failure", None),  # Auto Scaling is undoing it: hand over to rollback at once
        ("RollbackSuccessful", "failure", "success"),
        ("RollbackFailed", "failure", "failure"),
    ],
)
def test_each_refresh_status_ends_or_continues_the_waiters(status, complete, rolled_back):
    answer = {"InstanceRefreshes": [{"InstanceRefreshId": "r-1", "Status": status}]}
    assert _acceptor_state(ir.COMPLETE, answer) == complete
    assert _acceptor_state(ir.ROLLED_BACK, answer) == rolled_back
    assert ir.RefreshStatus(status).active == (status in ("Pending", "InProgress", "Baking", "Cancelling"))


@pytest.mark.parametrize(("status", "state"), [("Cancelling", None), ("Cancelled", "success")])
def test_a_cancelling_refresh_is_waited_out_until_cancelled(status, state):
    answer = {"InstanceRefreshes": [{"InstanceRefreshId": "r-1", "Status": status}]}
    assert _acceptor_state(ir.CANCELLED, answer) == state


def test_a_missing_refresh_fails_both_waiters():
    assert _acceptor_state(ir.COMPLETE, {"InstanceRefreshes": []}) == "failure"
    assert _acceptor_state(ir.ROLLED_BACK, {"InstanceRefreshes": []}) == "failure"


def test_the_hook_serves_our_waiters():
    hook = ir.AutoScalingHook(aws_conn_id=None)
    assert hook.client_type == "autoscaling" and hook.waiter_path == ir.WAITER_PATH
    import json

    assert set(json.loads(hook.waiter_path.read_text())["waiters"]) == {ir.COMPLETE, ir.ROLLED_BACK, ir.CANCELLED}


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def start_instance_refresh(self, **kwargs):
        self.calls.append(kwargs)
        return {"InstanceRefreshId": "r-42"}


def _spec(checkpoints: list[int]) -> InstanceRefreshSpec:
    return InstanceRefreshSpec(
        group="flightdeck-serving-v1",
        launch_template_id="lt-1",
        previous_version="3",
        version="4",
        min_healthy_percentage=90,
        checkpoint_percentages=checkpoints,
        checkpoint_delay_s=20,
    )


def test_start_asks_for_the_version_with_checkpoints_and_auto_rollback():
    asg = _Recorder()
    assert ir.start_refresh(asg, _spec([55, 10])) == "r-42"
    [call] = asg.calls
    assert call["AutoScalingGroupName"] == "flightdeck-serving-v1" and call["Strategy"] == "Rolling"
    assert call["DesiredConfiguration"] == {"LaunchTemplate": {"LaunchTemplateId": "lt-1", "Version": "4"}}
    prefs = call["Preferences"]
    assert prefs["CheckpointPercentages"] == [10, 55, 100]  # increasing and ending at 100, as AWS requires
    assert prefs["CheckpointDelay"] == 20 and prefs["MinHealthyPercentage"] == 90
    assert prefs["MaxHealthyPercentage"] == 190  # AWS refuses Max - Min > 100
    assert "InstanceWarmup" not in prefs  # the group's DefaultInstanceWarmup applies
    assert ir.refresh_budget_s(_spec([55, 10])) == 40  # two checkpoints before 100, 20 s each
    assert prefs["AutoRollback"] is True and prefs["SkipMatching"] is True


def test_a_single_step_has_no_checkpoints():
    asg = _Recorder()
    ir.start_refresh(asg, _spec([100]), auto_rollback=False)
    prefs = asg.calls[0]["Preferences"]
    assert "CheckpointPercentages" not in prefs and "CheckpointDelay" not in prefs and prefs["AutoRollback"] is False


def test_trigger_serializes_what_the_triggerer_needs():
    from flightdeck_deploy_operators import InstanceRefreshTrigger

    trigger = InstanceRefreshTrigger(group="g", instance_refresh_id="r-1", waiter_delay=5, waiter_max_attempts=7)
    path, kwargs = trigger.serialize()
    assert path.endswith("InstanceRefreshTrigger")
    assert kwargs["group"] == "g" and kwargs["instance_refresh_id"] == "r-1"
    assert kwargs["waiter_delay"] == 5 and kwargs["waiter_max_attempts"] == 7
    assert trigger.waiter_args == {"AutoScalingGroupName": "g", "InstanceRefreshIds": ["r-1"]}
    assert trigger.waiter_name == ir.COMPLETE


def test_operator_resumes_only_on_success():
    from airflow.sdk.exceptions import AirflowException
    from flightdeck_deploy_operators import Ec2InstanceRefreshOperator

    op = Ec2InstanceRefreshOperator(task_id="refresh_instances", refresh=_spec([100]))
    assert op.execute_complete({}, {"status": "success", "instance_refresh_id": "r-1"}) == "r-1"
    with pytest.raises(AirflowException):
        op.execute_complete({}, {"status": "error", "message": "instance refresh r-1 did not succeed"})
