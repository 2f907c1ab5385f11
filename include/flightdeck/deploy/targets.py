"""Deploy targets and the one way to build a target's backend.

Every caller that needs a target's backend (the deploy steps, the CLI, the Deployments page, lineage)
goes through `backend_for`, so a target is wired in one place.
"""

from __future__ import annotations

from typing import Literal

from flightdeck.deploy.backend import Backend
from flightdeck.errors import FlightdeckError

Target = Literal["local", "ecs", "ec2"]
TARGETS: tuple[str, ...] = ("local", "ecs", "ec2")
AWS_TARGETS: tuple[str, ...] = ("ecs", "ec2")  # images go to ECR, backends on an AWS connection


class UnknownTarget(FlightdeckError, ValueError):
    """A target name that is not one of TARGETS."""


def backend_for(target: str, aws_conn_id: str | None = "aws_default") -> Backend:
    """The backend of `target`: "local" (Docker + the platform's HAProxy), "ecs" (ECS services + ALB) or
    "ec2" (Auto Scaling groups + ALB).

    `aws_conn_id`: the Airflow connection the AWS backends' hooks use (ignored by "local"). Built lazily
    per call (the AWS ones need AWS connections, the local one a Docker engine). Raises UnknownTarget
    for another name; the EC2 backend raises ec2.Ec2TargetError when its load balancer is missing.
    """
    if target == "local":
        from flightdeck.deploy.local import platform_backend

        return platform_backend()
    if target == "ecs":
        from flightdeck.deploy.ecs import EcsBackend

        return EcsBackend.from_settings(aws_conn_id=aws_conn_id)
    if target == "ec2":
        from flightdeck.deploy.ec2 import Ec2Backend

        return Ec2Backend.from_settings(aws_conn_id=aws_conn_id)
    raise UnknownTarget(f"target must be one of {TARGETS}, got {target!r}")
