"""The small interface every deploy target implements; strategies and rollback live above it."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypedDict

from flightdeck.errors import FlightdeckError


class RollSpec(TypedDict):
    """An in-place roll of one live service (ECS rolling): what `prepare_roll` returns and `roll_back` takes."""

    cluster: str
    service: str  # the live service being rolled (its name on the cluster)
    previous_task_definition: str  # ARN the service ran before the roll: what `roll_back` restores
    task_definition: str  # ARN of the new task definition ECS rolls the service to


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

    def to_dict(self) -> RevisionSpecDict:
        """The spec as JSON-ready RevisionSpecDict (container labels, records, XCom)."""
        d = asdict(self)
        d["env"] = dict(self.env)
        return RevisionSpecDict(**d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RevisionSpec:
        """The inverse of to_dict; unknown keys (from newer writers) are ignored."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


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

    Every method the deploy steps call is declared here. `prepare_roll`/`roll_back` serve the ECS
    rolling strategy only (the steps call them when the run's record says it rolls in place); a target
    that cannot roll a live revision in place implements them by raising RollNotSupported.
    """

    name: str

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

    def prepare_roll(self, spec: RevisionSpec) -> RollSpec:
        """Register `spec` as the next version of the live revision `spec.revision`, to roll in place.

        Returns the roll to start (and to undo with `roll_back`). Raises RollNotSupported on a target
        that does not roll in place, or the target's error when the live revision is missing.
        """

    def roll_back(self, roll: RollSpec) -> None:
        """Put a rolled revision back on what it ran before `roll` (idempotent).

        Raises RollNotSupported on a target that does not roll in place.
        """
