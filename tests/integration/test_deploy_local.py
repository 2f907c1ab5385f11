"""The local target for real: containers on the Docker engine behind a private HAProxy (own port
range 8430-8438, own runtime socket), active /readyz checks, weights through the runtime API.
The stand-in image (bench/deploy/stub_server) has knobs to never become ready or fail /predict.
"""

from __future__ import annotations

import functools
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
from flightdeck.deploy.haproxy import HAProxy, HealthCheck, LbConfig
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
    lb = LbConfig(
        state_dir=state,
        bind_port=LB_PORT,
        port_base=LB_PORT,
        slots=8,
        check=HealthCheck(interval_ms=500, unhealthy_threshold=2, healthy_threshold=1),
    )
    b = LocalBackend(lb, name="it")
    b.haproxy.start()
    yield b
    for revision in list(b.weights()):
        b.stop_revision(revision)
    b.haproxy.stop()


def _spec(image: str, version: str, **env: str) -> RevisionSpec:
    return RevisionSpec(
        revision=f"v{version}-it", image=image, model_version=version, env={"MODEL_VERSION": version, **env}
    )


class Load:
    """Clients hammering /predict through the LB; counts answers per version and failures, and the
    requests the LB retried on another server (HAProxy's `wretr`) while it ran."""

    def __init__(self, clients: int = 1) -> None:
        self.ok: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.retried = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

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
        self._retried0 = _lb_retries()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self.retried = _lb_retries() - self._retried0


def _lb_retries() -> int:
    lb = LbConfig(state_dir=Path("/tmp/deploy/it-lb"), bind_port=LB_PORT, port_base=LB_PORT, slots=8)
    return int(HAProxy(lb).backend_stats()["wretr"])


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
        out = ctl.deploy(
            backend, _spec(image, "3", NEVER_READY="1"), "blue_green", ctl.Thresholds(healthy_timeout_s=3, poll_s=0.2)
        )
    assert not out.ok and "not healthy" in out.reason
    assert backend.weights() == {"v2-it": 100}
    assert sum(load.failed.values()) == 0 and set(load.ok) == {"2"}, (load.ok, load.failed)
    assert not backend._containers("v3-it")


def test_canary_failing_predict_is_pulled_back_with_no_failure_seen_by_clients(backend, image):
    """Every request v4 fails is retried by the LB on v2 (redispatch): clients see none of them, and
    the watcher, which counts v4's own failures (retried ones included), still rolls back."""
    with Load() as load:
        out = ctl.deploy(
            backend, _spec(image, "4", FAIL_PREDICT="1"), "canary", TH, canary_percent=20, canary_steps=3, step_hold_s=3
        )
        time.sleep(1)
    assert not out.ok and "5xx rate" in out.reason
    assert [s["step"] for s in out.steps][-2:] == ["failed", "rollback"]
    assert backend.weights() == {"v2-it": 100} and _version() == "2"
    assert sum(load.failed.values()) == 0 and set(load.ok) == {"2"}, (load.ok, load.failed)
    assert load.retried > 0, load.retried


def test_blue_green_under_saturating_load_loses_no_request(backend, image):
    """Eight clients without pause against a model that takes 50 ms a request: the switch to the new
    revision, its bake and the retirement of the old one cost no request."""
    assert ctl.deploy(backend, _spec(image, "9", PREDICT_DELAY_S="0.05"), "blue_green", TH, bake_s=0.5).ok
    with Load(clients=8) as load:
        time.sleep(1.0)
        out = ctl.deploy(backend, _spec(image, "10", PREDICT_DELAY_S="0.05"), "blue_green", TH, bake_s=1)
        time.sleep(1.5)
    assert out.ok, out.reason
    assert sum(load.failed.values()) == 0, load.failed
    assert load.ok["10"] > 20, load.ok
    assert ctl.deploy(backend, _spec(image, "2"), "blue_green", TH, bake_s=0.5).ok  # what the next tests expect


def test_failed_requests_are_retried_on_another_revision_and_counted_against_the_failing_one(backend, image):
    """A server answering 5xx next to a healthy one: the LB retries each failed request on the other
    server (`retry-on` 5xx with `option redispatch`), so no client sees the error; HAProxy counts it
    in the failing server's `wretr`, which target_health reports as that revision's 5xx."""
    snap = ctl.start(backend, _spec(image, "6", FAIL_PREDICT="1"))
    try:
        ctl.wait_healthy(backend, "v6-it", TH)
        before = backend.target_health("v6-it")
        backend.set_weights({"v2-it": 50, "v6-it": 50})
        s = requests.Session()
        answers = [s.post(f"http://127.0.0.1:{LB_PORT}/predict", json={"rows": []}, timeout=5) for _ in range(40)]
        assert [r.status_code for r in answers] == [200] * 40
        assert {r.json()["model_version"] for r in answers} == {"2"}
        h = backend.target_health("v6-it")
        failed_on_v6 = h.errors_5xx - before.errors_5xx
        assert failed_on_v6 >= 10 and h.retried - before.retried == failed_on_v6, h  # ~half of 40
        assert h.requests - before.requests == failed_on_v6
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
    build = functools.partial(
        images.build_image,
        model,
        registry=registry,
        model_dir=model_dir,
        dockerfile=STUB / "Dockerfile",
        target=None,
        sha="0123456789abcdef",
    )
    built = build()
    assert built.tag == f"{registry}/deploy-it-model:v7-0123456"
    labels = docker.from_env().images.get(built.image_id).labels
    assert labels["org.opencontainers.image.revision"] == "0123456789abcdef"
    assert labels["org.flightdeck.model.version"] == "7" and labels["org.flightdeck.data.version"] == "d456"
    assert not built.reused and labels[images.LABEL_INPUTS] == built.inputs_hash
    again = build()
    assert again.reused and again.image_id == built.image_id
    (model_dir / "MLmodel").write_text(f"flavors: {{changed: 1}}\nuuid: {uuid.uuid4()}\n")
    changed = build()
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
