"""An AWS account to try the ec2 target on without AWS: moto (an emulator of the AWS control plane; nothing
real can run it here) with the RUNBOOK's prerequisites, and an Airflow connection to it.

    python scripts/aws_sandbox.py up [--port 5055] [--conn aws_sandbox]   start, create the prerequisites
    python scripts/aws_sandbox.py connection [--port 5055]                the connection JSON (for the CLI)
    python scripts/aws_sandbox.py down [--conn aws_sandbox]               stop, delete the connection
    python scripts/aws_sandbox.py serve --port P [--emulate-builders]     the moto server itself (foreground)

What moto does not do, and this sandbox emulates (said here because it is not AWS):
- instances never boot, so an AMI builder never runs its user data to `shutdown`: with --emulate-builders
  (what `up` starts) a builder tagged org.flightdeck.role=ami-builder is stopped 3 s after it runs;
- moto 5.2.5 stores a second launch template version's UserData raw, and an Auto Scaling group launching
  from it makes moto answer 500: `serve` parses it the way CreateLaunchTemplate does;
- moto has no instance refresh API: the ec2 target's rolling strategy cannot run here (its tests answer
  those calls themselves, tests/support/instance_refresh_sim.py).
The serve part is what the EC2 target's tests start too (tests/support/moto_aws.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"


def client(endpoint: str, service: str) -> Any:
    """A boto3 client of `service` on the sandbox at `endpoint` (moto's test credentials)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def connection(endpoint: str) -> dict[str, Any]:
    """The Airflow AWS connection to the sandbox at `endpoint`."""
    return {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": endpoint, "region_name": REGION},
    }


def _fix_launch_template_versions() -> None:
    from moto.core.types import Base64EncodedString
    from moto.ec2.models.launch_templates import LaunchTemplate
    from moto.ec2.utils import parse_user_data

    create_version = LaunchTemplate.create_version

    def parsed(self: LaunchTemplate, data: dict[str, Any], description: str) -> Any:
        if data.get("UserData") is not None and not isinstance(data["UserData"], Base64EncodedString):
            data = {**data, "UserData": parse_user_data(data["UserData"])}
        return create_version(self, data, description)

    LaunchTemplate.create_version = parsed  # type: ignore[method-assign]


def _stop_builders(endpoint: str) -> None:
    """Stop AMI builders 3 s after they run: stands for their user data reaching `shutdown -h now`."""
    ec2 = None
    while True:
        time.sleep(1)
        try:
            ec2 = ec2 or client(endpoint, "ec2")
            found = ec2.describe_instances(
                Filters=[
                    {"Name": "tag:org.flightdeck.role", "Values": ["ami-builder"]},
                    {"Name": "instance-state-name", "Values": ["running"]},
                ]
            )
            ids = [
                i["InstanceId"]
                for r in found["Reservations"]
                for i in r["Instances"]
                if time.time() - i["LaunchTime"].timestamp() > 3
            ]
            if ids:
                ec2.stop_instances(InstanceIds=ids)
        except Exception as e:  # the server is starting or stopping: try again next second
            print(f"aws_sandbox: builder emulation: {type(e).__name__}: {e}", file=sys.stderr)


def serve(port: int, emulate_builders: bool) -> None:
    """Run the moto server on 127.0.0.1:`port` in the foreground (see the module docstring)."""
    from moto.server import main

    _fix_launch_template_versions()
    if emulate_builders:
        threading.Thread(target=_stop_builders, args=(f"http://127.0.0.1:{port}",), daemon=True).start()
    main(["-H", "127.0.0.1", "-p", str(port)])


def prerequisites(endpoint: str) -> dict[str, Any]:
    """What RUNBOOK "Deploy on EC2" asks to create once (idempotent): a VPC with two subnets, the security
    group `flightdeck-serving`, the ALB `flightdeck` with an HTTP listener, the instance role and profile
    `flightdeck-serving`. Returns {"vpc", "subnets", "security_group", "listener"}."""
    ec2, elb, iam = client(endpoint, "ec2"), client(endpoint, "elbv2"), client(endpoint, "iam")
    try:
        alb = elb.describe_load_balancers(Names=["flightdeck"])["LoadBalancers"][0]
    except elb.exceptions.LoadBalancerNotFoundException:
        alb = None
    if alb is not None:
        listener = elb.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"][0]
        sg = ec2.describe_security_groups(
            Filters=[
                {"Name": "group-name", "Values": ["flightdeck-serving"]},
                {"Name": "vpc-id", "Values": [alb["VpcId"]]},
            ]
        )["SecurityGroups"][0]
        return {
            "vpc": alb["VpcId"],
            "subnets": [z["SubnetId"] for z in alb["AvailabilityZones"]],
            "security_group": sg["GroupId"],
            "listener": listener["ListenerArn"],
        }
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{REGION}{z}")["Subnet"]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    sg = ec2.create_security_group(GroupName="flightdeck-serving", Description="ALB to serving 8080/8081", VpcId=vpc)
    ec2.authorize_security_group_ingress(
        GroupId=sg["GroupId"],
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8081, "IpRanges": [{"CidrIp": "10.20.0.0/16"}]}
        ],
    )
    alb = elb.create_load_balancer(Name="flightdeck", Subnets=subnets)["LoadBalancers"][0]
    listener = elb.create_listener(
        LoadBalancerArn=alb["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503"}}],
    )["Listeners"][0]
    iam.create_role(
        RoleName="flightdeck-serving-instance", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"})
    )
    iam.create_instance_profile(InstanceProfileName="flightdeck-serving")
    iam.add_role_to_instance_profile(InstanceProfileName="flightdeck-serving", RoleName="flightdeck-serving-instance")
    return {"vpc": vpc, "subnets": subnets, "security_group": sg["GroupId"], "listener": listener["ListenerArn"]}


def _state() -> Path:
    from flightdeck import settings

    path = settings.load().state_dir / "aws-sandbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _airflow() -> Any:
    from flightdeck.airflow_client import AirflowClient
    from flightdeck.provisioning import airflow_password
    from flightdeck.settings import load

    return AirflowClient(load().airflow_url, os.environ.get("FLIGHTDECK_AIRFLOW_USER", "admin"), airflow_password())


def up(port: int, conn: str) -> None:
    """Start the sandbox detached (pid and log in the state folder), create the prerequisites and the Airflow
    connection `conn`."""
    endpoint = f"http://127.0.0.1:{port}"
    state = _state()
    try:
        urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
        print(f"aws_sandbox: already up at {endpoint}")
    except OSError:
        log = (state / "moto.log").open("a")
        proc = subprocess.Popen(
            [sys.executable, __file__, "serve", "--port", str(port), "--emulate-builders"],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        (state / "pid").write_text(str(proc.pid))
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit(f"aws_sandbox: moto did not start on {endpoint} (log: {state / 'moto.log'})")
    made = prerequisites(endpoint)
    client = _airflow()
    body = {"connection_id": conn, "conn_type": "aws", "login": "testing", "password": "testing"}
    body["extra"] = json.dumps(connection(endpoint)["extra"])
    try:
        client.post("/connections", json=body)
    except Exception as e:  # already there (a second `up`): keep it current
        if "409" not in str(e):
            raise
        client.patch(f"/connections/{conn}", json=body)
    print(f"aws_sandbox: moto at {endpoint} (VPC {made['vpc']}), ALB 'flightdeck', Airflow connection {conn!r}")


def down(conn: str) -> None:
    """Stop the sandbox and delete the Airflow connection (its resources go with it)."""
    pid_file = _state() / "pid"
    if pid_file.exists():
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass
        pid_file.unlink()
    try:
        _airflow().delete(f"/connections/{conn}")
    except Exception as e:  # already gone
        print(f"aws_sandbox: connection {conn}: {e}", file=sys.stderr)
    print("aws_sandbox: down")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("up", "connection", "down", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--port", type=int, default=5055)
        p.add_argument("--conn", default="aws_sandbox")
        p.add_argument("--emulate-builders", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        serve(args.port, args.emulate_builders)
    elif args.cmd == "up":
        up(args.port, args.conn)
    elif args.cmd == "connection":
        print(json.dumps(connection(f"http://127.0.0.1:{args.port}")))
    else:
        down(args.conn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
