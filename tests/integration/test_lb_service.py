"""`python -m flightdeck.deploy.lb_service start|stop|status` (what scripts/lb.sh runs) on a private
platform LB: FLIGHTDECK_LB_URL on port 8670, slots from 8600, state in /tmp/h2-lb/svc. A stop and a
start keep the live revision, its traffic and its request counts (saved by stop)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import docker
import pytest
import requests

from flightdeck.deploy import controller as ctl
from flightdeck.deploy import lb_service
from flightdeck.deploy.backend import RevisionSpec
from flightdeck.deploy.local import platform_backend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STUB = Path(__file__).resolve().parents[2] / "bench" / "deploy" / "stub_server"
STATE = Path("/tmp/h2-lb/svc")
URL = "http://127.0.0.1:8670"
TH = ctl.Thresholds(healthy_timeout_s=15, poll_s=0.2)


@pytest.fixture()
def platform_env(monkeypatch):
    docker.from_env().images.build(path=str(STUB), tag="fd-stub:it", rm=True)
    shutil.rmtree(STATE, ignore_errors=True)
    env = {"FLIGHTDECK_STATE_DIR": str(STATE), "FLIGHTDECK_LB_URL": URL, "FLIGHTDECK_LB_SLOT_BASE": "8600"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield env
    backend = platform_backend()
    for c in backend._containers():
        c.remove(force=True)
    backend.haproxy.stop()
    shutil.rmtree(STATE, ignore_errors=True)


def _predict(n: int) -> list[str]:
    s = requests.Session()
    return [s.post(f"{URL}/predict", json={"rows": []}, timeout=5).json()["model_version"] for _ in range(n)]


def test_stop_and_start_keep_the_live_revision_and_its_counts(platform_env, capsys):
    assert lb_service.main(["status"]) == 1 and "haproxy: down" in capsys.readouterr().out
    assert lb_service.main(["start"]) == 0
    backend = platform_backend()
    assert backend.haproxy.running() and backend.lb.state_dir == STATE / "deploy" / "lb"
    assert (backend.lb.bind_port, backend.lb.slot_port(1)) == (8670, 8601)
    assert ctl.deploy(backend, RevisionSpec("v7-svc", "fd-stub:it", env={"MODEL_VERSION": "7"}), "blue_green", TH).ok
    assert _predict(4) == ["7"] * 4
    assert lb_service.main(["status"]) == 0
    assert "v7-svc: 100% traffic, 1/1 healthy" in capsys.readouterr().out
    assert backend.target_health("v7-svc").requests == 4

    assert lb_service.main(["stop"]) == 0
    out = capsys.readouterr().out
    assert "haproxy stopped" in out and "model containers stopped: 1" in out
    assert not backend.haproxy.running()
    assert backend.target_health("v7-svc").requests == 4  # saved by stop
    # the module as scripts/lb.sh and compose run it
    started = subprocess.run([sys.executable, "-m", "flightdeck.deploy.lb_service", "start"], timeout=60)
    assert started.returncode == 0
    ctl.wait_healthy(backend, "v7-svc", TH)  # resync restarted its container and put its slot back
    assert backend.weights() == {"v7-svc": 100}
    assert _predict(2) == ["7"] * 2
    h = backend.target_health("v7-svc")
    assert (h.requests, h.errors_5xx) == (6, 0), h
