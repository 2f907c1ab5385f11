"""INJECTED: EC2 Auto Scaling's instance refresh API, which moto (5.2) does not implement.

`InstanceRefreshSim.attach(client)` answers StartInstanceRefresh, DescribeInstanceRefreshes and
RollbackInstanceRefresh on that boto3 autoscaling client (botocore's `before-call` hook returns the answer
instead of sending the request), the way AWS would, on top of the moto account's real state:
- a refresh ending `Successful` does what Auto Scaling does: the group's launch template setting moves to
  the desired version and its instances are replaced (moto's TerminateInstanceInAutoScalingGroup
  without decrementing launches the replacement from the group's template);
- a refresh scripted to fail ends `RollbackSuccessful` (AutoRollback on) or `Failed` (off) and leaves the
  group's setting as it was, as AWS does;
- `hold=True` keeps the next refresh `InProgress` until RollbackInstanceRefresh (then RollbackSuccessful).
Every other call goes to moto.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse

_ids = itertools.count(1)


@dataclass
class InstanceRefreshSim:
    outcome: str = "Successful"  # how the next refresh ends: Successful or Failed
    hold: bool = False  # the next refresh stays InProgress until rolled back
    refreshes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # group -> refreshes, newest first
    started: list[dict[str, Any]] = field(default_factory=list)  # StartInstanceRefresh requests, in order
    rollbacks: list[str] = field(default_factory=list)  # groups RollbackInstanceRefresh was called for

    def attach(self, autoscaling: Any) -> Any:
        """Answer the three instance-refresh operations on `autoscaling` (a boto3 client); returns it."""
        self._moto = autoscaling
        events = autoscaling.meta.events
        for op, answer in (
            ("StartInstanceRefresh", self._start),
            ("DescribeInstanceRefreshes", self._describe),
            ("RollbackInstanceRefresh", self._rollback),
        ):
            # the API parameters reach before-call only through the context (its `params` is the HTTP request)
            events.register(f"before-parameter-build.auto-scaling.{op}", self._keep_params)
            events.register(f"before-call.auto-scaling.{op}", answer)
        return autoscaling

    @staticmethod
    def _keep_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["api_params"] = dict(params)

    @staticmethod
    def _answer(parsed: dict[str, Any], status: int = 200) -> tuple[AWSResponse, dict[str, Any]]:
        parsed.setdefault("ResponseMetadata", {"HTTPStatusCode": status})
        return AWSResponse("https://autoscaling.amazonaws.com/", status, {}, None), parsed

    def _group(self, name: str) -> dict[str, Any]:
        return self._moto.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]

    def _apply(self, group: str, version: str) -> None:
        """What a successful refresh does: the group's template version, then its instances replaced."""
        current = self._group(group)["LaunchTemplate"]
        self._moto.update_auto_scaling_group(
            AutoScalingGroupName=group,
            LaunchTemplate={"LaunchTemplateId": current["LaunchTemplateId"], "Version": version},
        )
        old = self._group(group)["Instances"]
        for instance in old:  # all of them: moto does not track each instance's template version
            self._moto.terminate_instance_in_auto_scaling_group(
                InstanceId=instance["InstanceId"], ShouldDecrementDesiredCapacity=False
            )
        # Auto Scaling deregisters what it terminates from the group's target groups (moto leaves them in)
        elb = boto3.client(
            "elbv2",
            endpoint_url=self._moto.meta.endpoint_url,
            region_name=self._moto.meta.region_name,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for tg in self._group(group)["TargetGroupARNs"]:
            elb.deregister_targets(TargetGroupArn=tg, Targets=[{"Id": i["InstanceId"]} for i in old])

    def _start(self, context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        params = context["api_params"]
        group = params["AutoScalingGroupName"]
        mine = self.refreshes.setdefault(group, [])
        if mine and mine[0]["Status"] in ("Pending", "InProgress", "Baking"):
            return self._answer(
                {"Error": {"Code": "InstanceRefreshInProgress", "Message": "an instance refresh is in progress"}},
                400,
            )
        if problem := self._invalid(params.get("Preferences", {})):
            return self._answer({"Error": {"Code": "ValidationError", "Message": problem}}, 400)
        self.started.append(params)
        refresh_id = f"sim-{next(_ids):04d}"
        desired = params.get("DesiredConfiguration", {})
        version = str(desired.get("LaunchTemplate", {}).get("Version", ""))
        auto_rollback = bool(params.get("Preferences", {}).get("AutoRollback"))
        entry = {
            "InstanceRefreshId": refresh_id,
            "AutoScalingGroupName": group,
            "DesiredConfiguration": desired,
            "Preferences": params.get("Preferences", {}),
            "PercentageComplete": 0,
        }
        if self.hold:
            entry.update(Status="InProgress", StatusReason="waiting for instances to warm up")
            self.hold = False
        elif self.outcome == "Successful":
            self._apply(group, version)
            entry.update(Status="Successful", PercentageComplete=100)
        else:
            entry.update(
                Status="RollbackSuccessful" if auto_rollback else "Failed",
                StatusReason="instances failed ELB health checks",
            )
            self.outcome = "Successful"
        mine.insert(0, entry)
        return self._answer({"InstanceRefreshId": refresh_id})

    @staticmethod
    def _invalid(prefs: dict[str, Any]) -> str:
        """What AWS's StartInstanceRefresh refuses in Preferences (API reference, RefreshPreferences), or ""."""
        low, high = prefs.get("MinHealthyPercentage", 90), prefs.get("MaxHealthyPercentage", 100)
        if not (0 <= low <= 100 and 100 <= high <= 200 and high - low <= 100):
            return f"MinHealthyPercentage {low} / MaxHealthyPercentage {high} out of range"
        checkpoints = prefs.get("CheckpointPercentages")
        if checkpoints is not None and (checkpoints != sorted(set(checkpoints)) or checkpoints[-1] != 100):
            return f"CheckpointPercentages {checkpoints} must increase and end at 100"
        if "CheckpointDelay" in prefs and checkpoints is None:
            return "CheckpointDelay needs CheckpointPercentages"
        if prefs.get("AutoRollback") and prefs.get("ScaleInProtectedInstances") == "Ignore":
            return "AutoRollback does not go with ScaleInProtectedInstances Ignore"
        return ""

    def _describe(self, context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        params = context["api_params"]
        found = self.refreshes.get(params["AutoScalingGroupName"], [])
        if ids := params.get("InstanceRefreshIds"):
            found = [r for r in found if r["InstanceRefreshId"] in ids]
        return self._answer({"InstanceRefreshes": [dict(r) for r in found[: params.get("MaxRecords", 50)]]})

    def _rollback(self, context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        params = context["api_params"]
        group = params["AutoScalingGroupName"]
        self.rollbacks.append(group)
        mine = self.refreshes.get(group, [])
        if not mine or mine[0]["Status"] not in ("Pending", "InProgress", "Baking"):
            return self._answer({"Error": {"Code": "ActiveInstanceRefreshNotFound", "Message": "none active"}}, 400)
        mine[0].update(Status="RollbackSuccessful", StatusReason="rolled back by request")
        return self._answer({"InstanceRefreshId": mine[0]["InstanceRefreshId"]})
