"""The local target for real: containers on the Docker engine behind a private HAProxy (own port
range 8430-8438, own runtime socket), active /readyz checks, weights through the runtime API.
The stand-in image (bench/deploy/stub_server) has knobs to never become ready or fail /predict.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import docker
import pytest
import requests

from flightdeck import images
from flightdeck import settings as settings_mod
from flightdeck.deploy import controller as ctl
from flightdeck.deploy.backend import RevisionSpec
from flightdeck.deploy.haproxy import HealthCheck, LbConfig
from flightdeck.deploy.local import LocalBackend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STUB = Path(__file__).resolve().parents[2] / "bench" / "deploy" / "stub_server"
LB_PORT = 8430
TH = ctl.Thresholds(healthy_timeout_s=10, poll_s=0.2, min_requests=10)


@pytest.fixture(scope="module")
def image() -> str:
    client = docker.from_env()
    client.images.build(path=str(STUB), tag="fd-stub:it", rm=True)
    return "fd-stub:it"


@pytest.fixture(scope="module")
def backend(image):
    state = Path("/tmp/deploy/it-lb")
    shutil.rmtree(state, ignore_errors=True)
    lb = LbConfig(state_dir=state, bind_port=LB_PORT, port_base=LB_PORT, slots=8,
                  check=HealthCheck(interval_ms=500, unhealthy_threshold=2, healthy_threshold=1))
    b = LocalBackend(lb, name="it")
    b.haproxy.start()
    yield b
    for revision in list(b.weights()):
        b.stop_revision(revision)
    b.haproxy.stop()


def _spec(image: str, version: str, **env: str) -> RevisionSpec:
    return RevisionSpec(revision=f"v{version}-it", image=image, model_version=version,
                        env={"MODEL_VERSION": version, **env})


class Load:
    """A client hammering /predict through the LB; counts answers per version and failures."""

    def __init__(self) -> None:
        self.ok: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        s = requests.Session()
        while not self._stop.is_set():
            try:
                r = s.post(f"http://127.0.0.1:{LB_PORT}/predict", json={"rows": []}, timeout=5)
                if r.status_code == 200:
                    self.ok[r.json()["model_version"]] += 1
                else:
                    self.failed[str(r.status_code)] += 1
            except requests.RequestException as e:
                self.failed[type(e).__name__] += 1

    def __enter__(self) -> Load:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def _version() -> str:
    return requests.get(f"http://127.0.0.1:{LB_PORT}/version", timeout=5).json()["model_version"]


def test_blue_green_switch_loses_no_request(backend, image):
    out = ctl.deploy(backend, _spec(image, "1"), "blue_green", TH, bake_s=0.5)
    assert out.ok and _version() == "1"
    with Load() as load:
        time.sleep(0.5)
        out = ctl.deploy(backend, _spec(image, "2"), "blue_green", TH, bake_s=1)
        time.sleep(0.5)
    assert out.ok, out.reason
    assert backend.weights() == {"v2-it": 100}
    assert sum(load.failed.values()) == 0, load.failed
    assert load.ok["1"] > 0 and load.ok["2"] > 0, load.ok
    assert [c.name for c in backend._containers()] == [f"fd-it-{backend.lb.bind_port}-v2-it-0"]  # v1 retired


def test_never_ready_revision_never_gets_traffic(backend, image):
    with Load() as load:
        out = ctl.deploy(backend, _spec(image, "3", NEVER_READY="1"), "blue_green",
                         ctl.Thresholds(healthy_timeout_s=3, poll_s=0.2))
    assert not out.ok and "not healthy" in out.reason
    assert backend.weights() == {"v2-it": 100}
    assert sum(load.failed.values()) == 0 and set(load.ok) == {"2"}, (load.ok, load.failed)
    assert not backend._containers("v3-it")


def test_canary_failing_predict_is_pulled_back(backend, image):
    with Load() as load:
        out = ctl.deploy(backend, _spec(image, "4", FAIL_PREDICT="1"), "canary", TH, canary_percent=20,
                         canary_steps=3, step_hold_s=3)
        after = sum(load.failed.values())
        time.sleep(1)
    assert not out.ok and "5xx rate" in out.reason
    assert [s["step"] for s in out.steps][-2:] == ["failed", "rollback"]
    assert backend.weights() == {"v2-it": 100} and _version() == "2"
    assert 0 < load.failed["500"] < 0.5 * (load.failed["500"] + load.ok["2"]), (load.ok, load.failed)
    assert sum(load.failed.values()) == after  # nothing failed once the rollback finished


def test_lb_takes_a_server_answering_5xx_out_after_error_limit(backend, image):
    """HAProxy's passive check (observe layer7): consecutive 5xx on live traffic mark the server down
    at once, without waiting for an active /readyz check (which this revision passes)."""
    snap = ctl.start(backend, _spec(image, "6", FAIL_PREDICT="1"))
    try:
        ctl.wait_healthy(backend, "v6-it", TH)
        backend.set_weights({"v2-it": 50, "v6-it": 50})
        s, failed, ok = requests.Session(), 0, 0
        while failed < backend.lb.check.error_limit and ok < 100:
            try:
                good = s.post(f"http://127.0.0.1:{LB_PORT}/predict", json={"rows": []}, timeout=5).ok
            except requests.RequestException:  # the session that tripped the limit is cut mid-answer
                good = False
            failed, ok = failed + (not good), ok + good
        assert failed == backend.lb.check.error_limit and ok <= failed + 1, (ok, failed)
        # down after the 5th error, not at the next active check (which /readyz passes: then it is
        # back in until the next 5 errors; the deploy watcher has rolled back by then)
        assert backend.target_health("v6-it").healthy == 0
    finally:
        ctl.rollback(backend, "v6-it", snap, TH)
    assert backend.weights() == {"v2-it": 100}


def test_rollback_restarts_a_retired_previous_revision(backend, image):
    snap = ctl.start(backend, _spec(image, "5"))
    ctl.wait_healthy(backend, "v5-it", TH)
    ctl.shift(backend, "v5-it", 100, snap, TH)
    ctl.finalize(backend, "v5-it", snap)
    assert backend.weights() == {"v5-it": 100} and not backend._containers("v2-it")
    restored = ctl.rollback(backend, "v5-it", snap, TH)
    assert restored == {"v2-it": 100} and _version() == "2"


def test_lb_restart_puts_the_split_back(backend, image):
    backend.haproxy.stop()
    with pytest.raises(requests.ConnectionError):
        _version()
    backend.haproxy.start()
    backend.resync()
    ctl.wait_healthy(backend, "v2-it", TH)
    assert _version() == "2"


def test_image_build_labels_reuse_and_push(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text(f"flavors: {{}}\nuuid: {uuid.uuid4()}\n")  # new inputs every run
    model = images.ModelRef(name="deploy-it-model", version="7", run_id="r123", data_version="d456")
    registry = settings_mod.load().registry
    built = images.build_image(model, registry=registry, model_dir=model_dir, dockerfile=STUB / "Dockerfile",
                               target=None, sha="0123456789abcdef")
    assert built.tag == f"{registry}/deploy-it-model:v7-0123456"
    labels = docker.from_env().images.get(built.image_id).labels
    assert labels["org.opencontainers.image.revision"] == "0123456789abcdef"
    assert labels["org.flightdeck.model.version"] == "7" and labels["org.flightdeck.data.version"] == "d456"
    assert not built.reused and labels[images.LABEL_INPUTS] == built.inputs_hash
    again = images.build_image(model, registry=registry, model_dir=model_dir, dockerfile=STUB / "Dockerfile",
                               target=None, sha="0123456789abcdef")
    assert again.reused and again.image_id == built.image_id
    (model_dir / "MLmodel").write_text(f"flavors: {{changed: 1}}\nuuid: {uuid.uuid4()}\n")
    changed = images.build_image(model, registry=registry, model_dir=model_dir, dockerfile=STUB / "Dockerfile",
                                 target=None, sha="0123456789abcdef")
    assert not changed.reused and changed.inputs_hash != built.inputs_hash
    pushed = images.push_image(changed)
    assert pushed.digest.startswith("sha256:")
    assert docker.from_env().images.get_registry_data(changed.tag).id == pushed.digest
    assert not images.push_image(images.BuiltImage.from_dict(changed.to_dict())).pushed  # already there


def test_previous_revision_is_a_hot_backup_until_finalize(backend, image):
    """Blue/green at 100% new / 0% old: if the new revision's only server dies, HAProxy falls back to
    the old one (its backup twin) instead of answering 503, until finalize retires it."""
    live = next(iter(backend.weights()))
    old_version = _version()
    snap = ctl.start(backend, _spec(image, "8"))
    ctl.wait_healthy(backend, "v8-it", TH)
    ctl.shift(backend, "v8-it", 100, snap, TH)
    time.sleep(1.5)  # the backup twin passes its checks
    assert _version() == "8"
    for c in backend._containers("v8-it"):
        c.kill()
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        r = requests.get(f"http://127.0.0.1:{LB_PORT}/version", timeout=5)
        if r.status_code == 200 and r.json()["model_version"] == old_version:
            break
        time.sleep(0.2)
    assert r.status_code == 200 and r.json()["model_version"] == old_version
    assert ctl.rollback(backend, "v8-it", snap, TH) == {live: 100}


def test_rerunning_start_on_the_live_revision_costs_no_request(backend, image):
    """A cleared start_new of the revision that is live adopts it; it must not reset its health."""
    live = next(iter(backend.weights()))
    with Load() as load:
        time.sleep(0.5)
        backend.start_revision(backend.spec(live))
        backend.set_weights({live: 100})
        time.sleep(2.5)  # longer than fall x inter: a reset would have shown as 503s
    assert sum(load.failed.values()) == 0, load.failed
    assert sum(load.ok.values()) > 0
