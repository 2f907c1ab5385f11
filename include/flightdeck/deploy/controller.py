"""Deploy strategies and rollback, written once above the Backend interface.

Every step is a plain function so the DAG can run each as its own task (and a cleared task can
re-run it: each step is idempotent given the same inputs); `deploy()` chains them in-process for
benchmarks and tests. A step that sees the new revision misbehave with traffic on it pulls the
traffic back to the previous revision before failing (a guard, not the rollback): users are
protected within one poll interval, and the rollback step that follows restores the rest.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

from flightdeck.deploy.backend import Backend, RevisionSpec, TargetHealth
from flightdeck.errors import FlightdeckError

log = logging.getLogger(__name__)

Strategy = Literal["rolling", "blue_green", "canary"]
STRATEGIES: tuple[str, ...] = ("rolling", "blue_green", "canary")


class DeployError(FlightdeckError, RuntimeError):
    """A deploy step failed; the message is the reason recorded for the rollback."""


@dataclass(frozen=True)
class Thresholds:
    """When the new revision counts as healthy / unhealthy."""

    healthy_timeout_s: float = 60.0  # wait_healthy gives up after this
    max_5xx_rate: float = 0.05  # share of 5xx among the revision's responses in a watch window
    min_requests: int = 20  # a window with fewer responses does not judge the 5xx rate
    unhealthy_polls: int = 2  # consecutive polls with a target down before failing
    poll_s: float = 0.5
    window_s: float = 3.0  # sliding window for the 5xx rate

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Thresholds:
        """Thresholds from Params-shaped JSON: known keys cast to the field's type, unknown keys ignored."""
        d = d or {}
        return cls(**{k: type(getattr(cls, k))(v) for k, v in d.items() if k in cls.__dataclass_fields__})


class SnapshotDict(TypedDict):
    """Snapshot as JSON (records, XCom)."""

    weights: dict[str, int]  # revision -> traffic percent
    specs: dict[str, dict[str, Any]]  # revision -> RevisionSpec.to_dict()


class WatchResult(TypedDict):
    """What a watch period saw on the new revision."""

    responses: int
    errors_5xx: int


class ShiftResult(TypedDict):
    """A shift step: the split it set and, when it held the step, what the watch saw."""

    weights: dict[str, int]  # revision -> traffic percent
    responses: NotRequired[int]
    errors_5xx: NotRequired[int]


@dataclass
class Snapshot:
    """The traffic split before this deploy touched it, and how to restart those revisions."""

    weights: dict[str, int]
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> SnapshotDict:
        """The snapshot as JSON-ready SnapshotDict (records, XCom)."""
        return SnapshotDict(**asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Snapshot:
        """The inverse of to_dict (weights cast to int; missing keys read as empty)."""
        return cls(weights={k: int(v) for k, v in (d.get("weights") or {}).items()}, specs=dict(d.get("specs") or {}))


def plan_steps(strategy: str, canary_percent: int = 10, canary_steps: int = 3, replicas: int = 1) -> list[int]:
    """The new revision's traffic percent after each shift step (the last is always 100).

    blue_green: all at once. canary: `canary_percent` first, then evenly up to 100 in `canary_steps`
    steps. rolling: one replica's share at a time (on ECS the service's own rolling deployment
    replaces this, see the ECS backend).
    """
    if strategy == "blue_green":
        return [100]
    if strategy == "canary":
        n = max(1, int(canary_steps))
        first = min(max(int(canary_percent), 1), 100)
        if n == 1 or first == 100:
            return [100]
        return [round(first + (100 - first) * i / (n - 1)) for i in range(n)]
    if strategy == "rolling":
        n = max(1, int(replicas))
        return [round(100 * i / n) for i in range(1, n + 1)]
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")


def split(new: str, percent: int, previous: Mapping[str, int]) -> dict[str, int]:
    """Give `new` its percent and share the rest among previous revisions by their old weights."""
    previous = {r: w for r, w in previous.items() if w > 0 and r != new}
    if not previous:
        return {new: 100}  # first deploy: nothing else can serve
    rest = 100 - percent
    total = sum(previous.values())
    weights = {new: percent}
    given = 0
    items = sorted(previous.items())
    for i, (rev, w) in enumerate(items):
        share = rest - given if i == len(items) - 1 else round(rest * w / total)
        weights[rev] = share
        given += share
    return weights


# -- steps ------------------------------------------------------------------------------------------


def snapshot(backend: Backend, new_revision: str) -> Snapshot:
    """What serves now (excluding the revision being deployed, so a re-run gives the same answer)."""
    weights = {r: w for r, w in backend.weights().items() if r != new_revision}
    specs = {}
    for r in weights:
        s = backend.spec(r)
        if s is not None:
            specs[r] = s.to_dict()
    return Snapshot(weights=weights, specs=specs)


def start(backend: Backend, spec: RevisionSpec) -> Snapshot:
    """Snapshot the live split, then start the new revision with no traffic."""
    snap = snapshot(backend, spec.revision)
    log.info("target %s before deploy: %s", backend.name, snap.weights or "nothing live")
    backend.start_revision(spec)
    return snap


def wait_healthy(
    backend: Backend,
    revision: str,
    th: Thresholds,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> TargetHealth:
    """Block until every target of the revision passes the LB health check; returns its TargetHealth.

    Raises DeployError when it is not healthy within `th.healthy_timeout_s` seconds."""
    deadline = clock() + th.healthy_timeout_s
    while True:
        h = backend.target_health(revision)
        if h.all_healthy:
            log.info("revision %s healthy: %d/%d targets UP", revision, h.healthy, h.total)
            return h
        if clock() >= deadline:
            raise DeployError(
                f"revision {revision} not healthy after {th.healthy_timeout_s:.0f}s: "
                f"{h.healthy}/{h.total} targets up ({dict(h.states)})"
            )
        sleep(th.poll_s)


def watch(
    backend: Backend,
    revision: str,
    seconds: float,
    th: Thresholds,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> WatchResult:
    """Watch health and the 5xx rate for `seconds`; raise DeployError at the first bad sign.

    The 5xx rate is judged over a sliding window of `th.window_s` seconds (once it holds at least
    `th.min_requests` responses), so a version that goes bad late in a long bake is caught as fast
    as one that is bad from the start; the whole period is judged once more at the end.
    """
    start_h = backend.target_health(revision)
    base_req, base_err = start_h.requests, start_h.errors_5xx
    samples: deque[tuple[float, int, int]] = deque([(clock(), base_req, base_err)])
    bad_polls = 0
    deadline = clock() + seconds
    h = start_h
    while True:
        h = backend.target_health(revision)
        now = clock()
        _, last_req, last_err = samples[-1]
        if h.requests < last_req or h.errors_5xx < last_err:
            # the counts went back (the LB restarted without saving them, see LocalBackend.save_counters):
            # keep what was watched so far, judge the window afresh from here
            log.warning(
                "revision %s counters went back (%d -> %d requests): LB restarted?", revision, last_req, h.requests
            )
            base_req, base_err = h.requests - (last_req - base_req), h.errors_5xx - (last_err - base_err)
            samples.clear()
        samples.append((now, h.requests, h.errors_5xx))
        while len(samples) > 2 and samples[1][0] <= now - th.window_s:
            samples.popleft()
        _, req0, err0 = samples[0]
        req, err = h.requests - req0, h.errors_5xx - err0
        if not h.all_healthy and err and err / req > th.max_5xx_rate:
            # a target down while answering 5xx: the LB's passive check took it out after consecutive
            # errors, which is a verdict on live traffic; no need for `min_requests` or a second poll
            raise DeployError(
                f"revision {revision} 5xx rate {err / req:.1%} over the last {req} responses "
                f"> {th.max_5xx_rate:.1%}; the load balancer took {h.total - h.healthy}/"
                f"{h.total} targets out ({dict(h.states)})"
            )
        bad_polls = bad_polls + 1 if not h.all_healthy else 0
        if bad_polls >= th.unhealthy_polls:
            raise DeployError(f"revision {revision} unhealthy: {h.healthy}/{h.total} targets up ({dict(h.states)})")
        if req >= th.min_requests and err / req > th.max_5xx_rate:
            raise DeployError(
                f"revision {revision} 5xx rate {err / req:.1%} over the last {req} responses > {th.max_5xx_rate:.1%}"
            )
        if now >= deadline:
            break
        sleep(th.poll_s)
    req, err = h.requests - base_req, h.errors_5xx - base_err
    if req and err / req > th.max_5xx_rate:  # end of the period: judge even a thin sample
        raise DeployError(f"revision {revision} 5xx rate {err / req:.1%} over {req} responses > {th.max_5xx_rate:.1%}")
    log.info(
        "revision %s watched %.0fs: %d responses, %d 5xx, %d/%d targets up",
        revision,
        seconds,
        req,
        err,
        h.healthy,
        h.total,
    )
    return WatchResult(responses=req, errors_5xx=err)


def guard(backend: Backend, new: str, snap: Snapshot) -> None:
    """Take traffic off the new revision at once (best effort: the rollback step finishes the job)."""
    others = {r: w for r, w in snap.weights.items() if r != new}
    if not others:  # nothing else to serve (a first deploy, or a service rolled in place)
        return
    live = {r for r in backend.weights()}
    if all(r in live for r in others):
        try:
            backend.set_weights({**others, new: 0})
            log.warning("guard: traffic back on %s", others)
        except Exception:  # the rollback task retries with full error reporting
            log.exception("guard could not restore weights; rollback will")


def shift(
    backend: Backend,
    new: str,
    percent: int,
    snap: Snapshot,
    th: Thresholds,
    hold_s: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> ShiftResult:
    """Give the new revision `percent` of traffic, then watch it for `hold_s` seconds.

    Raises DeployError when the revision is not all healthy before the shift, or misbehaves while watched
    (traffic is pulled back first, see `guard`)."""
    h = backend.target_health(new)
    if not h.all_healthy:
        raise DeployError(f"refusing to shift {percent}% to {new}: {h.healthy}/{h.total} targets up")
    weights = split(new, percent, snap.weights)
    # what served before stays a retry target while the new revision is watched (until finalize)
    backend.set_weights(weights, standby=[r for r, w in snap.weights.items() if w > 0 and r != new])
    try:
        result = watch(backend, new, hold_s, th, sleep=sleep) if hold_s > 0 else None
    except DeployError:
        guard(backend, new, snap)
        raise
    return ShiftResult(weights=weights, **(result or {}))


def bake(
    backend: Backend,
    new: str,
    snap: Snapshot,
    seconds: float,
    th: Thresholds,
    sleep: Callable[[float], None] = time.sleep,
) -> WatchResult:
    """Full traffic on the new revision for `seconds` while watching; guard on failure."""
    try:
        return watch(backend, new, seconds, th, sleep=sleep)
    except DeployError:
        guard(backend, new, snap)
        raise


def finalize(backend: Backend, new: str, snap: Snapshot) -> dict[str, int]:
    """All traffic to the new revision, then retire every other revision."""
    backend.set_weights({new: 100, **{r: 0 for r in backend.weights() if r != new}})
    for r in list(backend.weights()):
        if r != new:
            backend.stop_revision(r)
    return backend.weights()


def rollback(
    backend: Backend, new: str, snap: Snapshot, th: Thresholds, sleep: Callable[[float], None] = time.sleep
) -> dict[str, int]:
    """Restore the previous split with every previous revision running, then stop the new one.

    Returns the split after it (revision -> percent). Raises DeployError when a previous revision is gone
    and its spec was not recorded, or does not come back healthy; the backend's errors pass through."""
    live = backend.weights()
    for r, w in snap.weights.items():
        if r in live:
            continue
        if w <= 0:
            continue
        spec = snap.specs.get(r)
        if spec is None:
            raise DeployError(f"cannot restart previous revision {r}: its spec was not recorded")
        log.warning("previous revision %s is gone: restarting it", r)
        backend.start_revision(RevisionSpec.from_dict(spec))
        wait_healthy(backend, r, th, sleep=sleep)
    if snap.weights:
        backend.set_weights({**snap.weights, new: 0})
    backend.stop_revision(new)
    restored = backend.weights()
    log.info("rolled back target %s to %s", backend.name, restored or "nothing (first deploy)")
    return restored


# -- all steps in one process -----------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool
    revision: str
    weights: dict[str, int]
    reason: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)


def deploy(
    backend: Backend,
    spec: RevisionSpec,
    strategy: str,
    th: Thresholds,
    *,
    canary_percent: int = 10,
    canary_steps: int = 3,
    step_hold_s: float = 5.0,
    bake_s: float = 10.0,
    on_step: Callable[[str, dict], None] | None = None,
) -> Outcome:
    """Run a whole deploy with automatic rollback (the DAG runs the same steps as tasks)."""
    steps: list[dict[str, Any]] = []

    def note(step: str, **info: Any) -> None:
        entry = {"step": step, "t": time.time(), **info}
        steps.append(entry)
        if on_step:
            on_step(step, entry)

    snap = start(backend, spec)
    note("start", previous=snap.weights)
    try:
        wait_healthy(backend, spec.revision, th)
        note("healthy")
        plan = plan_steps(strategy, canary_percent, canary_steps, spec.replicas)
        for i, pct in enumerate(plan, 1):
            note(f"shifting_{i}", percent=pct)  # the moment traffic moves (shift_i notes when it is done)
            hold = step_hold_s if pct < 100 else 0.0
            res = shift(backend, spec.revision, pct, snap, th, hold_s=hold)
            note(f"shift_{i}", percent=pct, **res)
        note("bake", **bake(backend, spec.revision, snap, bake_s, th))
        weights = finalize(backend, spec.revision, snap)
        note("finalize", weights=weights)
        return Outcome(True, spec.revision, weights, steps=steps)
    except DeployError as e:
        reason = str(e)
        log.error("deploy of %s failed: %s; rolling back", spec.revision, reason)
        note("failed", reason=reason)
        weights = rollback(backend, spec.revision, snap, th)
        note("rollback", weights=weights)
        return Outcome(False, spec.revision, weights, reason=reason, steps=steps)
