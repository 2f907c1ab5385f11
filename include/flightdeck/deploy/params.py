"""The deploy run's parameters: one typed source of their defaults and validation.

The deploy DAG's Params form takes its defaults from DEFAULTS (dags/deploy.py), the steps merge a run's
conf over them with `DeployParams.resolve`, and a deployment record keeps the resolved values as its
spec's `params` (JSON: the dataclass's fields).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from flightdeck import settings as settings_mod
from flightdeck.deploy import controller as ctl
from flightdeck.deploy.backend import RollPlan, ScalingMetric, ScalingSpec
from flightdeck.deploy.targets import TARGETS
from flightdeck.errors import FlightdeckError
from flightdeck.monitoring.config import monitor_config

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a container environment variable's name
MAX_SHIFT_STEPS = 4  # the DAG has this many shift tasks; a plan uses the first N of them
# a target-tracking target that is a sane start: 60 % CPU; 1000 requests per target per minute
SCALING_TARGET_DEFAULTS = {ScalingMetric.CPU: 60.0, ScalingMetric.REQUEST_COUNT_PER_TARGET: 1000.0}


class InvalidParams(FlightdeckError, ValueError):
    """A deploy param out of its allowed values; the message names it."""


@dataclass(frozen=True)
class DeployParams:
    """What a deploy run was asked to do (the DAG's Params, with these defaults)."""

    model: str = "champion"  # a version number, an alias, or "none" with `image`
    model_name: str = ""  # registered model; "" = the platform default (settings.model_name)
    target: str = "local"  # one of targets.TARGETS
    strategy: str = "blue_green"  # one of controller.STRATEGIES
    canary_percent: int = 10  # canary: the first step's traffic, percent
    canary_steps: int = 3  # canary: steps to 100% (at most MAX_SHIFT_STEPS)
    step_seconds: int = 10  # watch time per canary step, seconds
    bake_seconds: int = 20  # watch time at 100%, seconds
    replicas: int = 1
    healthy_timeout_seconds: int = 90
    max_5xx_rate: float = 0.05  # share of 5xx responses (0..1)
    min_requests: int = 20  # responses a window needs before the 5xx rate counts
    unhealthy_polls: int = 2  # consecutive unhealthy polls that fail the revision
    require_approval: bool = False  # hold a canary after its first step for a person
    image: str = ""  # deploy this image instead of building one
    env: dict[str, str] = field(default_factory=dict)  # extra container environment
    # autoscaling of the revision (ecs, ec2): capacity bounds and a target-tracking policy
    min_capacity: int = 1
    max_capacity: int = 4
    scaling_metric: str = ScalingMetric.CPU.value  # one of backend.ScalingMetric
    scaling_target: float = 0.0  # 0 = the metric's default (SCALING_TARGET_DEFAULTS)
    # rolling in place on ec2: the instance refresh keeps this percent of the group in service
    min_healthy_percent: int = 100
    aws_conn_id: str = "aws_default"  # the Airflow connection of the ecs/ec2 target's AWS account
    # inference capture: percent of the model server's 200 scoring answers recorded to S3 (0 = off); None =
    # params.yaml monitor.capture_percent, read by `resolve` when a run starts (not when the DAG file is parsed)
    capture_percent: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeployParams:
        """The fields of `d` over the defaults (unknown keys and None values ignored; no validation)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known and v is not None})

    @classmethod
    def resolve(cls, params: Mapping[str, Any]) -> DeployParams:
        """A run's params over the defaults, `model_name` filled from settings and `capture_percent` from
        params.yaml when not given, validated.

        Raises InvalidParams for a strategy, target or canary step count out of range.
        """
        p = cls.from_dict(params)
        if not p.model_name:
            p = cls.from_dict({**p.to_dict(), "model_name": settings_mod.load().model_name})
        if p.capture_percent is None:
            p = cls.from_dict({**p.to_dict(), "capture_percent": float(monitor_config().capture_percent)})
        p.validate()
        return p

    def validate(self) -> None:
        """Raises InvalidParams naming the first param out of its allowed values."""
        if self.strategy not in ctl.STRATEGIES:
            raise InvalidParams(f"strategy must be one of {ctl.STRATEGIES}, got {self.strategy!r}")
        if self.target not in TARGETS:
            raise InvalidParams(f"target must be one of {TARGETS}, got {self.target!r}")
        if not 1 <= int(self.canary_steps) <= MAX_SHIFT_STEPS:
            raise InvalidParams(f"canary_steps must be 1..{MAX_SHIFT_STEPS}, got {self.canary_steps!r}")
        if self.scaling_metric not in {m.value for m in ScalingMetric}:
            raise InvalidParams(
                f"scaling_metric must be one of {[m.value for m in ScalingMetric]}, got {self.scaling_metric!r}"
            )
        if not 1 <= int(self.min_capacity) <= int(self.max_capacity):
            raise InvalidParams(f"need 1 <= min_capacity <= max_capacity, got {self.min_capacity}..{self.max_capacity}")
        for key, value in (self.env or {}).items():  # one line each: the EC2 target writes them to a file
            if not ENV_NAME.fullmatch(str(key)) or "\n" in str(value) or "\r" in str(value):
                raise InvalidParams(f"env: {key!r} must be a variable name with a one-line value")
        if self.capture_percent is not None and not 0 <= float(self.capture_percent) <= 100:
            raise InvalidParams(f"capture_percent must be 0..100, got {self.capture_percent!r}")
        if not 0 <= int(self.min_healthy_percent) <= 100:
            raise InvalidParams(f"min_healthy_percent must be 0..100, got {self.min_healthy_percent!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (what the record's spec stores)."""
        d = asdict(self)
        d["env"] = dict(self.env or {})
        return d

    def scaling(self) -> ScalingSpec:
        """The revision's autoscaling these params ask for (the metric's default target when 0)."""
        metric = ScalingMetric(self.scaling_metric)
        return ScalingSpec(
            min_capacity=int(self.min_capacity),
            max_capacity=int(self.max_capacity),
            metric=metric,
            target_value=float(self.scaling_target) or SCALING_TARGET_DEFAULTS[metric],
        )

    def roll_plan(self) -> RollPlan:
        """How a roll in place is paced: the canary plan's steps as checkpoints, `step_seconds` at each,
        `min_healthy_percent` kept in service."""
        steps = ctl.plan_steps("canary", int(self.canary_percent), int(self.canary_steps), int(self.replicas))
        return RollPlan(
            min_healthy_percentage=int(self.min_healthy_percent),
            checkpoint_percentages=tuple(steps),
            checkpoint_delay_s=int(self.step_seconds),
        )

    def thresholds(self) -> ctl.Thresholds:
        """The health thresholds these params ask for (seconds, a 0..1 rate, counts)."""
        return ctl.Thresholds(
            healthy_timeout_s=float(self.healthy_timeout_seconds),
            max_5xx_rate=float(self.max_5xx_rate),
            min_requests=int(self.min_requests),
            unhealthy_polls=int(self.unhealthy_polls),
        )


DEFAULTS = DeployParams()
