"""The ALB side shared by the AWS targets (ECS and EC2): one target group per revision behind one weighted
listener, its targets' health, and the ALB's per-target-group request and 5xx counts from CloudWatch.

Blue/green and canary on AWS are the same three calls whatever runs the revision: create the revision's
target group (`fd-<revision>`), point the listener's weighted forward at the groups, read back the health
and the counts. ECS attaches the group to a service, EC2 to an Auto Scaling group.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from flightdeck.deploy.backend import TargetHealth
from flightdeck.errors import FlightdeckError

log = logging.getLogger(__name__)

TAG_REV = "org.flightdeck.revision"
TAG_APP = "org.flightdeck.app"


class ListenerTargetError(FlightdeckError, RuntimeError):
    """Traffic asked for a revision that has no target group on the listener's load balancer."""


@dataclass(frozen=True)
class HealthCheck:
    """The target group's active health check (ELBv2 CreateTargetGroup's HealthCheck* fields)."""

    port: str = "traffic-port"  # a port number, or "traffic-port"
    path: str = "/readyz"
    interval_s: int = 10
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2


class WeightedListener:
    """One ALB listener whose default action forwards to revisions' target groups by weight.

    `elb` and `cw` are elbv2 and CloudWatch clients (from the Amazon provider's hooks);
    `metrics_window_s` is how far back `counts` sums the ALB's metrics (seconds).
    """

    def __init__(self, elb: Any, cw: Any, listener_arn: str, metrics_window_s: int = 300) -> None:
        self.elb, self.cw = elb, cw
        self.listener_arn = listener_arn
        self.metrics_window_s = metrics_window_s

    @staticmethod
    def tg_name(revision: str) -> str:
        """The revision's target group: `fd-<revision>` cut to the 32 characters ELBv2 allows
        (CreateTargetGroup, `Name`)."""
        return f"fd-{revision}"[:32].rstrip("-")

    def tg_arn(self, revision: str) -> str | None:
        """The ARN of the revision's target group, or None when it has none."""
        try:
            tgs = self.elb.describe_target_groups(Names=[self.tg_name(revision)])["TargetGroups"]
        except self.elb.exceptions.TargetGroupNotFoundException:
            return None
        return tgs[0]["TargetGroupArn"] if tgs else None

    def create_target_group(
        self, revision: str, *, app: str, vpc_id: str, port: int, target_type: str, check: HealthCheck
    ) -> str:
        """The revision's HTTP target group (adopted when it exists); returns its ARN.

        `target_type`: "ip" (ECS awsvpc tasks) or "instance" (EC2 instances, ECS bridge mode). Raises
        botocore's ClientError when ELBv2 refuses."""
        arn = self.tg_arn(revision)
        if arn is not None:
            return arn
        tg = self.elb.create_target_group(
            Name=self.tg_name(revision),
            Protocol="HTTP",
            Port=port,
            VpcId=vpc_id,
            TargetType=target_type,
            HealthCheckProtocol="HTTP",
            HealthCheckPort=check.port,
            HealthCheckPath=check.path,
            Matcher={"HttpCode": "200"},
            HealthCheckIntervalSeconds=check.interval_s,
            HealthyThresholdCount=check.healthy_threshold,
            UnhealthyThresholdCount=check.unhealthy_threshold,
            Tags=[{"Key": TAG_REV, "Value": revision}, {"Key": TAG_APP, "Value": app}],
        )["TargetGroups"][0]
        return tg["TargetGroupArn"]

    def target_states(self, tg_arn: str) -> dict[str, str]:
        """`<target id>:<port>` -> ELBv2 state (healthy, unhealthy, initial, draining, unused, ...)."""
        descs = self.elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
        return {f"{d['Target']['Id']}:{d['Target'].get('Port', '')}": d["TargetHealth"]["State"] for d in descs}

    def lb_dimension(self) -> str:
        """The load balancer's CloudWatch dimension `app/<name>/<id>`, cut from the listener ARN
        (`arn:...:listener/app/<name>/<lb id>/<listener id>`); "" when the ARN has another shape."""
        parts = self.listener_arn.split(":")[-1].split("/")
        return "/".join(parts[1:4]) if len(parts) >= 4 else ""

    def resource_label(self, tg_arn: str) -> str:
        """`app/<lb>/<id>/targetgroup/<tg>/<id>`: the ResourceLabel of the predefined target-tracking metric
        ALBRequestCountPerTarget (Auto Scaling PredefinedMetricSpecification)."""
        return f"{self.lb_dimension()}/{tg_arn.split(':')[-1]}"

    def metric_sum(self, name: str, tg_arn: str) -> int:
        """The sum of AWS/ApplicationELB metric `name` (RequestCount, HTTPCode_Target_5XX_Count) for the
        target group over the last `metrics_window_s` seconds (0 when the ALB published nothing)."""
        dims = [{"Name": "TargetGroup", "Value": tg_arn.split(":")[-1]}]
        if lb := self.lb_dimension():
            dims.append({"Name": "LoadBalancer", "Value": lb})
        end = dt.datetime.now(dt.UTC)
        points = self.cw.get_metric_statistics(
            Namespace="AWS/ApplicationELB",
            MetricName=name,
            Dimensions=dims,
            Statistics=["Sum"],
            Period=60,
            StartTime=end - dt.timedelta(seconds=self.metrics_window_s),
            EndTime=end,
        )["Datapoints"]
        return int(sum(p["Sum"] for p in points))

    def target_health(self, revision: str, total: int) -> TargetHealth:
        """Backend.target_health of an ALB-fronted revision: its target group's states and the ALB's
        RequestCount and HTTPCode_Target_5XX_Count for the group over the last `metrics_window_s` seconds.
        `total`: the targets the revision should have (its service's or group's desired count)."""
        tg_arn = self.tg_arn(revision)
        if tg_arn is None:
            return TargetHealth(revision=revision, total=total, healthy=0)
        states = self.target_states(tg_arn)
        requests, errors_5xx = self.counts(tg_arn)
        return TargetHealth(
            revision=revision,
            total=total,
            healthy=sum(1 for s in states.values() if s == "healthy"),
            states=states,
            requests=requests,
            errors_5xx=errors_5xx,
        )

    def counts(self, tg_arn: str) -> tuple[int, int]:
        """(requests, target 5xx responses) of the target group over the last `metrics_window_s` seconds."""
        return self.metric_sum("RequestCount", tg_arn), self.metric_sum("HTTPCode_Target_5XX_Count", tg_arn)

    def weights_by_arn(self) -> dict[str, int]:
        """Target group ARN -> weight in the listener's default forward (a plain forward counts 100)."""
        listener = self.elb.describe_listeners(ListenerArns=[self.listener_arn])["Listeners"][0]
        out: dict[str, int] = {}
        for action in listener["DefaultActions"]:
            for tg in (action.get("ForwardConfig") or {}).get("TargetGroups", []):
                out[tg["TargetGroupArn"]] = int(tg.get("Weight", 1))
            if action.get("TargetGroupArn") and not action.get("ForwardConfig"):
                out[action["TargetGroupArn"]] = 100
        return out

    def set_weights(self, weights: Mapping[str, int]) -> None:
        """Point the listener's weighted forward at the revisions' target groups (revision -> percent).

        Raises ListenerTargetError when a revision given traffic has no target group."""
        groups = []
        for revision, pct in sorted(weights.items()):
            arn = self.tg_arn(revision)
            if arn is None:
                if pct > 0:
                    raise ListenerTargetError(f"revision {revision} has no target group")
                continue
            groups.append({"TargetGroupArn": arn, "Weight": int(pct)})
        # groups this deploy does not mention are left out of the forward: the listener is ours
        self.elb.modify_listener(
            ListenerArn=self.listener_arn,
            DefaultActions=[
                {
                    "Type": "forward",
                    "ForwardConfig": {"TargetGroups": groups, "TargetGroupStickinessConfig": {"Enabled": False}},
                }
            ],
        )
        log.info("listener %s weights now %s", self.listener_arn.rsplit("/", 1)[-1], dict(weights))

    def detach(self, tg_arn: str) -> None:
        """Take the target group out of the listener's forward (the others keep their weights)."""
        current = self.weights_by_arn()
        if tg_arn not in current:
            return
        rest = [{"TargetGroupArn": a, "Weight": w} for a, w in current.items() if a != tg_arn]
        if rest:
            self.elb.modify_listener(
                ListenerArn=self.listener_arn,
                DefaultActions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": rest}}],
            )

    def delete_target_group(self, tg_arn: str) -> None:
        """Delete the target group unless the listener still forwards to it (then it is kept)."""
        if tg_arn not in self.weights_by_arn():
            self.elb.delete_target_group(TargetGroupArn=tg_arn)


class ListenerTraffic:
    """Backend.set_weights for a backend whose revisions sit behind a WeightedListener (`self.listener`): the
    ECS and EC2 targets share it."""

    listener: WeightedListener

    def set_weights(self, weights: Mapping[str, int], standby: Collection[str] = ()) -> None:
        """Backend.set_weights: the listener's weighted forward over the revisions' target groups.

        `standby` is ignored: an ALB does not retry a failed request on another target group. Raises
        ListenerTargetError when a revision given traffic has no target group."""
        self.listener.set_weights(weights)
