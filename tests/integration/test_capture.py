"""Inference capture for real: the serving image behind a private HAProxy (LB 8680, slots 8681-8683, health
8781-8783, S3 relay on the docker bridge gateway at 8779), writing to the platform's S3 through that relay.

- Across a blue/green roll (the old revision stopped with docker stop, i.e. SIGTERM) and a final stop of the
  new one, every request answered 200 is in S3 exactly once, under the version that answered it; nothing was
  due before the stops (CAPTURE_FLUSH_SECONDS=3600), so the flush at worker exit wrote it all.
- With S3 unreachable for the container (its AWS_ENDPOINT_URL_S3 on a closed port), every request still
  succeeds and capture_dropped_total{reason="write_failed"} equals the records lost.
"""

from __future__ import annotations

import re
import shutil
import sys
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import pytest
import requests

from flightdeck import s3
from flightdeck.deploy import controller as ctl
from flightdeck.deploy.backend import RevisionSpec
from flightdeck.deploy.haproxy import HealthCheck, LbConfig
from flightdeck.deploy.local import LocalBackend
from flightdeck.monitoring.capture import CAPTURE_PREFIX, count_records, read_captures

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.model_examples import save_breast_cancer_model  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

LB_PORT = 8680
URL = f"http://127.0.0.1:{LB_PORT}"
TH = ctl.Thresholds(healthy_timeout_s=120, poll_s=0.3, min_requests=1)
MODEL_NAME = f"capture-it-{uuid.uuid4().hex[:8]}"  # a fresh S3 prefix per run


@pytest.fixture(scope="module")
def model():
    ctx = REPO / "build" / f"capture-it-{uuid.uuid4().hex[:8]}"
    ctx.mkdir(parents=True)
    example = save_breast_cancer_model(ctx / "model", "lr")
    yield example, ctx
    shutil.rmtree(ctx, ignore_errors=True)


@pytest.fixture(scope="module")
def image(model):
    example, ctx = model
    client = docker.from_env()
    tag = "fd-capture-it:1"
    client.images.build(
        path=str(REPO),
        target="serving",
        tag=tag,
        rm=True,
        buildargs={"MODEL_DIR": (ctx / "model").relative_to(REPO).as_posix(), "MODEL_NAME": MODEL_NAME},
    )
    yield tag
    client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def backend(image, platform):
    state = Path("/tmp/deploy/capture-it-lb")
    shutil.rmtree(state, ignore_errors=True)
    lb = LbConfig(
        state_dir=state,
        bind_port=LB_PORT,
        port_base=LB_PORT,
        slots=3,
        check=HealthCheck(interval_ms=500, unhealthy_threshold=2, healthy_threshold=1),
    )
    b = LocalBackend(lb, name="capture-it")
    assert b.lb.s3_relay is not None, "the platform's S3 should be local here"
    b.haproxy.start()
    yield b
    for revision in list(b.weights()):
        b.stop_revision(revision)
    b.haproxy.stop()


@pytest.fixture(scope="module")
def s3_client(platform):
    client = s3.client()
    yield client
    prefix = f"{CAPTURE_PREFIX}/{MODEL_NAME}/"  # this run's captures only
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="flightdeck-data", Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket="flightdeck-data", Delete={"Objects": keys})


def _spec(image: str, version: str, **env: str) -> RevisionSpec:
    return RevisionSpec(
        revision=f"v{version}-capture-it",
        image=image,
        model_name=MODEL_NAME,
        model_version=version,
        env={
            "MODEL_NAME": MODEL_NAME,
            "MODEL_VERSION": version,
            "SERVING_WORKERS": "2",
            "CAPTURE_PERCENT": "100",
            "CAPTURE_S3_URI": f"s3://flightdeck-data/{CAPTURE_PREFIX}",
            **env,
        },
    )


class Traffic:
    """A client sending 1-row /predict requests through the LB with its own X-Request-ID; remembers which
    version answered each 200 and counts everything else."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows
        self.answered: dict[str, dict[str, list]] = defaultdict(dict)  # version -> request id -> predictions
        self.failed: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def send(self, n: int) -> None:
        session = requests.Session()
        for _ in range(n):
            self._one(session)

    def _one(self, session: requests.Session) -> None:
        rid = uuid.uuid4().hex
        row = self.rows[self.sent % len(self.rows)]
        self.sent += 1
        try:
            r = session.post(f"{URL}/predict", json={"rows": [row]}, headers={"X-Request-ID": rid}, timeout=10)
        except requests.RequestException as e:
            self.failed.append(type(e).__name__)
            return
        if r.status_code == 200:
            body = r.json()
            self.answered[body["model_version"]][rid] = body["predictions"]
        else:
            self.failed.append(str(r.status_code))

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            self._one(session)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=2), now + timedelta(hours=1)


def test_capture_loses_nothing_across_a_blue_green_roll_and_a_container_stop(backend, image, model, s3_client):
    example, _ = model
    rows = example.records(0, 50)
    traffic = Traffic(rows)
    v1 = _spec(image, "1", CAPTURE_FLUSH_SECONDS="3600", CAPTURE_BATCH_RECORDS="100000")
    v2 = _spec(image, "2", CAPTURE_FLUSH_SECONDS="3600", CAPTURE_BATCH_RECORDS="100000")
    assert ctl.deploy(backend, v1, "blue_green", TH, bake_s=0.5).ok
    traffic.send(150)
    with traffic:  # requests keep flowing while v2 takes over and v1 is stopped (SIGTERM)
        out = ctl.deploy(backend, v2, "blue_green", TH, bake_s=1)
    assert out.ok, out.reason
    assert not backend._containers(v1.revision)  # v1's containers are gone: stopped, then removed
    traffic.send(100)
    backend.stop_revision(v2.revision)  # docker stop: SIGTERM, gunicorn's worker_exit flushes

    assert traffic.failed == []
    start, end = _window()
    for version in ("1", "2"):
        sent = traffic.answered[version]
        assert sent, f"no request answered by v{version}"
        assert count_records(s3_client, "flightdeck-data", CAPTURE_PREFIX, MODEL_NAME, version, start, end) == len(sent)
        frame = read_captures(s3_client, "flightdeck-data", CAPTURE_PREFIX, MODEL_NAME, version, start, end)
        assert len(frame) == len(sent)  # one row per request here
        assert sorted(frame["request_id"]) == sorted(sent)
        assert all(frame["model_version"] == version) and all(frame["row"] == 0)
        assert dict(zip(frame["request_id"], frame["prediction"], strict=True)) == {
            rid: p[0] for rid, p in sent.items()
        }
        assert set(rows[0]) <= set(frame.columns)
        assert str(frame["time"].dtype) == "datetime64[ns, UTC]" or str(frame["time"].dtype).endswith(", UTC]")


def test_with_s3_unreachable_requests_succeed_and_the_drop_counter_says_how_many_records_were_lost(
    backend, image, model, s3_client
):
    example, _ = model
    relay = backend.lb.s3_relay
    assert relay is not None
    closed = f"http://{relay.bind_host}:{relay.bind_port - 1}"  # nothing listens there
    v3 = _spec(image, "3", AWS_ENDPOINT_URL_S3=closed, CAPTURE_FLUSH_SECONDS="0.2", CAPTURE_WRITE_ATTEMPTS="2")
    assert ctl.deploy(backend, v3, "blue_green", TH, bake_s=0.5).ok
    traffic = Traffic(example.records(0, 50))
    n = 120
    traffic.send(n)
    assert traffic.failed == [] and len(traffic.answered["3"]) == n

    deadline = time.monotonic() + 60
    dropped = written = -1.0
    while time.monotonic() < deadline:
        metrics = requests.get(f"{URL}/metrics", timeout=5).text
        dropped = _metric(metrics, "capture_dropped_total", 'reason="write_failed"')
        written = _metric(metrics, "capture_records_total", "")
        if dropped >= n:
            break
        time.sleep(0.5)
    assert (dropped, written) == (n, 0)
    start, end = _window()
    assert count_records(s3_client, "flightdeck-data", CAPTURE_PREFIX, MODEL_NAME, "3", start, end) == 0
    backend.stop_revision(v3.revision)


def _metric(text: str, name: str, label: str) -> float:
    pattern = re.compile(rf"^{name}\{{([^}}]*)\}} (\S+)$", re.M)
    return sum(float(v) for labels, v in pattern.findall(text) if label in labels)
