"""Deploy targets and the one way to build a target's backend.

Every caller that needs a target's backend (the deploy steps, the CLI, the Deployments page, lineage)
goes through `backend_for`, so a target is wired in one place.
"""

from __future__ import annotations

from typing import Literal

from flightdeck.deploy.backend import Backend
from flightdeck.errors import FlightdeckError

Target = Literal["local", "ecs"]
TARGETS: tuple[str, ...] = ("local", "ecs")


class UnknownTarget(FlightdeckError, ValueError):
    """A target name that is not one of TARGETS."""


def backend_for(target: str, aws_conn_id: str | None = "aws_default") -> Backend:
    """The backend of `target`: "local" (Docker + the platform's HAProxy) or "ecs" (ECS + ALB).

    `aws_conn_id`: the Airflow connection the ECS backend's hooks use (ignored by "local"). Built lazily
    per call (the ECS one needs AWS connections, the local one a Docker engine). Raises UnknownTarget
    for another name.
    """
    if target == "local":
        from flightdeck.deploy.local import platform_backend

        return platform_backend()
    if target == "ecs":
        from flightdeck.deploy.ecs import EcsBackend

        return EcsBackend.from_settings(aws_conn_id=aws_conn_id)
    raise UnknownTarget(f"target must be one of {TARGETS}, got {target!r}")
