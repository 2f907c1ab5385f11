"""Continuous deployment, opt-in: each new champion becomes a deploy run without a person.

The retrain DAG's promote task updates the Asset `flightdeck://models/champion` with the model's name and
version; the continuous_deploy DAG is scheduled on it and hands each event to `deploy_confs`, which turns it
into the deploy DAG's conf from params.yaml `continuous_deploy` (canary by default), or into nothing while
`continuous_deploy.enabled` is false. The deploy run is the one a person would start: the same gates,
health checks and automatic rollback, and its `require_approval` Param still holds a canary for approval.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from flightdeck.monitoring.config import ContinuousDeployConfig

log = logging.getLogger(__name__)


class DeployConf(TypedDict):
    """The deploy DAG conf a champion event becomes (its Params, see deploy/params.py)."""

    model: str  # the promoted version number, pinned (not the alias, which may move again)
    model_name: str
    target: str
    strategy: str
    canary_percent: int
    canary_steps: int
    bake_seconds: int


def deploy_confs(events: Iterable[Mapping[str, Any]], cfg: ContinuousDeployConfig) -> list[DeployConf]:
    """One deploy conf per model in the champion events' extras (`model_name`, `version`), the newest version of
    each model only; [] when continuous deployment is off. Events without a model name or version are skipped."""
    if not cfg.enabled:
        log.info("continuous deployment is off (params.yaml continuous_deploy.enabled): nothing deploys")
        return []
    newest: dict[str, int] = {}
    for extra in events:
        name, version = str(extra.get("model_name") or ""), str(extra.get("version") or "")
        if not name or not version.isdigit():
            log.warning("champion event without a model name and version: %s", dict(extra))
            continue
        newest[name] = max(newest.get(name, 0), int(version))
    confs = [
        DeployConf(
            model=str(version),
            model_name=name,
            target=cfg.target,
            strategy=cfg.strategy,
            canary_percent=cfg.canary_percent,
            canary_steps=cfg.canary_steps,
            bake_seconds=cfg.bake_seconds,
        )
        for name, version in sorted(newest.items())
    ]
    for conf in confs:
        log.info("deploying %s v%s to %s with %s", conf["model_name"], conf["model"], conf["target"], conf["strategy"])
    return confs
