"""Request and 5xx counts are per revision, not per LB slot, on a real HAProxy with real containers.

HAProxy's counters belong to a server slot and carry over from the slot's earlier occupants (2.6
cannot reset one server's). A revision that failed and was rolled back leaves its 5xx in its slot;
the next revision that takes that slot must start from zero, be judged (controller and health
verdict) on its own answers only, and keep sane counts across LB restarts. Private LB: port 8670,
slots 8601-8616 (health ports 8701-8716), state in /tmp/h2-lb/it; the stand-in image is
bench/deploy/stub_server.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from pathlib import Path

import docker
import pytest
import requests

from flightdeck.deploy import controller as ctl
from flightdeck.deploy.backend import RevisionSpec
from flightdeck.deploy.haproxy import HealthCheck, LbConfig
from flightdeck.deploy.health import HealthVerdict, judge
from flightdeck.deploy.local import LocalBackend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STUB = Path(__file__).resolve().parents[2] / "bench" / "deploy" / "stub_server"
LB_PORT = 8670
TH = ctl.Thresholds(healthy_timeout_s=10, poll_s=0.2, min_requests=10)
URL = f"http://127.0.0.1:{LB_PORT}"


@pytest.fixture(scope="module")
def backend():
    docker.from_env().images.build(path=str(STUB), tag="fd-stub:it", rm=True)
    state = Path("/tmp/h2-lb/it")
    shutil.rmtree(state, ignore_errors=True)
    lb = LbConfig(
        state_dir=state,
        bind_port=LB_PORT,
        port_base=8600,
        slots=16,
        check=HealthCheck(interval_ms=500, unhealthy_threshold=2, healthy_threshold=1),
    )
    b = LocalBackend(lb, name="h2")
    b.haproxy.start()
    yield b
    for c in b._containers():
        c.remove(force=True)
    b.haproxy.stop()
    shutil.rmtree(state, ignore_errors=True)


def _spec(version: str, **env: str) -> RevisionSpec:
    return RevisionSpec(
        revision=f"v{version}-h2", image="fd-stub:it", model_version=version, env={"MODEL_VERSION": version, **env}
    )


def _predict(n: int) -> Counter[str]:
    """n requests through the LB, one after the other: answers by model version (or status code)."""
    s = requests.Session()
    out: Counter[str] = Counter()
    for _ in range(n):
        r = s.post(f"{URL}/predict", json={"rows": []}, timeout=5)
        out[r.json()["model_version"] if r.status_code == 200 else str(r.status_code)] += 1
    return out


class Load:
    """One client posting to /predict without pause while a deploy runs."""

    def __init__(self) -> None:
        self.answers: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.answers += _predict(1)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_revision_in_a_recycled_slot_is_judged_on_its_own_answers_only(backend):
    assert ctl.deploy(backend, _spec("1"), "blue_green", TH, bake_s=0.5).ok
    # v2 answers every /predict with a 500: the canary is pulled back, its 5xx stay in its slot
    with Load() as load:
        bad = ctl.deploy(backend, _spec("2", FAIL_PREDICT="1"), "canary", TH, canary_percent=30, step_hold_s=3)
    assert not bad.ok and "5xx rate" in bad.reason, bad.reason
    assert backend.weights() == {"v1-h2": 100} and set(load.answers) == {"1"}, load.answers
    slot = min(set(range(1, 17)) - set(backend.slots("v1-h2")))  # the one v2 held, free again
    leftover = backend.haproxy.counters()[slot]
    assert leftover["hrsp_5xx"] + leftover["wretr"] >= 10, leftover  # the slot's counters hold v2's failures

    snap = ctl.start(backend, _spec("3"))
    assert backend.slots("v3-h2") == [slot]  # v3 took the slot v2 left
    ctl.wait_healthy(backend, "v3-h2", TH)
    fresh = backend.target_health("v3-h2")
    assert (fresh.requests, fresh.errors_5xx, fresh.retried) == (0, 0, 0), fresh

    ctl.shift(backend, "v3-h2", 100, snap, TH)
    answers = _predict(40)
    assert answers == {"3": 40}, answers
    h = backend.target_health("v3-h2")
    assert (h.requests, h.errors_5xx) == (40, 0), h  # exactly what it answered, none of v2's 5xx
    # the controller's watch with a zero tolerance, and the health verdict, see v3's answers only
    strict = ctl.Thresholds(poll_s=0.2, min_requests=1, max_5xx_rate=0.0)
    with Load():
        watched = ctl.watch(backend, "v3-h2", 1.5, strict)
    assert watched["responses"] > 0 and watched["errors_5xx"] == 0, watched
    h = backend.target_health("v3-h2")
    verdict = judge({"v3-h2": 100}, {"v3-h2": h}, live=True, deployed=True, thresholds=strict)
    assert verdict.state is HealthVerdict.HEALTHY, verdict
    ctl.finalize(backend, "v3-h2", snap)
    assert backend.weights() == {"v3-h2": 100}


def test_counts_survive_an_lb_restart_and_never_go_negative(backend):
    live = "v3-h2"
    assert backend.target_health(live).requests > 0
    # counters cleared under the baseline (same HAProxy process): counted from 0 again, never negative
    backend.haproxy.command("clear counters all")
    assert _predict(3) == {"3": 3}
    h = backend.target_health(live)
    assert (h.requests, h.errors_5xx) == (3, 0), h
    # an announced stop (what lb_service stop does): counts are saved and carried over the restart
    backend.save_counters()
    backend.haproxy.stop()
    assert backend.target_health(live).requests == 3  # LB down: what was saved
    backend.haproxy.start()
    backend.resync()
    ctl.wait_healthy(backend, live, TH)
    assert backend.target_health(live).requests == 3
    assert _predict(5) == {"3": 5}
    assert backend.target_health(live).requests == 8
    # an unannounced restart: HAProxy counts from 0 again, the revision from what was last saved
    backend.haproxy.stop()
    backend.haproxy.start()
    backend.resync()
    ctl.wait_healthy(backend, live, TH)
    assert _predict(2) == {"3": 2}
    h = backend.target_health(live)
    assert (h.requests, h.errors_5xx) == (3 + 2, 0), h  # the 5 between the save and the restart are lost
