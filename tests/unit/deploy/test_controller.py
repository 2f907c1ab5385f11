"""Controller logic over an in-memory backend (the real backends have their own integration tests)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import pytest

from flightdeck.deploy import controller as ctl
from flightdeck.deploy.backend import RevisionSpec, TargetHealth


class MemoryBackend:
    """Targets that are healthy unless told otherwise; counts requests the test says were served."""

    name = "memory"
    rolls_in_place = False

    def __init__(self) -> None:
        self.running: dict[str, RevisionSpec] = {}
        self.remembered: dict[str, RevisionSpec] = {}
        self.w: dict[str, int] = {}
        self.unhealthy: set[str] = set()
        self.counters: dict[str, tuple[int, int]] = {}
        self.history: list[dict[str, int]] = []
        self.standby: list[list[str]] = []  # the standby argument of each set_weights call

    def start_revision(self, spec: RevisionSpec) -> None:
        self.running[spec.revision] = self.remembered[spec.revision] = spec
        self.w.setdefault(spec.revision, 0)

    def target_health(self, revision: str) -> TargetHealth:
        spec = self.running.get(revision)
        total = spec.replicas if spec else 0
        healthy = 0 if revision in self.unhealthy or spec is None else total
        req, err = self.counters.get(revision, (0, 0))
        return TargetHealth(revision, total, healthy, requests=req, errors_5xx=err)

    def set_weights(self, weights: Mapping[str, int], standby: Collection[str] = ()) -> None:
        self.standby.append(sorted(standby))
        for r, p in weights.items():
            if r not in self.running and p > 0:
                raise RuntimeError(f"{r} not running")
            if r in self.running:
                self.w[r] = p
        self.history.append(dict(self.w))

    def stop_revision(self, revision: str) -> None:
        self.running.pop(revision, None)
        self.w.pop(revision, None)

    def weights(self) -> dict[str, int]:
        return dict(sorted(self.w.items()))

    def spec(self, revision: str) -> RevisionSpec | None:
        return self.remembered.get(revision)


TH = ctl.Thresholds(healthy_timeout_s=0.05, poll_s=0.01, min_requests=10, unhealthy_polls=2)
NOSLEEP = {"sleep": lambda s: None}


def spec(v: str, replicas: int = 1) -> RevisionSpec:
    return RevisionSpec(revision=f"v{v}", image=f"img@sha256:{v}", model_version=v, replicas=replicas)


@pytest.mark.parametrize(
    ("strategy", "pct", "steps", "replicas", "plan"),
    [
        ("blue_green", 10, 3, 1, [100]),
        ("canary", 10, 3, 1, [10, 55, 100]),
        ("canary", 20, 3, 1, [20, 60, 100]),
        ("canary", 25, 4, 1, [25, 50, 75, 100]),
        ("canary", 10, 1, 1, [100]),
        ("canary", 100, 3, 1, [100]),
        ("rolling", 10, 3, 4, [25, 50, 75, 100]),
        ("rolling", 10, 3, 1, [100]),
    ],
)
def test_plan_steps(strategy, pct, steps, replicas, plan):
    assert ctl.plan_steps(strategy, pct, steps, replicas) == plan


def test_plan_rejects_unknown_strategy():
    with pytest.raises(ValueError, match="unknown strategy"):
        ctl.plan_steps("big_bang")


def test_split_shares_the_rest_by_previous_weights():
    assert ctl.split("new", 10, {"a": 100}) == {"new": 10, "a": 90}
    assert ctl.split("new", 40, {"a": 75, "b": 25}) == {"new": 40, "a": 45, "b": 15}
    assert sum(ctl.split("new", 33, {"a": 1, "b": 1, "c": 1}).values()) == 100
    assert ctl.split("new", 10, {}) == {"new": 100}  # first deploy: nothing else can serve
    assert ctl.split("new", 10, {"a": 0, "new": 50}) == {"new": 100}  # zero-weight leftovers ignored


def test_blue_green_then_rollback_on_5xx_during_bake():
    b = MemoryBackend()
    assert ctl.deploy(b, spec("1"), "blue_green", TH, bake_s=0, **{}).ok
    snap = ctl.start(b, spec("2"))
    assert snap.weights == {"v1": 100} and snap.specs["v1"]["image"] == "img@sha256:1"
    ctl.wait_healthy(b, "v2", TH, **NOSLEEP)
    ctl.shift(b, "v2", 100, snap, TH)
    assert b.weights() == {"v1": 0, "v2": 100}
    b.counters["v2"] = (0, 0)

    ticks = iter(range(1000))
    clock = lambda: next(ticks) * 0.01  # noqa: E731

    def serve_errors(_: float) -> None:  # each poll the LB saw 20 more answers, 5 of them 5xx
        req, err = b.counters["v2"]
        b.counters["v2"] = (req + 20, err + 5)

    with pytest.raises(ctl.DeployError, match="5xx rate 25.0%"):
        ctl.watch(b, "v2", 10, TH, sleep=serve_errors, clock=clock)
    with pytest.raises(ctl.DeployError):
        ctl.bake(b, "v2", snap, 10, TH, sleep=serve_errors)
    assert b.weights() == {"v1": 100, "v2": 0}  # the guard pulled traffic back at once
    assert ctl.rollback(b, "v2", snap, TH, **NOSLEEP) == {"v1": 100}
    assert "v2" not in b.running


def test_never_healthy_fails_wait_and_rollback_keeps_old():
    b = MemoryBackend()
    ctl.deploy(b, spec("1"), "blue_green", TH, bake_s=0)
    b.unhealthy.add("v2")
    out = ctl.deploy(b, spec("2"), "canary", TH, bake_s=0, step_hold_s=0)
    assert not out.ok and "not healthy" in out.reason
    assert b.weights() == {"v1": 100}
    assert all(h.get("v2", 0) == 0 for h in b.history)  # never any traffic


def test_shift_refuses_an_unhealthy_revision():
    b = MemoryBackend()
    ctl.deploy(b, spec("1"), "blue_green", TH, bake_s=0)
    snap = ctl.start(b, spec("2"))
    b.unhealthy.add("v2")
    with pytest.raises(ctl.DeployError, match="refusing to shift"):
        ctl.shift(b, "v2", 10, snap, TH)


def test_unhealthy_needs_consecutive_polls():
    b = MemoryBackend()
    ctl.deploy(b, spec("1"), "blue_green", TH, bake_s=0)
    flips = iter([True, False, True, False, True, False])

    def flap(_: float) -> None:
        (b.unhealthy.add if next(flips, False) else b.unhealthy.discard)("v1")

    ticks = iter(range(1000))
    ctl.watch(b, "v1", 0.05, TH, sleep=flap, clock=lambda: next(ticks) * 0.01)  # flapping: no failure

    def down(_: float) -> None:
        b.unhealthy.add("v1")

    with pytest.raises(ctl.DeployError, match="unhealthy"):
        ctl.watch(b, "v1", 10, TH, sleep=down)


def test_rollback_restarts_a_retired_previous_revision():
    b = MemoryBackend()
    ctl.deploy(b, spec("1"), "blue_green", TH, bake_s=0)
    out = ctl.deploy(b, spec("2"), "blue_green", TH, bake_s=0)
    assert out.ok and b.weights() == {"v2": 100}
    # a later failure of v2's run (e.g. finalize cleared and failing) rolls back to v1's snapshot
    snap = ctl.Snapshot(weights={"v1": 100}, specs={"v1": spec("1").to_dict()})
    assert ctl.rollback(b, "v2", snap, TH, **NOSLEEP) == {"v1": 100}
    assert b.running["v1"].image == "img@sha256:1"


def test_rollback_without_a_recorded_spec_says_why():
    b = MemoryBackend()
    b.start_revision(spec("2"))
    with pytest.raises(ctl.DeployError, match="spec was not recorded"):
        ctl.rollback(b, "v2", ctl.Snapshot(weights={"v1": 100}), TH, **NOSLEEP)


def test_first_deploy_rollback_leaves_nothing_running():
    b = MemoryBackend()
    b.unhealthy.add("v1")
    out = ctl.deploy(b, spec("1"), "blue_green", TH, bake_s=0)
    assert not out.ok and b.weights() == {} and not b.running


def test_thresholds_from_params_cast_types():
    th = ctl.Thresholds.from_dict({"max_5xx_rate": "0.1", "min_requests": "5", "other": 1})
    assert th.max_5xx_rate == 0.1 and th.min_requests == 5


def test_late_breakage_is_judged_over_a_sliding_window():
    b = MemoryBackend()
    ctl.deploy(b, spec("1"), "blue_green", TH, bake_s=0)
    b.counters["v1"] = (0, 0)
    polls = {"n": 0}

    def traffic(_: float) -> None:  # 200 good polls, then every answer is a 5xx
        polls["n"] += 1
        req, err = b.counters["v1"]
        b.counters["v1"] = (req + 20, err + (20 if polls["n"] > 200 else 0))

    ticks = iter(range(100000))
    th = ctl.Thresholds(poll_s=0.01, min_requests=10, max_5xx_rate=0.05, window_s=0.05)
    with pytest.raises(ctl.DeployError, match="5xx rate"):
        ctl.watch(b, "v1", 100, th, sleep=traffic, clock=lambda: next(ticks) * 0.01)
    # cumulative since the start it would take 11 more polls to cross 5%; the window sees it at once
    assert 200 < polls["n"] <= 202


def test_target_taken_out_by_the_lb_while_failing_ends_the_watch_at_once():
    """The LB's passive check marks a canary down after a few consecutive 5xx: one poll is enough,
    with fewer answers than `min_requests` (the canary's failed requests stay a handful)."""
    b = MemoryBackend()
    ctl.deploy(b, spec("1"), "blue_green", TH, bake_s=0)
    b.counters["v1"] = (100, 0)

    def lb_marks_down(_: float) -> None:
        b.counters["v1"] = (106, 5)
        b.unhealthy.add("v1")

    polls = []
    with pytest.raises(ctl.DeployError, match=r"5xx rate 83.3% over the last 6 responses.*took 1/1 targets out"):
        ctl.watch(b, "v1", 100, TH, sleep=lambda s: (polls.append(s), lb_marks_down(s)))
    assert len(polls) == 1  # judged on the first poll that saw it, not after `unhealthy_polls`


def test_a_target_down_without_5xx_still_needs_consecutive_polls():
    b = MemoryBackend()
    ctl.deploy(b, spec("1"), "blue_green", TH, bake_s=0)
    b.unhealthy.add("v1")
    polls = []
    with pytest.raises(ctl.DeployError, match="unhealthy: 0/1 targets up"):
        ctl.watch(b, "v1", 100, TH, sleep=polls.append)
    assert len(polls) == TH.unhealthy_polls - 1


def test_previous_revision_is_a_retry_standby_while_the_new_one_is_watched_and_never_after():
    b = MemoryBackend()
    assert ctl.deploy(b, spec("1"), "blue_green", TH, bake_s=0).ok
    snap = ctl.start(b, spec("2"))
    ctl.wait_healthy(b, "v2", TH, **NOSLEEP)
    b.standby.clear()
    ctl.shift(b, "v2", 10, snap, TH)
    ctl.shift(b, "v2", 100, snap, TH)
    assert b.standby == [["v1"], ["v1"]]  # v1 takes the retries of v2's failures at 10% and at 100%
    ctl.guard(b, "v2", snap)
    ctl.finalize(b, "v2", snap)
    # the guard sends traffic back and finalize retires v1: neither names a standby
    assert b.standby[2:] == [[], []]
