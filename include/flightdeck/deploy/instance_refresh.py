"""EC2 Auto Scaling instance refreshes: start one, watch it, undo it (the EC2 target's rolling strategy).

A rolling deploy on EC2 keeps the live Auto Scaling group and replaces its instances with ones from a new
launch template version: StartInstanceRefresh with that version as DesiredConfiguration, MinHealthyPercentage
and checkpoints from the run's params, and AutoRollback on, so a refresh that fails (instances that never
pass the ELB health check) is rolled back by Auto Scaling itself to the version the group ran before.
The group's own launch template setting changes only when the refresh succeeds.

When a refresh is done is data: the waiters in waiters/autoscaling.json, served by `AutoScalingHook` (the
provider's AwsBaseHook for the `autoscaling` client, which has no hook of its own in the Amazon provider,
with our `waiter_path`). The operator (plugins/flightdeck_deploy_operators.py), its trigger and
Ec2Backend.roll_back all wait on them.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

from flightdeck.deploy.backend import InstanceRefreshSpec

log = logging.getLogger(__name__)

WAITER_PATH = Path(__file__).with_name("waiters") / "autoscaling.json"
COMPLETE = "instance_refresh_complete"  # success: Successful; failure: Failed, Cancelled, Rollback*
ROLLED_BACK = "instance_refresh_rolled_back"  # success: RollbackSuccessful; failure: RollbackFailed
CANCELLED = "instance_refresh_cancelled"  # success: Cancelled (a Cancelling refresh settles there)
# logged on every attempt by the provider's wait()/async_wait()
STATUS_QUERIES = [
    "InstanceRefreshes[0].Status",
    "InstanceRefreshes[0].PercentageComplete",
    "InstanceRefreshes[0].StatusReason",
]


class RefreshStatus(StrEnum):
    """DescribeInstanceRefreshes' Status values (Auto Scaling API reference, InstanceRefresh)."""

    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    BAKING = "Baking"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    CANCELLING = "Cancelling"
    CANCELLED = "Cancelled"
    ROLLBACK_IN_PROGRESS = "RollbackInProgress"
    ROLLBACK_SUCCESSFUL = "RollbackSuccessful"
    ROLLBACK_FAILED = "RollbackFailed"

    @property
    def active(self) -> bool:
        """Auto Scaling is still replacing instances for this refresh (a new one would be refused)."""
        return self in (
            RefreshStatus.PENDING,
            RefreshStatus.IN_PROGRESS,
            RefreshStatus.BAKING,
            RefreshStatus.CANCELLING,
        )


class AutoScalingHook(AwsBaseHook):
    """The provider's AwsBaseHook for the `autoscaling` client, serving waiters/autoscaling.json."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["client_type"] = "autoscaling"
        super().__init__(*args, **kwargs)

    @property
    def waiter_path(self) -> Path:
        """Our waiter model (waiters/autoscaling.json); AwsBaseHook.get_waiter reads it from here."""
        return WAITER_PATH


def start_refresh(autoscaling: Any, refresh: InstanceRefreshSpec, *, auto_rollback: bool = True) -> str:
    """StartInstanceRefresh of `refresh["group"]` to its launch template version; returns the refresh id.

    Preferences: MinHealthyPercentage, CheckpointPercentages and CheckpointDelay (seconds) from the spec,
    MaxHealthyPercentage up to 100 points above the minimum (AWS's limit; launch before terminating), SkipMatching
    (instances already on the version stay) and AutoRollback (Auto Scaling rolls a failed refresh back to
    the group's previous configuration); the warmup is the group's DefaultInstanceWarmup. Raises botocore's
    ClientError, e.g. InstanceRefreshInProgress when another refresh of the group is active.
    """
    checkpoints = sorted({int(p) for p in refresh["checkpoint_percentages"]} | {100})
    min_healthy = int(refresh["min_healthy_percentage"])
    preferences: dict[str, Any] = {
        "MinHealthyPercentage": min_healthy,
        "MaxHealthyPercentage": min(200, min_healthy + 100),  # Max - Min <= 100 (StartInstanceRefresh)
        "SkipMatching": True,
        "AutoRollback": auto_rollback,
    }
    if checkpoints != [100]:
        preferences["CheckpointPercentages"] = checkpoints
        preferences["CheckpointDelay"] = int(refresh["checkpoint_delay_s"])
    refresh_id = autoscaling.start_instance_refresh(
        AutoScalingGroupName=refresh["group"],
        Strategy="Rolling",
        DesiredConfiguration={
            "LaunchTemplate": {"LaunchTemplateId": refresh["launch_template_id"], "Version": refresh["version"]}
        },
        Preferences=preferences,
    )["InstanceRefreshId"]
    log.info(
        "instance refresh %s of %s to launch template version %s (min healthy %s%%, checkpoints %s)",
        refresh_id,
        refresh["group"],
        refresh["version"],
        refresh["min_healthy_percentage"],
        checkpoints,
    )
    return refresh_id


def refresh_budget_s(refresh: InstanceRefreshSpec) -> int:
    """Seconds the refresh's checkpoints alone hold it (CheckpointDelay at each checkpoint but the last)."""
    checkpoints = {int(p) for p in refresh["checkpoint_percentages"]} | {100}
    return (len(checkpoints) - 1) * int(refresh["checkpoint_delay_s"])


def latest(autoscaling: Any, group: str) -> dict[str, Any] | None:
    """The group's newest instance refresh (DescribeInstanceRefreshes lists newest first), or None."""
    found = autoscaling.describe_instance_refreshes(AutoScalingGroupName=group, MaxRecords=1)["InstanceRefreshes"]
    return found[0] if found else None


def desired_version(refresh: dict[str, Any]) -> str:
    """The launch template version an instance refresh rolls to ("" when it has no DesiredConfiguration)."""
    return str(((refresh.get("DesiredConfiguration") or {}).get("LaunchTemplate") or {}).get("Version", ""))


def wait_for(
    autoscaling: Any, waiter_name: str, group: str, refresh_id: str, *, delay_s: int = 15, max_attempts: int = 80
) -> None:
    """Block until refresh `refresh_id` of `group` ends as `waiter_name` wants (COMPLETE, ROLLED_BACK, CANCELLED),
    logging its status on every attempt (the provider's `wait`). Raises AirflowException when it ends
    otherwise or is still running after `delay_s * max_attempts` seconds."""
    from airflow.providers.amazon.aws.utils.waiter_with_logging import wait

    waiter = AutoScalingHook(aws_conn_id=None).get_waiter(waiter_name, client=autoscaling)
    wait(
        waiter=waiter,
        waiter_delay=delay_s,
        waiter_max_attempts=max_attempts,
        args={"AutoScalingGroupName": group, "InstanceRefreshIds": [refresh_id]},
        failure_message=f"instance refresh {refresh_id} of {group} did not succeed ({waiter_name})",
        status_message=f"instance refresh {refresh_id} of {group}",
        status_args=STATUS_QUERIES,
    )
