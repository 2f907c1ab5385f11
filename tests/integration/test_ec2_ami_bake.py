"""The AMI bake of the EC2 target against a moto server: every AWS call of the bake is a real API call
with real request/response shapes (SSM's public Amazon Linux parameter, RunInstances with user data,
IMDSv2 and an instance profile, tag lookups, CreateImage, the `image_available` waiter, the SSM
parameter of the baked AMI, termination), through the clients the provider's hooks build.

moto does not boot instances or run user data, so a builder never shuts itself down. That state is
INJECTED here, and each test says where: `_inject_script_finished` stops the builder with
StopInstances, standing for "the user data script ran to its `shutdown -h now` and the instance
stopped" (InstanceInitiatedShutdownBehavior=stop). What the script would do on a real instance is
checked on the script itself: its content, its order and `bash -n`.
"""

from __future__ import annotations

import base64
import shlex
import subprocess

import pytest
from airflow.providers.amazon.aws.sensors.ec2 import EC2InstanceStateSensor

from flightdeck.deploy import ami
from flightdeck.deploy.ami import AmiNotBaked, Bake, BakeFailed, BakeSpec
from flightdeck.errors import FlightdeckError
from tests.support.moto_aws import client, moto_server, reset

pytestmark = pytest.mark.integration

PORT = 8485
ENDPOINT = f"http://127.0.0.1:{PORT}"
CONN = "moto_bake"
FAST_WAIT = {"Delay": 1, "MaxAttempts": 5}
ECR_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/flightdeck-serving:base"


@pytest.fixture(scope="module")
def moto():
    with moto_server(PORT, CONN) as endpoint:
        yield endpoint


def _boto(service: str):
    return client(ENDPOINT, service)


@pytest.fixture
def aws(moto) -> dict:
    """A fresh moto account with what the platform's infrastructure code would have made: the builder's
    instance profile, a subnet and a security group. Returns them with the hook-built clients."""
    reset(ENDPOINT)
    iam = _boto("iam")
    iam.create_role(RoleName="flightdeck-serving", AssumeRolePolicyDocument="{}")
    iam.create_instance_profile(InstanceProfileName="flightdeck-serving")
    iam.add_role_to_instance_profile(InstanceProfileName="flightdeck-serving", RoleName="flightdeck-serving")
    ec2 = _boto("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="fd-builder", Description="builder", VpcId=vpc)["GroupId"]
    params = {
        "aws_conn_id": CONN,
        "base_ami": "",
        "instance_type": "t3.small",
        "subnet_id": subnet,
        "security_group_ids": f" {sg} ,",
        "instance_profile": "flightdeck-serving",
        "base_image": ECR_IMAGE,
    }
    return {"clients": ami.clients(CONN), "params": params, "subnet": subnet, "sg": sg}


def _inject_script_finished(instance_id: str) -> None:
    """INJECTED: stands for the user data reaching `shutdown -h now` (the builder stops: its shutdown
    behavior is "stop"). moto runs no user data, so the test stops the instance itself."""
    _boto("ec2").stop_instances(InstanceIds=[instance_id])


def _instance(instance_id: str) -> dict:
    return _boto("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def _builders_of(run_id: str) -> list[str]:
    reservations = _boto("ec2").describe_instances(Filters=[{"Name": f"tag:{ami.RUN_TAG}", "Values": [run_id]}])
    return [i["InstanceId"] for r in reservations["Reservations"] for i in r["Instances"]]


def test_full_bake_launch_stop_image_record_terminate(aws):
    """launch -> (INJECTED: the script finished, the builder stopped) -> the sensor sees "stopped" ->
    image available -> AMI id in SSM -> current_ami returns it -> the builder is terminated."""
    ec2, ssm = aws["clients"]
    bake = Bake("manual__2026-05-01T00:00:00+00:00", aws["params"], aws["clients"])

    builder = bake.launch_builder()
    inst = _instance(builder)
    base = _boto("ssm").get_parameter(Name=ami.BASE_AMI_PARAMETER)["Parameter"]["Value"]
    assert inst["ImageId"] == base  # Amazon Linux 2023 from the public SSM parameter (moto serves it)
    assert inst["State"]["Name"] in ("pending", "running")
    assert inst["InstanceType"] == "t3.small" and inst["SubnetId"] == aws["subnet"]
    assert [g["GroupId"] for g in inst["SecurityGroups"]] == [aws["sg"]]
    assert inst["MetadataOptions"]["HttpTokens"] == "required"  # IMDSv2 only
    assert inst["IamInstanceProfile"]["Arn"].endswith(":instance-profile/flightdeck-serving")
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags[ami.ROLE_TAG] == "ami-builder" and tags[ami.RUN_TAG] == bake.run_id
    assert tags["Name"] == "flightdeck-serving-ami-builder"
    shutdown = _boto("ec2").describe_instance_attribute(
        InstanceId=builder, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"
    user_data = _boto("ec2").describe_instance_attribute(InstanceId=builder, Attribute="userData")
    assert base64.b64decode(user_data["UserData"]["Value"]).decode() == ami.bake_user_data(bake.spec)

    # the DAG's wait: the provider's sensor, as the DAG configures it, polling the moto server
    sensor = EC2InstanceStateSensor(
        task_id="wait_builder_stopped", instance_id=builder, target_state="stopped", aws_conn_id=CONN
    )
    assert sensor.poke({}) is False
    with pytest.raises(BakeFailed, match="not stopped"):  # a running builder is never imaged
        bake.create_image(builder, waiter_config=FAST_WAIT)

    _inject_script_finished(builder)  # INJECTED: see the module docstring
    assert sensor.poke({}) is True

    ami_id = bake.create_image(builder, waiter_config=FAST_WAIT)
    [image] = _boto("ec2").describe_images(ImageIds=[ami_id])["Images"]
    assert image["State"] == "available" and image["Name"].startswith("flightdeck-serving-")
    image_tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert image_tags[ami.BASE_IMAGE_TAG] == ECR_IMAGE
    assert image_tags[ami.BUILDER_TAG] == builder and image_tags[ami.BASE_AMI_TAG] == base
    assert image_tags[ami.BAKED_AT_TAG].endswith("+00:00")
    # a retried create_image waits for the same image instead of making another
    assert bake.create_image(builder, waiter_config=FAST_WAIT) == ami_id
    mine = _boto("ec2").describe_images(
        Owners=["self"], Filters=[{"Name": f"tag:{ami.BUILDER_TAG}", "Values": [builder]}]
    )
    assert [i["ImageId"] for i in mine["Images"]] == [ami_id]

    assert bake.record_ami(ami_id) == {"ami_id": ami_id, "parameter": ami.AMI_PARAMETER, "version": 1}
    param = _boto("ssm").get_parameter(Name=ami.AMI_PARAMETER)["Parameter"]
    assert param["Value"] == ami_id and param["Type"] == "String" and param["DataType"] == "aws:ec2:image"
    assert ami.current_ami(ssm) == ami_id
    assert ami.record_ami(ssm, ami_id) == 2  # a second bake overwrites (a new version)

    assert bake.terminate_builder() == [builder]
    assert _instance(builder)["State"]["Name"] in ("shutting-down", "terminated")
    assert bake.terminate_builder() == []  # nothing of this run is left
    assert ami.current_ami(ssm) == ami_id  # the AMI outlives its builder


@pytest.mark.parametrize(
    ("base_image", "login"),
    [(ECR_IMAGE, True), ("python:3.11-slim", False), ("", False), ("evil$(reboot)`id`;x", False)],
    ids=["ecr", "docker-hub", "none", "quoted"],
)
def test_user_data_installs_docker_pulls_the_base_image_and_shuts_down(base_image, login):
    """The script a real builder runs (moto does not run it): Docker installed and enabled, an ECR login
    before pulling an ECR base image and a logout after it, shutdown last, valid bash."""
    script = ami.bake_user_data(BakeSpec(base_image=base_image))
    lines = [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert script.startswith("#!/bin/bash\n")
    assert lines[-1] == "shutdown -h now"
    assert "set -Eeuxo pipefail" in lines
    assert "retry dnf install -y docker" in lines and "systemctl enable --now docker" in lines
    pulls = [line for line in lines if "docker pull" in line]
    logins = [line for line in lines if "docker login" in line]
    if base_image:
        assert len(pulls) == 1 and pulls[0].endswith(f"docker pull {shlex.quote(base_image)}")
    else:
        assert not pulls
    if login:
        registry = ECR_IMAGE.split("/")[0]
        assert logins == [
            f"aws ecr get-login-password --region us-east-1 | docker login --username AWS --password-stdin {registry}"
        ]
        assert lines.index(logins[0]) < lines.index(pulls[0]) < lines.index(f"docker logout {registry}")
    else:
        assert not logins
    assert lines.index("systemctl enable --now docker") < min((lines.index(p) for p in pulls), default=len(lines))
    assert "rm -rf /var/cache/dnf /root/.docker" in lines  # no registry credentials in the image
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, timeout=10)
    assert checked.returncode == 0, checked.stderr


def test_launch_is_idempotent_on_retry(aws):
    """A retried launch_builder of the same run finds its builder (running, or already stopped: INJECTED
    stop, the script finished) instead of launching a second one; another run gets its own builder."""
    run = "manual__2026-05-02T00:00:00+00:00"
    first = Bake(run, aws["params"], aws["clients"]).launch_builder()
    assert Bake(run, aws["params"], aws["clients"]).launch_builder() == first
    _inject_script_finished(first)  # INJECTED: the builder stopped between the attempts
    assert Bake(run, aws["params"], aws["clients"]).launch_builder() == first
    assert _builders_of(run) == [first]

    other = Bake("manual__other", aws["params"], aws["clients"]).launch_builder()
    assert other != first and _builders_of("manual__other") == [other]


def test_terminate_is_idempotent(aws):
    """Terminating twice, an unknown instance, or a run that never launched is not an error."""
    ec2, _ = aws["clients"]
    bake = Bake("manual__2026-05-03T00:00:00+00:00", aws["params"], aws["clients"])
    assert bake.terminate_builder() == []  # the launch failed before any builder existed
    builder = bake.launch_builder()
    assert ami.terminate_builder(ec2, builder) is True
    assert ami.terminate_builder(ec2, builder) is False
    assert ami.terminate_builder(ec2, "i-0123456789abcdef0") is False  # EC2 does not know it
    assert bake.terminate_builder() == []
    assert _instance(builder)["State"]["Name"] in ("shutting-down", "terminated")


def test_current_ami_before_any_bake_says_to_run_the_bake(aws):
    _, ssm = aws["clients"]
    with pytest.raises(AmiNotBaked) as caught:
        ami.current_ami(ssm)
    assert isinstance(caught.value, FlightdeckError) and isinstance(caught.value, LookupError)
    message = str(caught.value)
    assert "\n" not in message and ami.AMI_PARAMETER in message and "run the bake_ami DAG" in message


def test_an_explicit_base_ami_wins_over_the_ssm_parameter(aws):
    ec2, _ = aws["clients"]
    other = next(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])
    builder = Bake("manual__explicit", {**aws["params"], "base_ami": other}, aws["clients"]).launch_builder()
    assert _instance(builder)["ImageId"] == other


def test_spec_from_the_dag_params():
    spec = BakeSpec.from_params(
        {"aws_conn_id": "x", "security_group_ids": "sg-1, sg-2,,", "base_image": " 2026 ", "instance_type": ""}
    )
    assert spec.security_group_ids == ("sg-1", "sg-2") and spec.base_image == "2026"
    assert spec.instance_type == "t3.small" and spec.instance_profile == "flightdeck-serving"
    assert BakeSpec.from_params({}) == BakeSpec()
    assert BakeSpec(base_image=ECR_IMAGE).ecr_registry == ECR_IMAGE.split("/")[0]
    assert BakeSpec(base_image="ghcr.io/org/img:1").ecr_registry == ""
