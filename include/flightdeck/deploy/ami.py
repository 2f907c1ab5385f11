"""The serving AMI of the EC2 target: baked once with Docker and the serving image's base layers.

The bake (dags/bake_ami.py wires these steps; `Bake` is what its tasks call):

1. `launch_builder` starts one builder instance from Amazon Linux 2023 (the public SSM parameter
   BASE_AMI_PARAMETER, or an explicit `BakeSpec.base_ami`) with `bake_user_data` as its cloud-init
   user data: install and enable Docker, log in to ECR and pull the serving image's base (so its
   layers are cached in the AMI), clean up, `shutdown -h now`. The instance stops on shutdown
   (InstanceInitiatedShutdownBehavior=stop), so "stopped" means "the script finished". It is
   tagged with the bake's run id: a retried launch finds that builder instead of starting another.
2. The DAG waits for the builder to be stopped (the provider's EC2InstanceStateSensor).
3. `create_image` images the stopped builder (a consistent file system, no reboot) and waits for
   the AMI to be available (EC2's built-in `image_available` waiter, through the provider's hook).
4. `record_ami` writes the AMI id to the SSM parameter AMI_PARAMETER; the EC2 backend reads it with
   `current_ami` (AmiNotBaked until a bake has run).
5. `terminate_builder` / `terminate_builders` (the DAG runs it whatever happened): idempotent.

AWS calls go through two boto3 clients built by the Amazon provider's hooks (`clients`), always in
variables named `ec2` and `ssm` (tests/unit/test_aws_policy.py can scan them against the IAM
policy). Nothing here imports Airflow at module import: the hooks are imported inside functions.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from flightdeck.errors import FlightdeckError

log = logging.getLogger(__name__)

AMI_PARAMETER = "/flightdeck/ami/serving"
BASE_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"

ROLE_TAG, BUILDER_ROLE = "org.flightdeck.role", "ami-builder"
RUN_TAG = "org.flightdeck.bake-run"
BASE_IMAGE_TAG = "org.flightdeck.base-image"
BASE_AMI_TAG = "org.flightdeck.base-ami"
BAKED_AT_TAG = "org.flightdeck.baked-at"
BUILDER_TAG = "org.flightdeck.builder"
# states in which a builder still exists (and may still become the image)
LIVE_STATES = ("pending", "running", "stopping", "stopped")
# an ECR registry host: <account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]
ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
# image creation of an 8 GiB root volume takes minutes: poll every 15 s for up to 30 minutes
IMAGE_WAITER_CONFIG: Mapping[str, int] = {"Delay": 15, "MaxAttempts": 120}
# a just-launched instance can be missing from DescribeInstances for a few seconds
EXISTS_WAITER_CONFIG: Mapping[str, int] = {"Delay": 2, "MaxAttempts": 30}


class AmiNotBaked(FlightdeckError, LookupError):
    """No serving AMI recorded yet: the SSM parameter AMI_PARAMETER does not exist."""


class BakeFailed(FlightdeckError):
    """A bake step cannot go on: the builder is not stopped, the image did not become available, the
    base AMI cannot be resolved."""


class BakeSpecError(FlightdeckError, ValueError):
    """A BakeSpec that cannot be launched (no base AMI id to start the builder from)."""


@dataclass(frozen=True)
class BakeSpec:
    """What to bake and where.

    base_ami: the builder's AMI id; "" = the Amazon Linux 2023 image named by BASE_AMI_PARAMETER (SSM).
    instance_type: the builder's EC2 instance type. subnet_id / security_group_ids: its network
    ("" / () = the account's default VPC). instance_profile: the IAM instance profile *name* the builder
    runs as (it needs ECR pull rights for `base_image`; "" = none). base_image: the image reference whose
    layers the AMI caches, e.g. "123456789012.dkr.ecr.us-east-1.amazonaws.com/flightdeck-serving:base"
    ("" = none). name_prefix: the AMI is named "<name_prefix>-<UTC stamp>". region: "" = the connection's.
    """

    base_ami: str = ""
    instance_type: str = "t3.small"
    subnet_id: str = ""
    security_group_ids: tuple[str, ...] = field(default_factory=tuple)
    instance_profile: str = "flightdeck-serving"
    base_image: str = ""
    name_prefix: str = "flightdeck-serving"
    region: str = ""

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> BakeSpec:
        """The spec from the bake_ami DAG's Params (strings; `security_group_ids` comma-separated).

        Missing keys keep the defaults above; other keys (aws_conn_id, ...) are ignored.
        """
        defaults = cls()

        def text(name: str) -> str:
            value = params.get(name)
            return getattr(defaults, name) if value is None else str(value).strip()

        groups = params.get("security_group_ids") or ""
        if isinstance(groups, str):
            groups = groups.split(",")
        return cls(
            base_ami=text("base_ami"),
            instance_type=text("instance_type") or defaults.instance_type,
            subnet_id=text("subnet_id"),
            security_group_ids=tuple(g.strip() for g in groups if g and g.strip()),
            instance_profile=text("instance_profile"),
            base_image=text("base_image"),
            name_prefix=text("name_prefix") or defaults.name_prefix,
            region=text("region"),
        )

    @property
    def ecr_registry(self) -> str:
        """The ECR registry host of `base_image` ("<account>.dkr.ecr.<region>.amazonaws.com"), or "" when
        there is no base image or it lives elsewhere (Docker Hub, ...: pulled without a login)."""
        return ecr_registry(self.base_image)[0]

    @property
    def ecr_region(self) -> str:
        """The region of `ecr_registry` (from its host name), or "" without one."""
        return ecr_registry(self.base_image)[1]


def ecr_registry(image: str) -> tuple[str, str]:
    """(registry host, region) of an ECR image reference ("<account>.dkr.ecr.<region>.amazonaws.com/repo..."),
    or ("", "") for an image elsewhere (Docker Hub, a private registry: pulled without an ECR login)."""
    host = image.split("/", 1)[0] if "/" in image else ""
    m = ECR_HOST.match(host)
    return (host, m.group(1)) if m else ("", "")


class Clients(NamedTuple):
    """The boto3 clients of a bake: `ec2` and `ssm`."""

    ec2: Any
    ssm: Any


def clients(aws_conn_id: str | None = "aws_default", region_name: str | None = None) -> Clients:
    """(ec2, ssm) boto3 clients built by the Amazon provider's EC2Hook and SsmHook for the Airflow
    connection `aws_conn_id` (credentials, endpoint, region; `region_name` overrides the region)."""
    from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
    from airflow.providers.amazon.aws.hooks.ssm import SsmHook

    region = region_name or None
    return Clients(
        ec2=EC2Hook(aws_conn_id=aws_conn_id, api_type="client_type", region_name=region).conn,
        ssm=SsmHook(aws_conn_id=aws_conn_id, region_name=region).conn,
    )


def _waiter(ec2: Any, name: str) -> Any:
    """EC2's built-in boto waiter `name`, through the provider's EC2Hook.get_waiter on our client."""
    from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

    return EC2Hook(aws_conn_id=None, api_type="client_type").get_waiter(name, client=ec2)


def bake_user_data(spec: BakeSpec) -> str:
    """The builder's cloud-init user data: a bash script (text, not base64: boto3 encodes it).

    Installs Docker (dnf, Amazon Linux 2023) and enables it; with `spec.base_image`, logs in to its ECR
    registry (`aws ecr get-login-password | docker login --password-stdin`, with the builder's instance
    profile) and pulls it, so its layers are in the AMI, then logs out (no credentials in the image);
    cleans caches and cloud-init's state (instances of the AMI run their own user data); and ends with
    `shutdown -h now`. On any failure it stops short of the shutdown: the builder stays running, the
    DAG's wait times out and the builder is terminated, so a half-built machine is never imaged.
    """
    lines = [
        "#!/bin/bash",
        "# flightdeck AMI bake: Docker + the serving image's base layers, then power off to be imaged.",
        "set -Eeuxo pipefail",
        "trap 'echo \"flightdeck-bake: FAILED at line $LINENO; not shutting down\" >&2' ERR",
        "",
        'retry() { for i in 1 2 3 4 5; do "$@" && return 0; sleep $((i * 5)); done; return 1; }',
        "",
        "retry dnf install -y docker",
        "systemctl enable --now docker",
        "usermod -aG docker ec2-user",
        "docker version",
    ]
    if spec.base_image:
        image = shlex.quote(spec.base_image)
        lines.append("")
        if spec.ecr_registry:
            registry, region = shlex.quote(spec.ecr_registry), shlex.quote(spec.ecr_region)
            lines += [
                f"aws ecr get-login-password --region {region}"
                f" | docker login --username AWS --password-stdin {registry}",
                f"retry docker pull {image}",
                f"docker logout {registry}",
            ]
        else:
            lines.append(f"retry docker pull {image}")
        lines.append("docker image ls")
    lines += [
        "",
        "# nothing of the builder's run in the image: package caches, registry credentials, cloud-init state",
        "dnf clean all",
        "rm -rf /var/cache/dnf /root/.docker",
        "cloud-init clean --logs || true",
        "sync",
        "echo 'flightdeck-bake: done; shutting down to be imaged'",
        "shutdown -h now",
    ]
    return "\n".join(lines) + "\n"


def resolve_base_ami(ssm: Any, spec: BakeSpec) -> str:
    """The AMI id the builder starts from: `spec.base_ami` when set, else BASE_AMI_PARAMETER's value
    (Amazon Linux 2023, x86_64, the latest kernel). Raises BakeFailed when the parameter is missing."""
    if spec.base_ami:
        return spec.base_ami
    try:
        return ssm.get_parameter(Name=BASE_AMI_PARAMETER)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        raise BakeFailed(
            f"the base AMI parameter {BASE_AMI_PARAMETER} does not exist in this region: set base_ami"
        ) from None


def find_builders(ec2: Any, run_id: str) -> list[str]:
    """Instance ids of the live builders (pending, running, stopping, stopped) tagged with `run_id`,
    oldest first; [] when there is none."""
    filters = [
        {"Name": f"tag:{ROLE_TAG}", "Values": [BUILDER_ROLE]},
        {"Name": f"tag:{RUN_TAG}", "Values": [run_id]},
        {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
    ]
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
    found = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    return [i["InstanceId"] for i in sorted(found, key=lambda i: (i["LaunchTime"], i["InstanceId"]))]


def launch_builder(ec2: Any, spec: BakeSpec, *, image_id: str = "", run_id: str = "") -> str:
    """Start the builder instance; returns its id ("i-...").

    `image_id` (default `spec.base_ami`) is the AMI to start from; `run_id` tags the builder so that a
    retry of the same run returns the builder it already has (oldest first) instead of launching a
    second one. The instance requires IMDSv2 (HttpTokens=required), runs as `spec.instance_profile`,
    stops when its user data shuts it down and is tagged Name, org.flightdeck.role=ami-builder and
    org.flightdeck.bake-run. Returns once EC2 reports the instance (it may still be pending).
    Raises BakeSpecError without an AMI id to start from.
    """
    if run_id:
        existing = find_builders(ec2, run_id)
        if existing:
            log.info("run %s already has builder %s: not launching another", run_id, existing[0])
            return existing[0]
    image_id = image_id or spec.base_ami
    if not image_id:
        raise BakeSpecError("no AMI to start the builder from: pass image_id (resolve_base_ami) or set base_ami")
    tags = [{"Key": "Name", "Value": f"{spec.name_prefix}-ami-builder"}, {"Key": ROLE_TAG, "Value": BUILDER_ROLE}]
    if run_id:
        tags.append({"Key": RUN_TAG, "Value": run_id})
    request: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceType": spec.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "UserData": bake_user_data(spec),
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "InstanceInitiatedShutdownBehavior": "stop",
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tags},
            {"ResourceType": "volume", "Tags": tags},
        ],
    }
    if spec.instance_profile:
        request["IamInstanceProfile"] = {"Name": spec.instance_profile}
    if spec.subnet_id:
        request["SubnetId"] = spec.subnet_id
    if spec.security_group_ids:
        request["SecurityGroupIds"] = list(spec.security_group_ids)
    instance_id = ec2.run_instances(**request)["Instances"][0]["InstanceId"]
    _waiter(ec2, "instance_exists").wait(InstanceIds=[instance_id], WaiterConfig=dict(EXISTS_WAITER_CONFIG))
    log.info("launched builder %s from %s (%s, run %s)", instance_id, image_id, spec.instance_type, run_id or "-")
    return instance_id


def builder_state(ec2: Any, instance_id: str) -> tuple[str, str]:
    """(state name, AMI id the instance started from) of `instance_id`; ("", "") when EC2 no longer knows
    it (InvalidInstanceID.NotFound: terminated long ago, or never existed)."""
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ec2.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") == "InvalidInstanceID.NotFound":
            return "", ""
        raise
    instances = [i for r in reservations for i in r["Instances"]]
    if not instances:
        return "", ""
    return instances[0]["State"]["Name"], instances[0].get("ImageId", "")


def image_of_builder(ec2: Any, instance_id: str) -> str:
    """The id of an image this account made from builder `instance_id` (tag org.flightdeck.builder) that
    is pending or available, newest first; "" when there is none."""
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": f"tag:{BUILDER_TAG}", "Values": [instance_id]}])
    usable = [i for i in images["Images"] if i.get("State") in ("pending", "available")]
    usable.sort(key=lambda i: i.get("CreationDate", ""), reverse=True)
    return usable[0]["ImageId"] if usable else ""


def create_image(
    ec2: Any,
    instance_id: str,
    spec: BakeSpec,
    now: dt.datetime,
    waiter_config: Mapping[str, int] | None = None,
) -> str:
    """Image the stopped builder `instance_id` and wait until the AMI is available; returns its id ("ami-...").

    The AMI is named "<spec.name_prefix>-<now as UTC YYYYmmddTHHMMSSZ>" (`now`: an aware datetime) and
    tagged org.flightdeck.base-image (spec.base_image), org.flightdeck.base-ami, org.flightdeck.baked-at
    (ISO 8601 UTC) and org.flightdeck.builder (the instance id). Idempotent: when an image of this builder
    already exists (pending or available; a retried task), that one is waited for instead. The wait is
    EC2's `image_available` waiter; `waiter_config` ({"Delay": seconds, "MaxAttempts": n}) defaults to
    IMAGE_WAITER_CONFIG (30 minutes).

    Raises BakeFailed when the builder is not stopped, or the image fails or is not available in time.
    """
    from botocore.exceptions import WaiterError

    ami_id = image_of_builder(ec2, instance_id)
    if ami_id:
        log.info("builder %s already has image %s: waiting for it instead of creating another", instance_id, ami_id)
    else:
        state, base_ami = builder_state(ec2, instance_id)
        if state != "stopped":
            raise BakeFailed(
                f"builder {instance_id} is {state or 'gone'}, not stopped: only a stopped builder is imaged"
            )
        stamp = now.astimezone(dt.UTC)
        tags = [
            {"Key": "Name", "Value": f"{spec.name_prefix}-{stamp:%Y%m%dT%H%M%SZ}"},
            {"Key": BASE_IMAGE_TAG, "Value": spec.base_image},
            {"Key": BASE_AMI_TAG, "Value": base_ami},
            {"Key": BAKED_AT_TAG, "Value": stamp.isoformat(timespec="seconds")},
            {"Key": BUILDER_TAG, "Value": instance_id},
        ]
        ami_id = ec2.create_image(
            InstanceId=instance_id,
            Name=f"{spec.name_prefix}-{stamp:%Y%m%dT%H%M%SZ}",
            Description=f"flightdeck serving host: Docker + {spec.base_image or 'no base image'} (from {base_ami})",
            NoReboot=True,  # the builder is stopped: its file system is already consistent
            TagSpecifications=[{"ResourceType": "image", "Tags": tags}],
        )["ImageId"]
        log.info("creating image %s from builder %s", ami_id, instance_id)
    try:
        _waiter(ec2, "image_available").wait(ImageIds=[ami_id], WaiterConfig=dict(waiter_config or IMAGE_WAITER_CONFIG))
    except WaiterError as e:
        raise BakeFailed(f"image {ami_id} of builder {instance_id} did not become available: {e}") from e
    log.info("image %s is available", ami_id)
    return ami_id


def record_ami(ssm: Any, ami_id: str, parameter: str = AMI_PARAMETER) -> int:
    """Write `ami_id` to the SSM String parameter `parameter` (DataType aws:ec2:image, overwriting the
    previous bake's); returns the parameter's new version number."""
    version = ssm.put_parameter(
        Name=parameter,
        Value=ami_id,
        Type="String",
        DataType="aws:ec2:image",
        Overwrite=True,
        Description="flightdeck serving AMI (written by the bake_ami DAG)",
    )["Version"]
    log.info("recorded %s in %s (version %s)", ami_id, parameter, version)
    return int(version)


def current_ami(ssm: Any, parameter: str = AMI_PARAMETER) -> str:
    """The serving AMI id recorded by the last bake ("ami-...").

    Raises AmiNotBaked when `parameter` does not exist (no bake has run in this account and region).
    """
    try:
        return ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        raise AmiNotBaked(
            f"no serving AMI recorded: SSM parameter {parameter} does not exist; run the bake_ami DAG"
        ) from None


def terminate_builder(ec2: Any, instance_id: str) -> bool:
    """Terminate builder `instance_id`; idempotent. Returns True when a termination was requested, False
    when the instance was already terminated (or shutting down) or EC2 no longer knows it."""
    state, _ = builder_state(ec2, instance_id)
    if state in ("", "shutting-down", "terminated"):
        log.info("builder %s is already %s", instance_id, state or "gone")
        return False
    ec2.terminate_instances(InstanceIds=[instance_id])
    log.info("terminating builder %s (was %s)", instance_id, state)
    return True


def terminate_builders(ec2: Any, run_id: str) -> list[str]:
    """Terminate every live builder tagged with `run_id` (whatever step failed, even a launch whose
    answer was lost); returns the ids it terminated ([] when there was none)."""
    return [i for i in find_builders(ec2, run_id) if terminate_builder(ec2, i)]


class Bake:
    """One bake_ami run: its spec, connection and run id; each method is one task of the DAG.

    `params`: the DAG's Params (aws_conn_id plus BakeSpec.from_params's keys). Clients are built on
    first use with `clients`, or passed in (tests).
    """

    def __init__(self, run_id: str, params: Mapping[str, Any], aws: Clients | None = None) -> None:
        self.run_id = run_id
        self.spec = BakeSpec.from_params(params)
        self.aws_conn_id = str(params.get("aws_conn_id") or "aws_default")
        self._aws = aws

    @property
    def aws(self) -> Clients:
        """The run's (ec2, ssm) clients."""
        if self._aws is None:
            self._aws = clients(self.aws_conn_id, self.spec.region)
        return self._aws

    def launch_builder(self) -> str:
        """Launch (or, on a retry, find) this run's builder; returns its instance id. Raises BakeFailed
        when the base AMI cannot be resolved."""
        image_id = resolve_base_ami(self.aws.ssm, self.spec)
        return launch_builder(self.aws.ec2, self.spec, image_id=image_id, run_id=self.run_id)

    def create_image(self, instance_id: str, waiter_config: Mapping[str, int] | None = None) -> str:
        """Image the stopped builder and wait for it (see `create_image`); returns the AMI id.
        Raises BakeFailed when the builder is not stopped or the image is not available in time."""
        return create_image(self.aws.ec2, instance_id, self.spec, dt.datetime.now(dt.UTC), waiter_config)

    def record_ami(self, ami_id: str) -> dict[str, Any]:
        """Record `ami_id` in AMI_PARAMETER; returns {"ami_id", "parameter", "version"}."""
        version = record_ami(self.aws.ssm, ami_id)
        return {"ami_id": ami_id, "parameter": AMI_PARAMETER, "version": version}

    def terminate_builder(self) -> list[str]:
        """Terminate every builder of this run (idempotent); returns the ids terminated now."""
        return terminate_builders(self.aws.ec2, self.run_id)
