"""The model server behind the load balancer under clients that misbehave or push hard.

A real serving image (a 100-tree random forest baked in, two gunicorn workers) runs as a revision on
a private HAProxy (port 8460, slots 8461-8464) with the platform's health checks (every 1 s,
`timeout check 2s`, fall 2). What each test proves:
  - clients trickling their bodies never hold a model worker: HAProxy buffers each request whole
    (`option http-buffer-request`) and answers 408 after `timeout http-request`; meanwhile every
    other client is answered and no health check fails;
  - heavy but valid load (48 keep-alive clients, 5,000-row requests) leaves the health checks
    answered: they go to the image's health port, where a thread in each worker answers them
    (serving/health_port.py), so a busy server is never marked down;
  - a body over the size limit gets a 413 that requests, urllib and curl can read.
Figures (probe latency p50/p99/max, requests answered) go to test-artifacts/serving-under-load.json.
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker
import pytest
import requests

from flightdeck import images
from flightdeck.deploy.backend import RevisionSpec
from flightdeck.deploy.haproxy import HealthCheck, LbConfig
from flightdeck.deploy.local import LocalBackend

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.model_examples import save_breast_cancer_model  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

LB_PORT = 8460
LB = f"http://127.0.0.1:{LB_PORT}"
ARTIFACT = REPO / "test-artifacts" / "serving-under-load.json"
# The platform's own check settings (flightdeck.deploy.haproxy.HealthCheck defaults).
CHECK = HealthCheck()


def _record(name: str, figures: dict) -> None:
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(ARTIFACT.read_text()) if ARTIFACT.exists() else {}
    data[name] = figures
    ARTIFACT.write_text(json.dumps(data, indent=2))
    print(name, figures)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_breast_cancer_model(tmp_path_factory.mktemp("forest") / "model", kind="rf", n_estimators=100)


@pytest.fixture(scope="module")
def served(model):
    """(backend, serving port, LB stats reader, health port): the forest image live at 100% on the private LB."""
    client = docker.from_env()
    built = images.build_image(
        images.ModelRef(name="serving-load-test", version="1"),
        registry="local",
        model_dir=model.path,
        sha="0" * 40,
        client=client,
    )
    state = Path("/tmp/deploy/load-lb")
    shutil.rmtree(state, ignore_errors=True)
    backend = LocalBackend(
        LbConfig(state_dir=state, bind_port=LB_PORT, port_base=LB_PORT, slots=4, check=CHECK), name="load"
    )
    backend.haproxy.start()
    revision = "v1-load"
    backend.start_revision(RevisionSpec(revision=revision, image=built.tag, model_version="1"))
    try:
        deadline = time.monotonic() + 120
        while not backend.target_health(revision).all_healthy:
            assert time.monotonic() < deadline, backend.target_health(revision)
            time.sleep(0.5)
        backend.set_weights({revision: 100})
        slot = backend.slots(revision)[0]
        yield backend, backend.lb.slot_port(slot), lambda: backend.haproxy.stats()[slot], backend.lb.health_port(slot)
    finally:
        backend.stop_revision(revision)
        backend.haproxy.stop()


class Watch:
    """Probes /readyz on the container's health port every 0.25 s (where HAProxy's check goes) and
    samples the LB's view of the server: its status and its failed-check counter."""

    def __init__(self, port: int, stats) -> None:
        self.port, self.stats = port, stats
        self.latencies: list[float] = []
        self.probe_failures: list[str] = []
        self.statuses: set[str] = set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                r = session.get(f"http://127.0.0.1:{self.port}/readyz", timeout=CHECK_TIMEOUT_S)
                if r.status_code != 200:
                    self.probe_failures.append(str(r.status_code))
            except requests.RequestException as exc:
                self.probe_failures.append(type(exc).__name__)
            self.latencies.append(time.monotonic() - t0)
            self.statuses.add(self.stats()["status"])
            self._stop.wait(0.25)

    def __enter__(self) -> Watch:
        self.chkfail0 = int(self.stats()["chkfail"])
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.failed_checks = int(self.stats()["chkfail"]) - self.chkfail0

    def figures(self) -> dict:
        q = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return {
            "probes": len(self.latencies),
            "probe_p50_ms": round(q[49] * 1000, 1),
            "probe_p99_ms": round(q[98] * 1000, 1),
            "probe_max_ms": round(max(self.latencies) * 1000, 1),
            "probe_failures": len(self.probe_failures),
            "lb_failed_checks": self.failed_checks,
            "lb_statuses_seen": sorted(self.statuses),
        }


CHECK_TIMEOUT_S = 2.0  # HAProxy's `timeout check` in the generated config


def _trickle(body_len: int, every_s: float, stop: threading.Event, answers: list[str]) -> None:
    """A client that sends its headers, then one body byte every `every_s` seconds."""
    with socket.create_connection(("127.0.0.1", LB_PORT), timeout=30) as s:
        s.sendall(
            f"POST /predict HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\n"
            f"Content-Length: {body_len}\r\n\r\n".encode()
        )
        try:
            for _ in range(body_len):
                if stop.wait(every_s):
                    break
                s.sendall(b" ")
        except OSError:  # the LB answered and closed: what we want to read now
            pass
        try:
            answers.append(s.recv(4096).split(b"\r\n", 1)[0].decode())
        except OSError as exc:
            answers.append(type(exc).__name__)


def test_slow_clients_never_hold_a_worker_nor_fail_a_health_check(served, model):
    backend, port, stats, health = served
    row = {"rows": model.records(0, 1)}
    stop, answers = threading.Event(), []
    slow = [threading.Thread(target=_trickle, args=(2000, 2.0, stop, answers), daemon=True) for _ in range(4)]
    latencies, statuses = [], []
    session = requests.Session()
    with Watch(health, stats) as watch:
        for t in slow:  # twice as many slow clients as the server has workers
            t.start()
        time.sleep(1.0)
        deadline = time.monotonic() + 14  # past HAProxy's `timeout http-request` (10 s)
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            statuses.append(session.post(f"{LB}/predict", json=row, timeout=10).status_code)
            latencies.append(time.monotonic() - t0)
            time.sleep(0.05)
        for t in slow:
            t.join(timeout=5)
        stop.set()
    figures = {
        **watch.figures(),
        "slow_clients": len(slow),
        "slow_client_answers": answers,
        "other_requests": len(statuses),
        "other_requests_ok": statuses.count(200),
        "other_p99_ms": round(statistics.quantiles(latencies, n=100, method="inclusive")[98] * 1000, 1),
    }
    _record("slow_clients", figures)
    assert statuses.count(200) == len(statuses) > 50, figures
    assert figures["other_p99_ms"] < 1000, figures
    assert watch.failed_checks == 0 and watch.probe_failures == [], figures
    assert watch.statuses == {"UP"}, figures
    # HAProxy, not the model server, timed the trickling clients out
    assert answers and all(a.startswith("HTTP/1.1 408") for a in answers), figures


def _wrk_body(model, rows: int, path: Path) -> Path:
    x = model.X.to_numpy()
    columns = {c: [float(x[i % len(x)][j]) for i in range(rows)] for j, c in enumerate(model.columns)}
    path.write_text(json.dumps({"columns": columns}))
    return path


def test_heavy_valid_load_keeps_the_server_in_the_load_balancer(served, model, tmp_path):
    backend, port, stats, health = served
    body = _wrk_body(model, 5000, tmp_path / "body.json")
    lua = tmp_path / "post.lua"
    lua.write_text(
        'local f = io.open("' + str(body) + '", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    with Watch(health, stats) as watch:
        out = subprocess.run(
            ["wrk", "-t2", "-c48", "-d20s", "--timeout", "30s", "-s", str(lua), f"{LB}/predict"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    answered = int(out.split(" requests in ")[0].split()[-1])
    non_2xx = int(out.split("Non-2xx or 3xx responses: ")[1].split()[0]) if "Non-2xx" in out else 0
    socket_errors = out.split("Socket errors: ")[1].splitlines()[0] if "Socket errors" in out else "none"
    figures = {
        **watch.figures(),
        "clients": 48,
        "rows_per_request": 5000,
        "body_bytes": body.stat().st_size,
        "requests_answered": answered,
        "non_2xx": non_2xx,
        "socket_errors": socket_errors,
    }
    _record("heavy_load", figures)
    assert answered > 0 and non_2xx == 0 and socket_errors == "none", (figures, out)
    assert watch.failed_checks == 0 and watch.probe_failures == [], figures
    assert watch.statuses <= {"UP"}, figures
    assert figures["probe_p99_ms"] < CHECK_TIMEOUT_S * 1000 / 4, figures  # far inside HAProxy's `timeout check`


@pytest.mark.parametrize("through", ["load balancer", "container"])
def test_oversized_body_gets_a_413_every_client_can_read(served, through, tmp_path):
    backend, port, _, _ = served
    url = f"{LB}/predict" if through == "load balancer" else f"http://127.0.0.1:{port}/predict"
    rows = [{"mean radius": 14.1, "mean texture": 19.3, "request_id": "0123456789abcdef"}] * 200_000
    body = json.dumps({"rows": rows}).encode()  # ~14 MB, over the 8 MiB limit
    path = tmp_path / "big.json"
    path.write_bytes(body)

    r = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(
            urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}), timeout=60
        )
    assert err.value.code == 413 and b"body_too_large" in err.value.read()
    curl = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Content-Type: application/json"]
        + ["--data-binary", f"@{path}", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert curl.stdout == "413", curl.stderr


def test_without_the_load_balancer_a_stalled_client_holds_a_worker_only_briefly(served, model):
    """Straight to the container (no HAProxy to buffer): connections that send nothing wait in the
    worker's event loop, and a body that stops arriving is answered 408 after SERVING_READ_TIMEOUT
    (2 s), so /readyz keeps answering and no worker is killed for a missed heartbeat."""
    _, port, _, _ = served
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        t0 = time.monotonic()
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        idle_readyz_s = time.monotonic() - t0

        answers: list[tuple[str, float]] = []

        def stalled() -> None:  # headers and one byte of a 100-byte body, then silence
            start = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
                s.sendall(
                    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100\r\n\r\n{"
                )
                status = s.recv(4096).split(b"\r\n", 1)[0].decode()
                answers.append((status, time.monotonic() - start))

        clients = [threading.Thread(target=stalled) for _ in range(2)]  # as many as the server has workers
        for t in clients:
            t.start()
        for t in clients:
            t.join(timeout=20)
        t0 = time.monotonic()
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        after_s = time.monotonic() - t0
    finally:
        for s in idle:
            s.close()
    figures = {
        "idle_connections": len(idle),
        "readyz_with_idle_connections_ms": round(idle_readyz_s * 1000, 1),
        "stalled_answers": [(a, round(s, 2)) for a, s in answers],
        "readyz_after_ms": round(after_s * 1000, 1),
    }
    _record("direct_stalled_clients", figures)
    assert idle_readyz_s < 1.0, figures
    # each waits SERVING_READ_TIMEOUT (2 s) of silence; the kernel may hand both to one worker, which then
    # times them out one after the other (2 s, then 4 s): bounded either way
    assert len(answers) == 2 and all(a.startswith("HTTP/1.1 408") for a, _ in answers), figures
    assert min(s for _, s in answers) < 3.0 and max(s for _, s in answers) < 5.0, figures
    assert after_s < 1.0, figures
