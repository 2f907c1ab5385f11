"""One health verdict (deploy/health.py) for `flightdeck status` and the Deployments page.

The odd states are judged once, by `health.judge`; then each state is fed, as the same
`lineage.status` answer, to the CLI (`flightdeck status`, text and --json) and to the page (the
plugin's `collect` rendered through its template), and both must show the same verdict.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from flightdeck import cli, lineage
from flightdeck.deploy.backend import TargetHealth
from flightdeck.deploy.controller import Thresholds
from flightdeck.deploy.health import HealthVerdict, judge, of_status

V = HealthVerdict


def _h(rev: str, healthy: int, total: int, states: tuple[str, ...] = (), requests: int = 0, errors: int = 0):
    states = states or ("UP",) * healthy + ("DOWN",) * (total - healthy)
    return TargetHealth(
        revision=rev,
        total=total,
        healthy=healthy,
        states={f"fd-{rev}-{i}@s{i + 1}": s for i, s in enumerate(states)},
        requests=requests,
        errors_5xx=errors,
    )


# (id, weights, health by revision, live answered?, deployment recorded?, expected verdict, reason part)
CASES: list[tuple[str, dict[str, int], dict[str, TargetHealth], bool, bool, HealthVerdict, str]] = [
    ("healthy", {"v2": 100}, {"v2": _h("v2", 1, 1, requests=400, errors=3)}, True, True, V.HEALTHY, "v2 100%"),
    (
        "new revision at 0% still starting is not judged",
        {"v2": 100, "v3": 0},
        {"v2": _h("v2", 1, 1), "v3": _h("v3", 0, 1)},
        True,
        True,
        V.HEALTHY,
        "v2 100%",
    ),
    (
        "zero targets, LB answers from a backup",
        {"v2": 100},
        {"v2": _h("v2", 0, 0)},
        True,
        True,
        V.DEGRADED,
        "v2: no targets",
    ),
    ("zero targets, LB silent", {"v2": 100}, {"v2": _h("v2", 0, 0)}, False, True, V.DOWN, "does not answer"),
    ("some DOWN", {"v2": 100}, {"v2": _h("v2", 1, 2)}, True, True, V.DEGRADED, "v2: 1/2 targets up (DOWN)"),
    (
        "one in MAINT",
        {"v2": 100},
        {"v2": _h("v2", 1, 2, states=("UP", "MAINT"))},
        True,
        True,
        V.DEGRADED,
        "1/2 targets up (MAINT)",
    ),
    (
        "high 5xx rate",
        {"v2": 100},
        {"v2": _h("v2", 1, 1, requests=3048, errors=574)},
        True,
        True,
        V.DEGRADED,
        "v2: 5xx 18.8% of 3048 responses",
    ),
    (
        "5xx on too few responses to judge",
        {"v2": 100},
        {"v2": _h("v2", 1, 1, requests=4, errors=2)},
        True,
        True,
        V.HEALTHY,
        "",
    ),
    ("no traffic, LB silent", {"v2": 0}, {"v2": _h("v2", 1, 1)}, False, True, V.DOWN, "does not answer"),
    ("live check fails, targets up", {"v2": 100}, {"v2": _h("v2", 1, 1)}, False, True, V.DOWN, "does not answer"),
    ("nothing deployed", {}, {}, False, False, V.NONE, "nothing deployed"),
]


@pytest.mark.parametrize(
    ("case", "weights", "health", "live", "deployed", "state", "why"), CASES, ids=[c[0] for c in CASES]
)
def test_judge_names_each_odd_state(case, weights, health, live, deployed, state, why):
    v = judge(weights, health, live=live, live_error="connection refused", deployed=deployed)
    assert v.state is state, v
    assert why in v.reason, v


def test_states_with_no_live_check_or_no_live_view():
    every_target_down = {"v2": _h("v2", 0, 2)}
    assert judge({"v2": 100}, every_target_down, live=None, deployed=True).state is V.DOWN  # ECS from the CLI
    assert judge({"v2": 100}, None, live=None, deployed=True).state is V.RECORDED  # a remote target on the page
    assert judge({}, {}, live=None, traffic_error="NoCredentialsError", deployed=True).state is V.UNKNOWN
    degraded = judge({}, {}, live=True, traffic_error="docker down", deployed=True)
    assert degraded.state is V.DEGRADED and "docker down" in degraded.reason
    strict = Thresholds(max_5xx_rate=0.001, min_requests=1)
    assert (
        judge(
            {"v2": 100}, {"v2": _h("v2", 1, 1, requests=400, errors=3)}, live=True, deployed=True, thresholds=strict
        ).state
        is V.DEGRADED
    )


class _Backend:
    def __init__(self, weights: Mapping[str, int], health: Mapping[str, TargetHealth]) -> None:
        self._w, self._h = dict(weights), health

    def weights(self) -> dict[str, int]:
        return dict(self._w)

    def target_health(self, revision: str) -> TargetHealth:
        return self._h[revision]


class _Store:
    def list(self, target: str) -> list:
        return []

    def current(self, target: str) -> None:  # no record: nothing serves, so no monitor summary is looked up
        return None


def _status(weights, health, live: bool, deployed: bool) -> dict[str, Any]:
    """A `lineage.status` answer as the local target gives it, its traffic read through lineage.traffic."""
    return {
        "target": "local",
        "checked_at": "2026-11-29T22:00:00Z",
        "live": {
            "url": "http://127.0.0.1:8090/version",
            "ok": live,
            "version": {"model_name": "m", "model_version": "2", "run_id": "r2"} if live else None,
            "error": None if live else "connection refused",
        },
        "traffic": lineage.traffic(_Backend(weights, health)),
        "deployment": (
            {
                "run_id": "manual__2",
                "revision": "v2",
                "outcome": "succeeded",
                "strategy": "blue_green",
                "finished_at": "2026-11-29T21:00:00Z",
                "airflow_url": "http://127.0.0.1:8080/dags/deploy/runs/manual__2",
                "rollback": None,
            }
            if deployed
            else None
        ),
        "latest_attempt": None,
        "model": None,
        "image": None,
        "checks": {},
        "warnings": [],
        "notes": [],
    }


@pytest.fixture(scope="module")
def ui():
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "plugins"))
    import flightdeck_ui

    return flightdeck_ui


@pytest.mark.parametrize(
    ("case", "weights", "health", "live", "deployed", "state", "why"), CASES, ids=[c[0] for c in CASES]
)
def test_status_and_the_page_show_the_same_verdict(
    case, weights, health, live, deployed, state, why, ui, monkeypatch, capsys
):
    st = _status(weights, health, live, deployed)
    monkeypatch.setattr(lineage, "status", lambda *a, **k: copy.deepcopy(st))
    monkeypatch.setattr(cli, "_store", lambda s: _Store())
    monkeypatch.setattr(ui, "_targets", lambda store: ["local"])
    # the page names the backend factory it hands lineage.status (which this test replaces)
    monkeypatch.setattr(lineage, "default_backend", lambda target: None, raising=False)

    code = cli.main(["status", "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert cli.main(["status"]) == code
    text = capsys.readouterr().out
    page = ui.collect(_Store())
    html = ui.TEMPLATES.env.get_template("deployments.html").render(page)

    assert answer["verdict"] == of_status(st).to_dict()
    assert answer["verdict"]["state"] == state.value and why in answer["verdict"]["reason"]
    assert re.search(rf"^  health    {state.value}  ", text, re.M), text
    [target] = page["targets"]
    assert (target["health"], target["health_reason"]) == (state.value, answer["verdict"]["reason"])
    badge = re.search(r'data-field="health"[^>]*>([^<]*)<', html)
    assert badge and badge.group(1) == state.value
    # status exits 1 on a verdict that is not good (for NONE, lineage.status itself, replaced here,
    # warns "no finished deployment on target local")
    assert code == (0 if state in (V.HEALTHY, V.NONE) else 1), answer["warnings"]
