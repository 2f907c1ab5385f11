"""The EC2 target: an Auto Scaling group per revision, launched from a launch template version, behind the
same weighted ALB listener as the ECS target.

Per revision, `start_revision` creates:
- a version of the app's launch template (`<app>`): the baked AMI (flightdeck.deploy.ami, pinned per
  version so a rollback boots what ran before), IMDSv2, the instance profile, and user data that pulls the
  revision's image *by digest* from ECR and runs it with the serving ports published (`user_data`); the
  version's description is the revision, and the user data carries the RevisionSpec (what `spec` reads);
- a target group `fd-<revision>` (health check on the image's health port, /readyz) attached to
- an Auto Scaling group `<app>-<revision>` on that version: ELB health checks with a grace period (an
  instance the ALB reports unhealthy is replaced), desired = replicas, instances tagged with the lineage,
  and a target-tracking scaling policy (CPU, or ALB requests per target) from the revision's ScalingSpec.
Blue/green and canary then move the listener's weights between the groups' target groups, as on ECS.
Rolling (`prepare_roll`/`roll_back`) keeps the live group and refreshes its instances to a new launch
template version (flightdeck.deploy.instance_refresh).

The load balancer, subnets and VPC are found by name (the ALB `flightdeck` and its first listener; its
subnets and VPC; the security group `flightdeck-serving` when there is one) unless FLIGHTDECK_EC2_* says
otherwise (`Ec2Config.from_env`). Clients come from the Amazon provider's hooks: EC2Hook for ec2,
AwsBaseHook for autoscaling, elbv2, CloudWatch and SSM.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from flightdeck.deploy import instance_refresh as refresh
from flightdeck.deploy.alb import TAG_APP, TAG_REV, HealthCheck, ListenerTraffic, WeightedListener
from flightdeck.deploy.ami import AMI_PARAMETER, current_ami, ecr_registry
from flightdeck.deploy.backend import (
    DEFAULT_ROLL_PLAN,
    InstanceRefreshSpec,
    RevisionSpec,
    RollPlan,
    ScalingMetric,
    ScalingSpec,
    TargetHealth,
)
from flightdeck.errors import FlightdeckError

log = logging.getLogger(__name__)

SPEC_MARKER = "# flightdeck-spec: "  # the user data line that carries the RevisionSpec as JSON
LINEAGE_TAGS = ("model_name", "model_version", "digest", "run_id")  # tagged as org.flightdeck.<name>
DELETING = ("Delete in progress",)  # Status of a group being deleted (DescribeAutoScalingGroups)


class Ec2TargetError(FlightdeckError, RuntimeError):
    """The EC2 target cannot do what was asked: no load balancer or listener, or a roll of a group it
    does not run."""


@dataclass(frozen=True)
class Ec2Config:
    """Where and how the EC2 target runs revisions. Empty network fields are found from the load balancer."""

    load_balancer: str = "flightdeck"  # the ALB (by name) whose listener carries the traffic
    listener_arn: str = ""  # "" = the load balancer's first listener
    vpc_id: str = ""  # "" = the load balancer's VPC
    subnets: tuple[str, ...] = ()  # () = the load balancer's subnets
    security_groups: tuple[str, ...] = ()  # () = the group named `security_group_name`, if any
    security_group_name: str = "flightdeck-serving"
    app: str = "flightdeck-serving"  # launch template name and group/target-group prefix
    instance_type: str = "t3.small"
    instance_profile: str = "flightdeck-serving"  # IAM instance profile name (ECR pull, CloudWatch Logs)
    ami_id: str = ""  # "" = the AMI the bake recorded in SSM `ami_parameter`
    ami_parameter: str = AMI_PARAMETER
    container_port: int = 8080
    health_port: int = 8081  # the image's SERVING_HEALTH_PORT, published on the instance
    health_check_grace_s: int = 120  # Auto Scaling ignores ELB health this long after launch (boot + pull)
    instance_warmup_s: int = 60  # DefaultInstanceWarmup: new instances' metrics join the group's after this
    health_interval_s: int = 10
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2
    metrics_window_s: int = 300
    log_group: str = "/flightdeck/serving"  # Docker's awslogs driver on the instances
    region: str = "us-east-1"
    refresh_poll_s: int = 15  # seconds between polls while roll_back waits for an instance refresh
    refresh_max_attempts: int = 80
    api_keys_secret_arn: str = ""  # Secrets Manager secret of model-endpoint API keys; "" = off
    extra_tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Ec2Config:
        """The target's settings from FLIGHTDECK_EC2_* (LOAD_BALANCER, LISTENER_ARN, VPC_ID, SUBNETS,
        SECURITY_GROUPS, APP, INSTANCE_TYPE, INSTANCE_PROFILE, AMI_ID) and AWS_DEFAULT_REGION; unset ones
        keep the class's defaults."""
        from flightdeck import settings as settings_mod

        e = os.environ.get
        d = cls()

        def ids(name: str) -> tuple[str, ...]:
            return tuple(filter(None, e(name, "").split(",")))

        return cls(
            load_balancer=e("FLIGHTDECK_EC2_LOAD_BALANCER", d.load_balancer),
            listener_arn=e("FLIGHTDECK_EC2_LISTENER_ARN", ""),
            vpc_id=e("FLIGHTDECK_EC2_VPC_ID", ""),
            subnets=ids("FLIGHTDECK_EC2_SUBNETS"),
            security_groups=ids("FLIGHTDECK_EC2_SECURITY_GROUPS"),
            app=e("FLIGHTDECK_EC2_APP", d.app),
            instance_type=e("FLIGHTDECK_EC2_INSTANCE_TYPE", d.instance_type),
            instance_profile=e("FLIGHTDECK_EC2_INSTANCE_PROFILE", d.instance_profile),
            ami_id=e("FLIGHTDECK_EC2_AMI_ID", ""),
            region=e("AWS_DEFAULT_REGION", d.region),
            api_keys_secret_arn=settings_mod.load().serving_api_keys_secret_arn,
        )


def user_data(spec: RevisionSpec, cfg: Ec2Config) -> str:
    """The instance's cloud-init user data (bash text; the launch template gets it base64-encoded).

    Logs in to the image's ECR registry with the instance profile, pulls the image by digest, and runs it
    (restart always) with the serving and health ports published, the revision's environment from a file
    written by a quoted heredoc (no expansion; DeployParams.validate refuses newlines in the environment),
    API keys from Secrets Manager when configured (the script stops before `docker run` when they cannot
    be read: the endpoint never comes up without its keys), and logs to CloudWatch Logs (`log_group`,
    stream `<revision>/<instance id>`). The SPEC_MARKER line carries the RevisionSpec as JSON.
    """
    registry, region = ecr_registry(spec.image)
    env_lines = [f"{k}={v}" for k, v in sorted(spec.env.items())]
    lines = [
        "#!/bin/bash",
        f"# flightdeck revision {spec.revision}: {spec.model_name} v{spec.model_version}, image pinned by digest",
        SPEC_MARKER + json.dumps(spec.to_dict(), sort_keys=True),
        "set -Eeuo pipefail",
        'retry() { for i in 1 2 3 4 5; do "$@" && return 0; sleep $((i * 5)); done; return 1; }',
        'token=$(curl -sX PUT http://169.254.169.254/latest/api/token -H "X-aws-ec2-metadata-token-ttl-seconds: 60")',
        'instance=$(curl -s -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/instance-id)',
        "install -d -m 0700 /etc/flightdeck",
        "cat > /etc/flightdeck/serving.env <<'FLIGHTDECK_ENV'",
        *env_lines,
        "FLIGHTDECK_ENV",
    ]
    if cfg.api_keys_secret_arn:
        secret = shlex.quote(cfg.api_keys_secret_arn)
        arn_parts = cfg.api_keys_secret_arn.split(":")  # arn:aws:secretsmanager:<region>:<account>:secret:<name>
        secret_region = shlex.quote(arn_parts[3] if len(arn_parts) > 3 and arn_parts[3] else cfg.region)
        lines += [  # an assignment fails the script under `set -e` (an `echo "$(...)"` would not)
            f"keys=$(aws secretsmanager get-secret-value --secret-id {secret} --query SecretString --output text"
            f" --region {secret_region})",
            '[ -n "$keys" ] || { echo "flightdeck: the API keys secret is empty: not serving" >&2; exit 1; }',
            """echo "SERVING_API_KEYS=$(printf %s "$keys" | tr -s '\\n' ',')" >> /etc/flightdeck/serving.env""",
        ]
    if registry:
        lines.append(
            f"aws ecr get-login-password --region {shlex.quote(region)}"
            f" | docker login --username AWS --password-stdin {shlex.quote(registry)}"
        )
    image = shlex.quote(spec.image)
    lines += [
        f"retry docker pull {image}",
        "docker rm -f serving 2>/dev/null || true",
        "docker run -d --name serving --restart always --env-file /etc/flightdeck/serving.env"
        f" -p {cfg.container_port}:{cfg.container_port} -p {cfg.health_port}:{cfg.health_port}"
        f" --log-driver awslogs --log-opt awslogs-group={shlex.quote(cfg.log_group)}"
        f" --log-opt awslogs-region={shlex.quote(cfg.region)} --log-opt awslogs-create-group=true"
        f' --log-opt awslogs-stream="{spec.revision}/$instance" {image}',
    ]
    return "\n".join(lines) + "\n"


def spec_from_user_data(text: str) -> RevisionSpec | None:
    """The RevisionSpec a `user_data` script carries (its SPEC_MARKER line), or None without one."""
    for line in text.splitlines():
        if line.startswith(SPEC_MARKER):
            return RevisionSpec.from_dict(json.loads(line[len(SPEC_MARKER) :]))
    return None


def _version_spec(version: Mapping[str, Any]) -> RevisionSpec | None:
    """The RevisionSpec a launch template version's user data carries (a DescribeLaunchTemplateVersions item)."""
    encoded = version.get("LaunchTemplateData", {}).get("UserData", "")
    return spec_from_user_data(base64.b64decode(encoded).decode()) if encoded else None


class Ec2Backend(ListenerTraffic):
    """Backend over EC2 Auto Scaling groups, ALB target groups and a weighted listener."""

    rolls_in_place = True  # strategy rolling: an instance refresh of the live group

    def __init__(self, cfg: Ec2Config, clients: Callable[[str], Any], name: str = "ec2") -> None:
        self.name = name
        self.ec2, self.elb = clients("ec2"), clients("elbv2")
        self.autoscaling, self.cw, self.ssm = clients("autoscaling"), clients("cloudwatch"), clients("ssm")
        self.cfg = self._discover(cfg)
        self.listener = WeightedListener(self.elb, self.cw, self.cfg.listener_arn, self.cfg.metrics_window_s)

    @classmethod
    def from_settings(cls, aws_conn_id: str | None = "aws_default", cfg: Ec2Config | None = None) -> Ec2Backend:
        """The backend on the provider's hooks (EC2Hook, AwsBaseHook) for `aws_conn_id`, configured from the
        environment (Ec2Config.from_env) unless `cfg` is given. Raises Ec2TargetError when the load
        balancer or its listener is missing."""
        from flightdeck.deploy.aws import client as hook_client

        def clients(service: str) -> Any:
            if service == "ec2":
                from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

                return EC2Hook(aws_conn_id=aws_conn_id, api_type="client_type").conn
            if service == "autoscaling":
                return refresh.AutoScalingHook(aws_conn_id=aws_conn_id).conn
            return hook_client(service, aws_conn_id)

        return cls(cfg or Ec2Config.from_env(), clients)

    def _discover(self, cfg: Ec2Config) -> Ec2Config:
        """Fill the listener, VPC, subnets and security groups the config leaves empty from the load
        balancer `cfg.load_balancer` (and the security group named `cfg.security_group_name`)."""
        if cfg.listener_arn and cfg.vpc_id and cfg.subnets and cfg.security_groups:
            return cfg
        if cfg.listener_arn and cfg.vpc_id and cfg.subnets:  # only the security group left to find
            lb: dict[str, Any] = {"VpcId": cfg.vpc_id}
        else:
            try:
                lb = self.elb.describe_load_balancers(Names=[cfg.load_balancer])["LoadBalancers"][0]
            except self.elb.exceptions.LoadBalancerNotFoundException:
                raise Ec2TargetError(
                    f"no load balancer named {cfg.load_balancer!r}: create it (RUNBOOK: Deploy on EC2) or set "
                    "FLIGHTDECK_EC2_LOAD_BALANCER / FLIGHTDECK_EC2_LISTENER_ARN"
                ) from None
        listener = cfg.listener_arn
        if not listener:
            found = self.elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
            if not found:
                raise Ec2TargetError(f"load balancer {cfg.load_balancer!r} has no listener to forward from")
            listener = found[0]["ListenerArn"]
        vpc = cfg.vpc_id or lb["VpcId"]
        subnets = cfg.subnets or tuple(z["SubnetId"] for z in lb.get("AvailabilityZones", []) if z.get("SubnetId"))
        groups = cfg.security_groups
        if not groups:
            named = self.ec2.describe_security_groups(
                Filters=[
                    {"Name": "group-name", "Values": [cfg.security_group_name]},
                    {"Name": "vpc-id", "Values": [vpc]},
                ]
            )["SecurityGroups"]
            groups = tuple(g["GroupId"] for g in named)
        return replace(cfg, listener_arn=listener, vpc_id=vpc, subnets=subnets, security_groups=groups)

    # -- naming ----------------------------------------------------------------------------------
    def group_name(self, revision: str) -> str:
        """The revision's Auto Scaling group: `<app>-<revision>`."""
        return f"{self.cfg.app}-{revision}"

    def _group(self, revision: str) -> dict[str, Any] | None:
        return self._group_by_name(self.group_name(revision))

    def _group_by_name(self, name: str) -> dict[str, Any] | None:
        """The group of that name unless it is being deleted, or None."""
        found = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        return found[0] if found and found[0].get("Status") not in DELETING else None

    # -- launch template -------------------------------------------------------------------------
    def _template_id(self) -> str | None:
        try:
            found = self.ec2.describe_launch_templates(LaunchTemplateNames=[self.cfg.app])["LaunchTemplates"]
        except self.ec2.exceptions.ClientError as e:
            if "NotFound" in e.response["Error"]["Code"]:
                return None
            raise
        return found[0]["LaunchTemplateId"] if found else None

    def _versions(self, revision: str) -> list[dict[str, Any]]:
        """The app template's versions made for `revision`, newest first."""
        template = self._template_id()
        if template is None:
            return []
        pages = self.ec2.get_paginator("describe_launch_template_versions").paginate(LaunchTemplateId=template)
        mine = [v for page in pages for v in page["LaunchTemplateVersions"] if v.get("VersionDescription") == revision]
        return sorted(mine, key=lambda v: int(v["VersionNumber"]), reverse=True)

    def _ami(self) -> str:
        return self.cfg.ami_id or current_ami(self.ssm, self.cfg.ami_parameter)

    def _template_data(self, spec: RevisionSpec) -> dict[str, Any]:
        c = self.cfg
        tags = [{"Key": TAG_APP, "Value": c.app}, {"Key": TAG_REV, "Value": spec.revision}]
        tags += [{"Key": f"org.flightdeck.{k}", "Value": str(getattr(spec, k))[:256]} for k in LINEAGE_TAGS]
        tags += [{"Key": k, "Value": v} for k, v in sorted(c.extra_tags.items())]
        data: dict[str, Any] = {
            "ImageId": self._ami(),
            "InstanceType": c.instance_type,
            "UserData": base64.b64encode(user_data(spec, c).encode()).decode(),
            "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if c.instance_profile:
            data["IamInstanceProfile"] = {"Name": c.instance_profile}
        if c.security_groups:
            data["SecurityGroupIds"] = list(c.security_groups)
        return data

    def launch_template_version(self, spec: RevisionSpec, *, new: bool = False) -> tuple[str, str]:
        """(launch template id, version) that runs `spec`: the newest version made for the revision that
        carries exactly this spec (a restarted revision boots what it ran, not what a later roll of the same
        revision put in a newer version), or a new one (always with `new`, as a roll needs). Creates the
        app's template on first use. Raises ami.AmiNotBaked when no AMI is configured or baked."""
        for v in [] if new else self._versions(spec.revision):
            if _version_spec(v) == spec:
                return v["LaunchTemplateId"], str(v["VersionNumber"])
        data = self._template_data(spec)
        template = self._template_id()
        if template is None:
            made = self.ec2.create_launch_template(
                LaunchTemplateName=self.cfg.app,
                VersionDescription=spec.revision,
                LaunchTemplateData=data,
                TagSpecifications=[
                    {"ResourceType": "launch-template", "Tags": [{"Key": TAG_APP, "Value": self.cfg.app}]}
                ],
            )["LaunchTemplate"]
            template, version = made["LaunchTemplateId"], str(made["LatestVersionNumber"])
        else:
            made = self.ec2.create_launch_template_version(
                LaunchTemplateId=template, VersionDescription=spec.revision, LaunchTemplateData=data
            )["LaunchTemplateVersion"]
            version = str(made["VersionNumber"])
        log.info("launch template %s version %s runs %s (AMI %s)", self.cfg.app, version, spec.image, data["ImageId"])
        return template, version

    # -- Backend interface -------------------------------------------------------------------------
    def start_revision(self, spec: RevisionSpec) -> None:
        """Backend.start_revision: a launch template version, a target group and an Auto Scaling group of
        `spec.replicas` instances attached to it at 0 % of the listener, with a target-tracking policy;
        an existing group is adopted. Raises ami.AmiNotBaked without an AMI, botocore's ClientError when
        AWS refuses."""
        c = self.cfg
        name = self.group_name(spec.revision)
        if (group := self._group(spec.revision)) is not None:
            log.info("Auto Scaling group %s exists: adopting it", name)
            tg_arn = self.listener.tg_arn(spec.revision) or (group.get("TargetGroupARNs") or [""])[0]
            self._put_scaling_policy(name, spec.scaling or ScalingSpec(), tg_arn)  # an upsert: a retry repairs it
            return
        template, version = self.launch_template_version(spec)
        tg_arn = self.listener.create_target_group(
            spec.revision,
            app=c.app,
            vpc_id=c.vpc_id,
            port=c.container_port,
            target_type="instance",
            check=HealthCheck(
                port=str(c.health_port),
                interval_s=c.health_interval_s,
                healthy_threshold=c.healthy_threshold,
                unhealthy_threshold=c.unhealthy_threshold,
            ),
        )
        scaling = spec.scaling or ScalingSpec()
        # as on ECS: the replicas asked for are the floor autoscaling keeps, the max never below them
        low, high = max(scaling.min_capacity, spec.replicas), max(scaling.max_capacity, spec.replicas)
        tags = {
            TAG_APP: c.app,
            TAG_REV: spec.revision,
            **{f"org.flightdeck.{k}": str(getattr(spec, k)) for k in LINEAGE_TAGS},
        }
        self.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateId": template, "Version": version},
            MinSize=low,
            MaxSize=high,
            DesiredCapacity=low,
            VPCZoneIdentifier=",".join(c.subnets),
            TargetGroupARNs=[tg_arn],
            HealthCheckType="ELB",
            HealthCheckGracePeriod=c.health_check_grace_s,
            DefaultInstanceWarmup=c.instance_warmup_s,
            Tags=[
                {
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                    "Key": k,
                    "Value": v[:256],
                    "PropagateAtLaunch": True,
                }
                for k, v in sorted(tags.items())
            ],
        )
        self._put_scaling_policy(name, scaling, tg_arn)
        log.info(
            "created Auto Scaling group %s (launch template %s v%s) behind %s, %d..%d on %s",
            name,
            template,
            version,
            tg_arn,
            low,
            high,
            ScalingMetric(scaling.metric).value,
        )

    def _put_scaling_policy(self, group: str, scaling: ScalingSpec, tg_arn: str) -> None:
        """Target tracking on ASGAverageCPUUtilization (percent) or ALBRequestCountPerTarget (requests per
        target per minute, labelled with the load balancer and the group's target group)."""
        if scaling.metric == ScalingMetric.REQUEST_COUNT_PER_TARGET:
            metric = {
                "PredefinedMetricType": "ALBRequestCountPerTarget",
                "ResourceLabel": self.listener.resource_label(tg_arn),
            }
        else:
            metric = {"PredefinedMetricType": "ASGAverageCPUUtilization"}
        self.autoscaling.put_scaling_policy(
            AutoScalingGroupName=group,
            PolicyName=f"{group}-target-tracking",
            PolicyType="TargetTrackingScaling",
            TargetTrackingConfiguration={
                "PredefinedMetricSpecification": metric,
                "TargetValue": float(scaling.target_value),
            },
        )

    def target_health(self, revision: str) -> TargetHealth:
        """Backend.target_health: the target group's health states, the group's desired capacity, and the
        ALB's RequestCount and HTTPCode_Target_5XX_Count for the group over the last `metrics_window_s` s."""
        group = self._group(revision)
        desired = int(group["DesiredCapacity"]) if group else 0
        return self.listener.target_health(revision, desired)

    def stop_revision(self, revision: str) -> None:
        """Backend.stop_revision: out of the listener first (no new request reaches it), the target group
        detached from the group, the group deleted with its instances, the target group deleted; idempotent.
        The launch template versions stay: `spec` and a later rollback read them."""
        tg_arn = self.listener.tg_arn(revision)
        if tg_arn is not None:
            self.listener.detach(tg_arn)
        name = self.group_name(revision)
        if self._group_by_name(name) is not None:
            if tg_arn is not None:
                self.autoscaling.detach_load_balancer_target_groups(AutoScalingGroupName=name, TargetGroupARNs=[tg_arn])
            self.autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
            log.info("deleted Auto Scaling group %s (its instances terminate)", name)
        if tg_arn is not None:
            self.listener.delete_target_group(tg_arn)

    def weights(self) -> dict[str, int]:
        """Backend.weights: the listener weight of each of the app's groups (0 without a target group)."""
        by_arn = self.listener.weights_by_arn()
        out: dict[str, int] = {}
        pages = self.autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
            Filters=[{"Name": f"tag:{TAG_APP}", "Values": [self.cfg.app]}]
        )
        for page in pages:
            for group in page["AutoScalingGroups"]:
                if group.get("Status") in DELETING:
                    continue
                revision = next((t["Value"] for t in group.get("Tags", []) if t["Key"] == TAG_REV), "")
                if not revision:
                    continue
                tg = self.listener.tg_arn(revision)
                out[revision] = by_arn.get(tg, 0) if tg else 0
        return dict(sorted(out.items()))

    def spec(self, revision: str) -> RevisionSpec | None:
        """Backend.spec: the RevisionSpec in the user data of the group's current launch template version
        (after an instance refresh, the version it rolled to), else of the revision's newest version."""
        group = self._group(revision)
        lt = (group or {}).get("LaunchTemplate") or {}
        if lt.get("LaunchTemplateId") and lt.get("Version"):
            found = self.ec2.describe_launch_template_versions(
                LaunchTemplateId=lt["LaunchTemplateId"], Versions=[str(lt["Version"])]
            )["LaunchTemplateVersions"]
        else:
            found = self._versions(revision)[:1]
        spec = _version_spec(found[0]) if found else None
        return replace(spec, revision=revision) if spec else None

    # -- rolling: an instance refresh of the live group ---------------------------------------------
    def prepare_roll(self, spec: RevisionSpec, plan: RollPlan = DEFAULT_ROLL_PLAN) -> InstanceRefreshSpec:
        """A new launch template version of the live group `spec.revision` runs `spec`; returns the instance
        refresh to start (Ec2InstanceRefreshOperator) paced by `plan`. Raises Ec2TargetError when the
        group does not exist."""
        group = self._group(spec.revision)
        if group is None:
            raise Ec2TargetError(f"no live Auto Scaling group {self.group_name(spec.revision)} to refresh")
        current = group.get("LaunchTemplate") or {}
        template, version = self.launch_template_version(spec, new=True)
        return InstanceRefreshSpec(
            group=group["AutoScalingGroupName"],
            launch_template_id=template,
            previous_version=str(current.get("Version", "")),
            version=version,
            min_healthy_percentage=int(plan.min_healthy_percentage),
            checkpoint_percentages=[int(p) for p in plan.checkpoint_percentages],
            checkpoint_delay_s=int(plan.checkpoint_delay_s),
        )

    def roll_back(self, roll: Mapping[str, Any]) -> None:
        """Put the group back on `roll["previous_version"]` and wait until its instances run it (idempotent).

        A refresh still running is rolled back by Auto Scaling (RollbackInstanceRefresh); one that already
        rolled back is left; one that succeeded (the bake failed later), failed or was cancelled (some
        instances may be new) is followed by a refresh to the previous version that replaces only the
        instances not on it (SkipMatching). Raises AirflowException when that rollback or refresh ends
        otherwise, botocore's ClientError when AWS refuses.
        """
        spec = InstanceRefreshSpec(**roll)  # type: ignore[typeddict-item]
        group, previous = spec["group"], spec["previous_version"]
        poll = {"delay_s": self.cfg.refresh_poll_s, "max_attempts": self.cfg.refresh_max_attempts}
        last = refresh.latest(self.autoscaling, group)
        if last is None:
            log.info("group %s was never refreshed: nothing to roll back", group)
            return
        status = refresh.RefreshStatus(last["Status"])
        if status == refresh.RefreshStatus.SUCCESSFUL and refresh.desired_version(last) == previous:
            log.info("group %s is already back on launch template version %s", group, previous)
            return
        if status in (refresh.RefreshStatus.PENDING, refresh.RefreshStatus.IN_PROGRESS, refresh.RefreshStatus.BAKING):
            if refresh.desired_version(last) == previous:  # our own earlier roll back, still running
                refresh.wait_for(self.autoscaling, refresh.COMPLETE, group, last["InstanceRefreshId"], **poll)
                return
            self.autoscaling.rollback_instance_refresh(AutoScalingGroupName=group)
            log.warning(
                "instance refresh %s of %s: rolling back to version %s", last["InstanceRefreshId"], group, previous
            )
            status = refresh.RefreshStatus.ROLLBACK_IN_PROGRESS
        if status == refresh.RefreshStatus.CANCELLING:  # neither a rollback nor a new refresh is accepted yet
            refresh.wait_for(self.autoscaling, refresh.CANCELLED, group, last["InstanceRefreshId"], **poll)
            status = refresh.RefreshStatus.CANCELLED
        if status == refresh.RefreshStatus.ROLLBACK_IN_PROGRESS:
            refresh.wait_for(self.autoscaling, refresh.ROLLED_BACK, group, last["InstanceRefreshId"], **poll)
            return
        if status == refresh.RefreshStatus.ROLLBACK_SUCCESSFUL:
            log.info(
                "instance refresh %s of %s was already rolled back by Auto Scaling", last["InstanceRefreshId"], group
            )
            return
        back = InstanceRefreshSpec(**{**spec, "version": previous, "checkpoint_percentages": [100]})
        back_id = refresh.start_refresh(self.autoscaling, back, auto_rollback=False)
        log.warning("group %s refreshing back to launch template version %s (%s)", group, previous, back_id)
        refresh.wait_for(self.autoscaling, refresh.COMPLETE, group, back_id, **poll)
