"""One health verdict for a deploy target, the same for `flightdeck status` and the Deployments page.

Inputs are what both already read: the traffic split, each revision's TargetHealth from the
backend, whether the load balancer answered the live check, and whether a deployment is recorded.
Only revisions with traffic are judged (a new revision at 0% being checked is not a problem); their
5xx rate uses the controller's thresholds over the revision's own counts (see TargetHealth).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from flightdeck.deploy.backend import TargetHealth
from flightdeck.deploy.controller import Thresholds


class HealthVerdict(StrEnum):
    """A target's health in one word (the page's badge, the first word of status's `health` line)."""

    HEALTHY = "healthy"  # the LB answers, every revision with traffic has all its targets up, 5xx rate low
    DEGRADED = "degraded"  # clients are answered, but a target is down/in maintenance or the 5xx rate is high
    DOWN = "down"  # the LB does not answer, or no revision with traffic has a target up
    UNKNOWN = "unknown"  # the backend could not be read and no live check was made
    RECORDED = "recorded"  # no live view of this target: only the split its last deployment recorded
    NONE = "none"  # nothing deployed and nothing serving


@dataclass(frozen=True)
class Verdict:
    """A HealthVerdict and the reason for it, one line a person can act on."""

    state: HealthVerdict
    reason: str

    def to_dict(self) -> dict[str, str]:
        """{"state": "healthy"|..., "reason": str}: what `status --json` and the page's JSON carry."""
        return {"state": self.state.value, "reason": self.reason}


def _rate(h: TargetHealth) -> float:
    return h.errors_5xx / h.requests if h.requests else 0.0


def judge(
    weights: Mapping[str, int],
    health: Mapping[str, TargetHealth] | None,
    *,
    live: bool | None,
    live_error: str = "",
    traffic_error: str = "",
    deployed: bool = False,
    thresholds: Thresholds | None = None,
) -> Verdict:
    """The verdict for one target.

    weights: revision -> traffic percent (0..100) as the backend reports it (or as recorded);
    health: revision -> TargetHealth, or None when there is no live view of the target (the split
    is only the recorded one); live: True/False when the load balancer's /version was asked and
    answered/failed (`live_error` says why), None when no live check was made (a remote target);
    traffic_error: why the backend could not be read ("" when it was); deployed: a finished
    deployment is recorded for the target; thresholds: `max_5xx_rate` (a fraction) and
    `min_requests` (responses needed to judge a rate), the controller's defaults when None.
    Raises nothing: every odd state is a verdict.
    """
    th = thresholds or Thresholds()
    serving = {r: w for r, w in weights.items() if w > 0}
    if not deployed and not serving and live is not True:
        why = f"; traffic unknown: {traffic_error}" if traffic_error else ""
        return Verdict(HealthVerdict.NONE, f"nothing deployed on this target{why}")
    if health is None:
        if serving:
            split = ", ".join(f"{r} {w}%" for r, w in sorted(serving.items()))
            return Verdict(HealthVerdict.RECORDED, f"no live view; the last deployment recorded {split}")
        return Verdict(HealthVerdict.DOWN, "the last deployment recorded no revision with traffic")
    problems = [] if traffic_error else _problems(serving, health, th)
    if live is False:
        problems.insert(0, f"the load balancer does not answer: {live_error or 'no answer'}")
        return Verdict(HealthVerdict.DOWN, "; ".join(problems))
    if traffic_error:
        if live:
            return Verdict(
                HealthVerdict.DEGRADED, f"the load balancer answers, but traffic is unknown: {traffic_error}"
            )
        return Verdict(HealthVerdict.UNKNOWN, f"traffic unknown: {traffic_error}")
    if not serving:
        idle = f" ({len(weights)} running at 0%)" if weights else ""
        if live:
            return Verdict(HealthVerdict.DEGRADED, f"no revision has a traffic weight{idle}: a backup answers")
        return Verdict(HealthVerdict.DOWN, f"no revision has traffic{idle}")
    dead = [r for r in serving if r in health and health[r].healthy == 0]
    if len(dead) == len(serving) and not live:
        return Verdict(HealthVerdict.DOWN, "; ".join(problems))
    if problems:
        return Verdict(HealthVerdict.DEGRADED, "; ".join(problems))
    parts = []
    for rev in sorted(serving):
        h = health[rev]
        parts.append(f"{rev} {serving[rev]}%: {h.healthy}/{h.total} up, 5xx {h.errors_5xx}/{h.requests}")
    return Verdict(HealthVerdict.HEALTHY, "; ".join(parts))


def _problems(serving: Mapping[str, int], health: Mapping[str, TargetHealth], th: Thresholds) -> list[str]:
    """What is wrong with the revisions that have traffic, one phrase each."""
    problems: list[str] = []
    for rev in sorted(serving):
        h = health.get(rev)
        if h is None:
            problems.append(f"{rev}: no health reported")
            continue
        not_up = sorted({s for s in h.states.values() if s != "UP" and not s.startswith("UP ")})
        if h.total == 0:
            problems.append(f"{rev}: no targets")
        elif h.healthy < h.total:
            problems.append(f"{rev}: {h.healthy}/{h.total} targets up" + (f" ({', '.join(not_up)})" if not_up else ""))
        if h.requests >= th.min_requests and _rate(h) > th.max_5xx_rate:
            retried = f", {h.retried} retried elsewhere" if h.retried else ""
            problems.append(
                f"{rev}: 5xx {_rate(h):.1%} of {h.requests} responses ({h.errors_5xx}{retried}) > {th.max_5xx_rate:.1%}"
            )
    return problems


_HEALTH_FIELDS = {f.name for f in fields(TargetHealth)} - {"revision"}


def of_status(st: Mapping[str, Any], thresholds: Thresholds | None = None) -> Verdict:
    """The verdict for a `flightdeck.lineage.status` answer (what the CLI prints and the page shows).

    Reads st["traffic"] ({"weights", "health": {rev: TargetHealth fields}, "error", and "recorded":
    True when the page put the recorded split there}), st["live"] ({"url", "ok", "error"}; an
    empty url means no live check was made) and st["deployment"] (None when nothing is recorded).
    Raises KeyError when `st` lacks those keys.
    """
    traffic = st["traffic"]
    live = st["live"]
    recorded = bool(traffic.get("recorded"))
    health = (
        None
        if recorded
        else {
            rev: TargetHealth(revision=rev, **{k: v for k, v in h.items() if k in _HEALTH_FIELDS})
            for rev, h in (traffic.get("health") or {}).items()
        }
    )
    return judge(
        traffic.get("weights") or {},
        health,
        live=bool(live["ok"]) if live.get("url") else None,
        live_error=live.get("error") or "",
        traffic_error="" if recorded else traffic.get("error") or "",
        deployed=st["deployment"] is not None,
        thresholds=thresholds,
    )
