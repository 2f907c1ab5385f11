"""The controller's watch when a revision's counts go back mid-watch (an LB restart that did not save them)."""

from __future__ import annotations

from flightdeck.deploy import controller as ctl
from flightdeck.deploy.backend import TargetHealth


class Counts:
    """One healthy revision whose request/5xx counts the test moves poll by poll."""

    name = "counts"

    def __init__(self, requests: int, errors: int) -> None:
        self.now = (requests, errors)

    def target_health(self, revision: str) -> TargetHealth:
        return TargetHealth(revision, 1, 1, requests=self.now[0], errors_5xx=self.now[1])


def test_counts_that_go_back_are_not_a_negative_or_spurious_5xx_rate():
    # before the restart: many requests and 5xx counted before the watch began (not this watch's)
    b = Counts(1000, 600)
    polls = {"n": 0}

    def traffic(_: float) -> None:
        polls["n"] += 1
        req, err = b.now
        # poll 3: the LB restarts and counts from 0; every poll 20 good answers
        b.now = (20, 0) if polls["n"] == 3 else (req + 20, err)

    ticks = iter(range(100000))
    th = ctl.Thresholds(poll_s=0.01, min_requests=10, max_5xx_rate=0.05, window_s=0.05)
    out = ctl.watch(b, "v1", 0.2, th, sleep=traffic, clock=lambda: next(ticks) * 0.01)
    # 20 answers a poll, less the 20 lost between the last read before the restart and the restart;
    # without the reset the final judgement saw -600 5xx over -980 responses and failed the deploy
    assert out == {"responses": 20 * (polls["n"] - 1), "errors_5xx": 0}, out
