"""The small interface every deploy target implements; strategies and rollback live above it."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["env"] = dict(self.env)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RevisionSpec:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TargetHealth:
    """One revision's view from the load balancer: per-target state and request counters."""

    revision: str
    total: int  # targets (containers/tasks) the revision should have
    healthy: int  # targets passing the LB's active health check
    states: Mapping[str, str] = field(default_factory=dict)  # target -> UP/DOWN/MAINT/...
    requests: int = 0  # cumulative requests the LB sent to this revision
    errors_5xx: int = 0  # cumulative 5xx responses from this revision (those the LB retried included)
    retried: int = 0  # of those, failures the LB retried on another revision: the client never saw them

    @property
    def all_healthy(self) -> bool:
        return self.total > 0 and self.healthy == self.total


class Backend(Protocol):
    """Start a revision, read its target health, set traffic weights, stop a revision."""

    name: str

    def start_revision(self, spec: RevisionSpec) -> None:
        """Start (or adopt, if already started) the revision's targets with 0% of traffic."""

    def target_health(self, revision: str) -> TargetHealth: ...

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
