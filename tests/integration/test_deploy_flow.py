"""The deploy DAG's steps (steps.Deploy) in order, as the tasks run them, without the scheduler:
real S3 records, a private HAProxy + real containers. Covers what the e2e run cannot force: a
rollback that fails and, re-run (what clearing the task does), succeeds."""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path

import docker
import pytest
import requests

from flightdeck.deploy import controller as ctl
from flightdeck.deploy import records as rec
from flightdeck.deploy.haproxy import HealthCheck, LbConfig
from flightdeck.deploy.local import LocalBackend
from flightdeck.deploy.steps import Deploy, DeployFailed, StepNotInPlan
from tests.support.records import scratch_records

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STUB = Path(__file__).resolve().parents[2] / "bench" / "deploy" / "stub_server"
PORT = 8470
FAST = {
    "target": "local",
    "model": "none",
    "strategy": "canary",
    "canary_percent": 20,
    "canary_steps": 2,
    "step_seconds": 2,
    "bake_seconds": 2,
    "healthy_timeout_seconds": 10,
    "min_requests": 5,
}


@pytest.fixture(scope="module")
def backend():
    docker.from_env().images.build(path=str(STUB), tag="fd-stub:flow", rm=True)
    state = Path("/tmp/deploy/flow-lb")
    shutil.rmtree(state, ignore_errors=True)
    b = LocalBackend(
        LbConfig(state_dir=state, bind_port=PORT, port_base=PORT, slots=6, check=HealthCheck(500, 2, 1)),
        name="flowtest",
    )
    b.haproxy.start()
    yield b
    for r in list(b.weights()):
        b.stop_revision(r)
    b.haproxy.stop()


@pytest.fixture(scope="module")
def store(platform):
    """A bucket of its own: these records describe a private LB, not the platform's live service."""
    with scratch_records("flightdeck-test-deploy-flow") as records:
        yield records


def run_steps(run_id: str, params: dict, backend, store) -> Deploy:
    d = Deploy(run_id, params, store=store, backend=backend)
    for step in (Deploy.resolve, Deploy.build, Deploy.push, Deploy.register, Deploy.start_new, Deploy.wait_healthy):
        step(d)
    for i in range(1, 5):
        try:
            d.shift(i)
        except StepNotInPlan:
            pass
    d.bake()
    return d


def test_steps_succeed_then_failed_rollback_is_retried(backend, store):
    good = f"manual__good_{uuid.uuid4().hex[:6]}"
    d = run_steps(good, {**FAST, "image": "fd-stub:flow", "env": {"MODEL_VERSION": "11"}}, backend, store)
    d.finalize()
    assert d.outcome()["outcome"] == "succeeded"
    record = store.get("local", rec.deployment_id(good))
    assert record.status.image["pinned"].startswith("sha256:") and record.status.plan == [20, 100]
    assert "finalize" in [s["step"] for s in record.status.steps] and record.outcome is rec.Outcome.SUCCEEDED
    assert [e.kind for e in record.status.events] == [rec.EventKind.STARTED, rec.EventKind.LIVE]
    live = record.status.revision
    assert backend.weights() == {live: 100}

    bad = f"manual__bad_{uuid.uuid4().hex[:6]}"
    stop = threading.Event()

    def load() -> None:
        s = requests.Session()
        while not stop.is_set():
            try:
                s.post(f"http://127.0.0.1:{PORT}/predict", json={}, timeout=2)
            except requests.RequestException:
                pass

    t = threading.Thread(target=load, daemon=True)
    t.start()
    try:
        with pytest.raises(Exception, match="5xx rate"):
            run_steps(
                bad,
                {**FAST, "image": "fd-stub:flow", "env": {"MODEL_VERSION": "12", "FAIL_PREDICT": "1"}},
                backend,
                store,
            )
    finally:
        stop.set()
        t.join()
    assert backend.weights()[live] == 100  # the failing step's guard already pulled traffic back
    d = Deploy(bad, {}, store=store, backend=backend)
    backend.haproxy.stop()  # the rollback's first try cannot reach the LB
    with pytest.raises(OSError):
        d.rollback()
    assert store.get("local", rec.deployment_id(bad)).outcome is rec.Outcome.ROLLBACK_FAILED
    backend.haproxy.start()
    backend.resync()
    out = d.rollback()  # what clearing the failed rollback task does: run it again
    assert out["restored"] == {live: 100}
    record = store.get("local", rec.deployment_id(bad))
    assert record.outcome is rec.Outcome.ROLLED_BACK and record.status.rollback["failed_step"].startswith("shift_1")
    assert [s.get("status") for s in record.status.steps if s["step"] == "rollback"] == ["failed", "ok"]
    assert [e.kind.value for e in record.status.events] == ["started", "rollback_failed", "rolled_back"]
    assert store.get("local", rec.deployment_id(good)).status.serving  # the bad run never replaced it
    with pytest.raises(DeployFailed, match="rolled_back on local: .*5xx rate"):
        d.outcome()
    ctl.wait_healthy(backend, live, ctl.Thresholds(healthy_timeout_s=10, poll_s=0.2))  # LB was restarted
    assert requests.get(f"http://127.0.0.1:{PORT}/version", timeout=5).json()["model_version"] == "11"
