"""Inference capture (serving/capture.py): off the request path, drops counted, flushed at worker exit, its contract."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from serving.app import create_app
from serving.capture import Capture, CaptureConfig, CaptureConfigError
from tests.support.gunicorn import running_gunicorn

REPO = Path(__file__).resolve().parents[3]
KEY = re.compile(
    r"^capture/(?P<name>[^/]+)/(?P<version>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<hour>\d{2})/"
    r"(?P<ms>\d{13})-(?P<host>[^/]+)-(?P<pid>\d+)-(?P<seq>\d+)\.jsonl$"
)


class FakeS3:
    """put_object into a dict; `fail` makes every call raise."""

    def __init__(self, fail: bool = False) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.fail = fail
        self.calls = 0

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str = "") -> dict:  # boto3's names
        self.calls += 1
        if self.fail:
            raise ConnectionError("S3 is down")
        self.objects[(Bucket, Key)] = Body
        return {}

    def blocks(self) -> list[dict[str, Any]]:
        """The lines written (CaptureBlocks)."""
        return [orjson.loads(line) for body in self.objects.values() for line in body.splitlines()]

    def records(self) -> list[dict[str, Any]]:
        """One dict per captured request, cut out of the blocks."""
        return [r for block in self.blocks() for r in _requests(block)]


def _requests(block: dict[str, Any]) -> list[dict[str, Any]]:
    """The requests of a CaptureBlock: request_id, time_ms, route, model_name, model_version, columns, predictions."""
    out, at = [], 0
    for rid, ms, route, rows in zip(block["request_id"], block["time_ms"], block["route"], block["rows"], strict=True):
        cut = slice(at, at + rows)
        out.append(
            {
                "request_id": rid,
                "time_ms": ms,
                "route": route,
                "model_name": block["model_name"],
                "model_version": block["model_version"],
                "columns": {k: v[cut] for k, v in block["columns"].items()},
                "predictions": block["predictions"][cut],
            }
        )
        at += rows
    return out


class Counts:
    """A CaptureCounters that remembers."""

    def __init__(self) -> None:
        self.written = 0
        self.dropped: dict[str, int] = {}

    def capture_written(self, n: int) -> None:
        self.written += n

    def capture_dropped(self, reason: str, n: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n


def _app(model, s3: FakeS3, **config: Any):
    capture = CaptureConfig(**{"percent": 100.0, "s3_uri": "s3://flightdeck-data/capture", **config})
    app = create_app({"MODEL_DIR": str(model.path), "CAPTURE": capture, "CAPTURE_S3_CLIENT": lambda: s3})
    return app, app.extensions["flightdeck_capture"]


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_full_queue_drops_and_counts_the_record_and_the_request_still_answers_200_at_once(lr_model):
    s3 = FakeS3()
    app, capture = _app(lr_model, s3, queue_records=3)  # no writer started: nothing empties the queue
    client = app.test_client()
    for i in range(10):
        t0 = time.perf_counter()
        resp = client.post("/predict", json={"rows": lr_model.records(i, 1)})
        assert resp.status_code == 200
        assert resp.get_json()["predictions"] == lr_model.expected(i, 1)
        assert time.perf_counter() - t0 < 1.0  # a blocking put on a full queue would never return
    metrics = client.get("/metrics").get_data(as_text=True)
    assert _metric(metrics, "capture_dropped_total", reason="queue_full") == 7
    assert _metric(metrics, "capture_dropped_total", reason="write_failed") == 0
    assert capture.close() == 3
    assert len(s3.records()) == 3
    assert _metric(client.get("/metrics").get_data(as_text=True), "capture_records_total") == 3


def test_close_writes_every_record_the_writer_had_not_written_yet(lr_model):
    s3 = FakeS3()
    app, capture = _app(lr_model, s3, flush_seconds=3600, batch_records=7)
    capture.start()
    client = app.test_client()
    ids = [client.post("/predict", json={"rows": lr_model.records(i, 2)}).headers["X-Request-ID"] for i in range(20)]
    time.sleep(0.3)  # the writer wrote the full batches of 7 and holds the rest until flush_seconds
    assert len(s3.records()) == 14
    capture.close()
    assert sorted(r["request_id"] for r in s3.records()) == sorted(ids)
    assert capture._thread is not None and not capture._thread.is_alive()


def test_an_invocations_probabilities_answer_is_not_captured_as_predictions(lr_model):
    s3 = FakeS3()
    app, capture = _app(lr_model, s3)
    client = app.test_client()
    split = {"dataframe_records": lr_model.records(0, 2)}
    proba = client.post("/invocations", json={**split, "params": {"predict_method": "predict_proba"}})
    plain = client.post("/invocations", json=split)
    assert proba.status_code == plain.status_code == 200
    capture.close()
    assert [r["request_id"] for r in s3.records()] == [plain.headers["X-Request-ID"]]
    assert s3.records()[0]["predictions"] == lr_model.expected(0, 2)


def test_a_write_in_flight_at_exit_stops_retrying_at_the_exit_deadline_and_is_counted(lr_model):
    class SlowFailingS3(FakeS3):
        def put_object(self, **kwargs: Any) -> None:
            time.sleep(0.4)
            raise OSError("S3 unreachable")

    counts = Counts()
    from serving.capture import Capture

    capture = Capture(
        CaptureConfig(percent=100, s3_uri="s3://b/capture", flush_seconds=0.05, exit_seconds=1.0, write_attempts=6),
        counts,
        "m",
        "1",
        [("x", "double")],
        client_factory=SlowFailingS3,
    )
    capture.start()
    capture.offer("r1", "/predict", [[1.0]], None, [0])
    time.sleep(0.3)  # the writer has taken the record and is in its first attempt
    t0 = time.monotonic()
    capture.close()
    assert time.monotonic() - t0 < 1.5  # close keeps to its budget: 6 attempts with backoff would take ~8 s
    assert counts.written == 0 and counts.dropped == {"write_failed": 1}  # lost, and counted before exit
    capture._thread.join(3)  # the writer ends its last attempt without a new one, and counts nothing twice
    assert not capture._thread.is_alive() and counts.dropped == {"write_failed": 1}


def test_sampling_records_about_the_configured_percent():
    counts = Counts()
    capture = Capture(
        CaptureConfig(percent=30, s3_uri="s3://b/p", queue_records=100_000),
        counts,
        "m",
        "1",
        [("x", "double")],
        client_factory=FakeS3,
    )
    n = 4000
    for i in range(n):
        capture.offer(str(i), "/predict", [[float(i)]], None, [0])
    # binomial(4000, 0.3): mean 1200, sd 29; 5 sd either side
    assert 1055 <= len(capture.pending) <= 1345
    assert counts.dropped == {}


def test_zero_percent_switches_capture_off_and_a_percent_past_100_is_refused(lr_model):
    app = create_app({"MODEL_DIR": str(lr_model.path), "CAPTURE": CaptureConfig(percent=0)})
    assert app.extensions["flightdeck_capture"] is None
    with pytest.raises(CaptureConfigError, match="CAPTURE_PERCENT"):
        CaptureConfig.from_env({"CAPTURE_PERCENT": "120", "CAPTURE_S3_URI": "s3://b/p"})
    with pytest.raises(CaptureConfigError, match="CAPTURE_S3_URI"):
        CaptureConfig.from_env({"CAPTURE_PERCENT": "100"})
    config = CaptureConfig.from_env(
        {"CAPTURE_PERCENT": "25", "CAPTURE_S3_URI": "s3://b/a/b/", "CAPTURE_QUEUE_RECORDS": "9"}
    )
    assert (config.percent, config.bucket_prefix, config.queue_records) == (25.0, ("b", "a/b"), 9)


def test_s3_refusing_every_attempt_counts_the_batch_as_write_failed_and_requests_still_succeed(lr_model):
    s3 = FakeS3(fail=True)
    app, capture = _app(lr_model, s3, flush_seconds=0.05, write_attempts=3)
    capture._sleep = lambda s: None  # the backoff, not what is tested here
    capture.start()
    client = app.test_client()
    n = 12
    assert all(client.post("/predict", json={"rows": lr_model.records(i, 1)}).status_code == 200 for i in range(n))
    deadline = time.monotonic() + 5
    metrics = ""
    while time.monotonic() < deadline:
        metrics = client.get("/metrics").get_data(as_text=True)
        if _metric(metrics, "capture_dropped_total", reason="write_failed") == n:
            break
        time.sleep(0.05)
    assert _metric(metrics, "capture_dropped_total", reason="write_failed") == n, metrics
    assert _metric(metrics, "capture_records_total") == 0
    assert s3.calls >= 3  # every batch was tried write_attempts times
    capture.close(timeout=0.5)


def test_records_follow_the_contract_for_a_numeric_matrix_and_for_mixed_columns(lr_model, mixed_model):
    s3 = FakeS3()
    app, capture = _app(lr_model, s3)
    client = app.test_client()
    resp = client.post("/predict", json={"rows": lr_model.records(0, 3)}, headers={"X-Request-ID": "req-1"})
    refused = client.post("/predict", json={"rows": [{"nope": 1}]})
    assert refused.status_code == 422  # not a 200: not captured
    capture.close()
    (bucket, key), body = next(iter(s3.objects.items()))
    assert bucket == "flightdeck-data"
    m = KEY.match(key)
    assert m, key
    assert m["pid"] == str(os.getpid()) and m["seq"] == "0"
    [block] = s3.blocks()
    assert set(block) == {
        "format",
        "model_name",
        "model_version",
        "request_id",
        "time_ms",
        "route",
        "rows",
        "columns",
        "predictions",
    }
    assert block["format"] == 2 and block["rows"] == [3]
    [record] = s3.records()
    version = str(app.extensions["flightdeck_model"].lineage.get("model_version") or "unknown")
    assert m["version"] == version == record["model_version"]
    stamp = datetime.fromtimestamp(record["time_ms"] / 1000, UTC)
    assert type(record["time_ms"]) is int and f"{stamp:%Y-%m-%d}" == m["date"] and f"{stamp:%H}" == m["hour"]
    assert int(m["ms"]) == record["time_ms"] and abs(record["time_ms"] / 1000 - time.time()) < 60
    assert record["request_id"] == "req-1" and record["route"] == "/predict"
    assert list(record["columns"]) == list(app.extensions["flightdeck_model"].validator.order)
    sent = lr_model.records(0, 3)
    assert record["columns"] == {c: [row[c] for row in sent] for c in record["columns"]}
    assert record["predictions"] == resp.get_json()["predictions"]

    s3 = FakeS3()
    app, capture = _app(mixed_model, s3)
    rows = mixed_model.records(0, 2)
    body = {"dataframe_split": {"columns": list(rows[0]), "data": [list(r.values()) for r in rows]}}
    resp = app.test_client().post("/invocations", json=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    capture.close()
    [record] = s3.records()
    assert record["route"] == "/invocations"
    assert record["columns"]["visits"] == [r["visits"] for r in rows]
    assert all(type(v) is int for v in record["columns"]["visits"])
    assert record["columns"]["city"] == [r["city"] for r in rows]
    assert record["columns"]["member"] == [r["member"] for r in rows]
    assert record["predictions"] == resp.get_json()["predictions"]


def test_a_batch_never_spans_two_utc_hours():
    s3 = FakeS3()
    capture = Capture(CaptureConfig(percent=100, s3_uri="s3://b/cap"), Counts(), "m", "2", [("x", "long")], lambda: s3)
    hour = 3600 * 490_000
    for i, t in enumerate((hour - 2.0, hour - 1.0, hour + 0.5)):
        capture.pending.append(_item(str(i), t))
    assert capture.flush_now() == 3
    hours = sorted(key.split("/")[4] for _, key in s3.objects)
    assert len(s3.objects) == 2 and hours[0] != hours[1]


def _item(rid: str, t: float):
    from serving.capture import _Item

    return _Item(rid, t, "/predict", [[1]], None, [0])


class _S3Handler(BaseHTTPRequestHandler):
    """A minimal S3 PUT endpoint for a real gunicorn: stores bodies by path, answers 200."""

    store: dict[str, bytes] = {}

    def do_PUT(self) -> None:  # http.server's name
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        self.store[self.path] = body
        self.send_response(200)
        self.send_header("ETag", '"0"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_sigterm_flushes_every_accepted_record_before_gunicorn_exits(lr_model, tmp_path):
    """A real gunicorn (2 workers) with nothing due before SIGTERM: worker_exit writes it all."""
    _S3Handler.store = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _S3Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = 8157
    env = {
        "SERVING_WORKERS": "2",
        "CAPTURE_PERCENT": "100",
        "CAPTURE_S3_URI": "s3://flightdeck-data/capture",
        "CAPTURE_FLUSH_SECONDS": "3600",
        "CAPTURE_BATCH_RECORDS": "100000",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{server.server_address[1]}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MODEL_VERSION": "5",
    }
    try:
        with running_gunicorn(tmp_path, lr_model.path, port, **env) as gunicorn:
            proc, log_path = gunicorn.proc, gunicorn.log_path
            n = 60
            for i in range(n):
                resp = requests.post(
                    f"http://127.0.0.1:{port}/predict",
                    json={"rows": lr_model.records(i, 1)},
                    headers={"Connection": "close"},  # new connections: both workers get some
                    timeout=10,
                )
                assert resp.status_code == 200
            assert _S3Handler.store == {}  # nothing was due yet
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    finally:
        server.shutdown()
    records = [
        r for body in _S3Handler.store.values() for line in body.splitlines() for r in _requests(orjson.loads(line))
    ]
    assert len(records) == n, log_path.read_text()[-3000:]
    assert all(path.startswith("/flightdeck-data/capture/unknown/5/") for path in _S3Handler.store)
