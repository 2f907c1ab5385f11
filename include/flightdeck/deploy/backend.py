"""The small interface every deploy target implements; strategies and rollback live above it."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, NotRequired, Protocol, TypedDict

from flightdeck.errors import FlightdeckError


class EcsRollSpec(TypedDict):
    """An ECS rolling update of one live service: what EcsBackend.prepare_roll returns and roll_back takes."""

    cluster: str
    service: str  # the live service being rolled (its name on the cluster)
    previous_task_definition: str  # ARN the service ran before the roll: what `roll_back` restores
    task_definition: str  # ARN of the new task definition ECS rolls the service to


class InstanceRefreshSpec(TypedDict):
    """An EC2 Auto Scaling instance refresh of one live group to a new launch template version: what
    Ec2Backend.prepare_roll returns and roll_back takes (StartInstanceRefresh's DesiredConfiguration and
    Preferences)."""

    group: str  # the live Auto Scaling group being refreshed
    launch_template_id: str
    previous_version: str  # launch template version the group ran before: what `roll_back` restores
    version: str  # the new launch template version the refresh rolls the group to
    min_healthy_percentage: int  # percent of the group kept InService while instances are replaced
    checkpoint_percentages: list[int]  # pause points (percent replaced, increasing, ending at 100)
    checkpoint_delay_s: int  # seconds at each checkpoint


# What an in-place roll of a live revision is on each target that rolls in place.
RollSpec = EcsRollSpec | InstanceRefreshSpec


@dataclass(frozen=True)
class RollPlan:
    """How a target that rolls in place paces the roll (the deploy run's params).

    ECS's rolling update keeps its own pacing (minimum healthy 100 %, maximum 200 %); an EC2 instance
    refresh takes all of these."""

    min_healthy_percentage: int = 100
    checkpoint_percentages: tuple[int, ...] = (100,)  # the canary plan's steps, ending at 100
    checkpoint_delay_s: int = 0


DEFAULT_ROLL_PLAN = RollPlan()


class ScalingMetric(StrEnum):
    """What target-tracking scaling holds at its target value."""

    CPU = "cpu"  # average CPU utilisation of the revision's instances/tasks, percent
    REQUEST_COUNT_PER_TARGET = "request_count_per_target"  # ALB requests per target per minute


class ScalingSpecDict(TypedDict):
    """ScalingSpec as JSON."""

    min_capacity: int
    max_capacity: int
    metric: str
    target_value: float


@dataclass(frozen=True)
class ScalingSpec:
    """A revision's autoscaling: capacity bounds and a target-tracking policy (from the deploy Params)."""

    min_capacity: int = 1
    max_capacity: int = 4
    metric: ScalingMetric = ScalingMetric.CPU
    target_value: float = 60.0  # percent CPU, or requests per target per minute

    def to_dict(self) -> ScalingSpecDict:
        """JSON-ready ScalingSpecDict."""
        return ScalingSpecDict(
            min_capacity=self.min_capacity,
            max_capacity=self.max_capacity,
            metric=ScalingMetric(self.metric).value,
            target_value=float(self.target_value),
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScalingSpec:
        """The inverse of to_dict. Raises ValueError for an unknown metric."""
        return cls(
            min_capacity=int(d.get("min_capacity", 1)),
            max_capacity=int(d.get("max_capacity", 4)),
            metric=ScalingMetric(d.get("metric", ScalingMetric.CPU.value)),
            target_value=float(d.get("target_value", 60.0)),
        )


class RollNotSupported(FlightdeckError, RuntimeError):
    """The target cannot update a live revision in place (the local target starts a new revision instead)."""


class RevisionSpecDict(TypedDict):
    """RevisionSpec as JSON (records, XCom)."""

    revision: str
    image: str
    digest: str
    model_name: str
    model_version: str
    replicas: int
    env: dict[str, str]
    run_id: str
    scaling: NotRequired[ScalingSpecDict]  # absent: the target's own scaling defaults


@dataclass(frozen=True)
class RevisionSpec:
    """What to run for one revision: an image pinned by digest plus its lineage."""

    revision: str  # unique per deployment: the controller never reuses a live revision's name
    image: str  # pull reference, by digest when the image was pushed (repo@sha256:...)
    digest: str = ""
    model_name: str = ""
    model_version: str = ""
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    run_id: str = ""  # the Airflow run that created it
    scaling: ScalingSpec | None = None  # autoscaling on targets that scale (ECS, EC2); None: their defaults

    def to_dict(self) -> RevisionSpecDict:
        """The spec as JSON-ready RevisionSpecDict (container labels, records, XCom); `scaling` only when set."""
        d = asdict(self)
        d["env"] = dict(self.env)
        d.pop("scaling")
        if self.scaling is not None:
            d["scaling"] = self.scaling.to_dict()
        return RevisionSpecDict(**d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RevisionSpec:
        """The inverse of to_dict; unknown keys (from newer writers) are ignored."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if known.get("scaling") is not None and not isinstance(known["scaling"], ScalingSpec):
            known["scaling"] = ScalingSpec.from_dict(known["scaling"])
        return cls(**known)


@dataclass(frozen=True)
class TargetHealth:
    """One revision's view from the load balancer: per-target state and request counters."""

    revision: str
    total: int  # targets (containers/tasks) the revision should have
    healthy: int  # targets passing the LB's active health check
    states: Mapping[str, str] = field(default_factory=dict)  # target -> UP/DOWN/MAINT/...
    # Counts are this revision's own, never a reused LB slot's earlier occupants': local, cumulative
    # since its containers took their slots (LocalBackend.target_health); ECS, the ALB's sums for the
    # revision's own target group over the last `metrics_window_s` (EcsBackend.target_health).
    requests: int = 0  # requests the LB sent to this revision
    errors_5xx: int = 0  # 5xx responses from this revision (those the LB retried included)
    retried: int = 0  # of those, failures the LB retried on another revision: the client never saw them

    @property
    def all_healthy(self) -> bool:
        """True when the revision has targets and every one passes the load balancer's health check."""
        return self.total > 0 and self.healthy == self.total


class Backend(Protocol):
    """Start a revision, read its target health, set traffic weights, stop a revision.

    Every method the deploy steps call is declared here. `prepare_roll`/`roll_back` serve the rolling
    strategy on targets that update a live revision in place (ECS: a rolling service update; EC2: an
    instance refresh of the Auto Scaling group); the steps call them when `rolls_in_place` is True and
    the run's record says it rolls. A target that cannot roll in place sets `rolls_in_place = False` and
    implements them by raising RollNotSupported.
    """

    name: str
    rolls_in_place: bool

    def start_revision(self, spec: RevisionSpec) -> None:
        """Start (or adopt, if already started) the revision's targets with 0% of traffic."""

    def target_health(self, revision: str) -> TargetHealth:
        """What the load balancer sees of `revision` now: its targets' states and its own request counts."""
        ...

    def set_weights(self, weights: Mapping[str, int], standby: Collection[str] = ()) -> None:
        """Traffic percent per revision (sums to 100, or to 0 to take every revision out).

        `standby`: revisions at 0% that may still answer requests the load balancer retries after
        a failure elsewhere (the previous revision while a new one is watched). A target whose load
        balancer does not retry (ECS behind an ALB) ignores it.
        """

    def stop_revision(self, revision: str) -> None:
        """Take the revision out of the LB (draining first) and stop its targets; idempotent."""

    def weights(self) -> dict[str, int]:
        """Current traffic percent of every revision that has targets."""

    def spec(self, revision: str) -> RevisionSpec | None:
        """The spec a running (or remembered) revision was started with, to restart it on rollback."""

    def prepare_roll(self, spec: RevisionSpec, plan: RollPlan = DEFAULT_ROLL_PLAN) -> RollSpec:
        """Register `spec` as the next version of the live revision `spec.revision`, to roll in place,
        paced by `plan` where the target takes pacing (EC2's instance refresh).

        Returns the roll to start (and to undo with `roll_back`). Raises RollNotSupported on a target
        that does not roll in place, or the target's error when the live revision is missing.
        """

    def roll_back(self, roll: RollSpec) -> None:
        """Put a rolled revision back on what it ran before `roll` (idempotent).

        Raises RollNotSupported on a target that does not roll in place.
        """
