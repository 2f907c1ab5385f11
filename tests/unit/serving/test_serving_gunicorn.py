"""The real gunicorn config: two workers share one model load and one /metrics view."""

from __future__ import annotations

import os
import re
import time

import requests

from tests.support.gunicorn import running_gunicorn

PORT = 8151


def test_two_workers_report_metrics_for_the_whole_server(lr_model, tmp_path):
    with running_gunicorn(tmp_path, lr_model.path, PORT, SERVING_WORKERS="2", SERVING_THREADS="2", MODEL_VERSION="3"):
        n = 40
        for i in range(n):
            # A fresh connection each time so the kernel spreads requests over both workers.
            resp = requests.post(
                f"http://127.0.0.1:{PORT}/predict",
                json={"rows": lr_model.records(i, 2)},
                headers={"Connection": "close"},
                timeout=10,
            )
            assert resp.status_code == 200
            assert resp.json()["predictions"] == lr_model.expected(i, 2)
        metrics = requests.get(f"http://127.0.0.1:{PORT}/metrics", timeout=5).text
        count = re.search(
            r'flightdeck_http_requests_total\{method="POST",model_version="3",route="/predict",status="200"\} (\S+)',
            metrics,
        )
        assert count and float(count.group(1)) == n, metrics
        assert f'flightdeck_predicted_rows_total{{model_version="3"}} {2.0 * n}' in metrics
        # Each worker writes its own sample files; /metrics summed them (with 1 worker per file).
        assert any(name.startswith("counter_") for name in os.listdir(tmp_path / "prom"))


def test_one_thread_worker_keeps_connections_alive_and_serves_them_all(lr_model, tmp_path):
    """SERVING_THREADS=1 runs InlineThreadWorker: several keep-alive connections, interleaved."""
    import http.client
    import json

    port = PORT + 1
    with running_gunicorn(tmp_path, lr_model.path, port, SERVING_WORKERS="1", SERVING_THREADS="1") as server:
        log_path = server.log_path
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(3)]
        sockets = []
        for i in range(12):
            conn = conns[i % 3]
            body = json.dumps({"rows": lr_model.records(i, 3)})
            conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = json.loads(resp.read())
            assert resp.status == 200 and payload["predictions"] == lr_model.expected(i, 3)
            assert resp.getheader("Connection", "").lower() != "close"
            sockets.append(conn.sock)
        # Each connection stayed open: one socket per connection across its four requests.
        assert len({id(s) for s in sockets}) == 3
        conns[0].request("POST", "/predict", body=b"{", headers={"Content-Type": "application/json"})
        resp = conns[0].getresponse()
        assert resp.status == 400 and json.loads(resp.read())["error"]["code"] == "invalid_json"
        for conn in conns:
            conn.close()
        assert "Using worker: serving.gunicorn_worker.InlineThreadWorker" in log_path.read_text()
    assert "Traceback" not in log_path.read_text()


def test_inline_worker_skips_gunicorns_access_log_only_when_it_is_off(monkeypatch):
    from types import SimpleNamespace

    from gunicorn.workers.gthread import ThreadWorker

    from serving.gunicorn_worker import InlineThreadWorker

    monkeypatch.setattr(ThreadWorker, "init_process", lambda self: None)  # not the serving loop itself

    def gunicorns_access(*args):
        raise AssertionError("unused")

    for enabled in (False, True):
        worker = InlineThreadWorker.__new__(InlineThreadWorker)
        worker.log = SimpleNamespace(access_log_enabled=enabled, access=gunicorns_access)
        worker.init_process()
        assert (worker.log.access is gunicorns_access) is enabled
        if not enabled:
            assert worker.log.access(None, None, {}, 0) is None


def test_health_port_answers_while_the_only_worker_is_held_by_a_stalled_client(lr_model, tmp_path):
    """One worker, held by a client that sent half a body: /readyz on the serving port waits for it,
    the health port (SERVING_HEALTH_PORT, a thread in the worker) answers at once; the stalled client
    gets a 408 after SERVING_READ_TIMEOUT (1 s here) and the worker serves again."""
    import socket
    import threading

    port, health = PORT + 2, PORT + 3
    with running_gunicorn(
        tmp_path,
        lr_model.path,
        port,
        ready_url=f"http://127.0.0.1:{health}/readyz",
        SERVING_HEALTH_PORT=str(health),
        SERVING_WORKERS="1",
        SERVING_READ_TIMEOUT="1",
    ) as server:
        log_path = server.log_path
        stalled_answer: list[bytes] = []

        def stalled() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
                s.sendall(b"Content-Length: 100\r\n\r\n{")
                stalled_answer.append(s.recv(4096))

        client = threading.Thread(target=stalled)
        client.start()
        time.sleep(0.3)  # the worker is now reading the stalled body
        t0 = time.monotonic()
        ready = requests.get(f"http://127.0.0.1:{health}/readyz", timeout=5)
        health_s = time.monotonic() - t0
        t0 = time.monotonic()
        serving_ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        serving_s = time.monotonic() - t0
        client.join(timeout=10)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert health_s < 0.3, health_s
        assert serving_ready.status_code == 200 and serving_s > 0.4, serving_s  # it waited for the stalled read
        assert stalled_answer and stalled_answer[0].startswith(b"HTTP/1.1 408"), stalled_answer
        assert requests.get(f"http://127.0.0.1:{health}/healthz", timeout=5).json() == {"status": "ok"}
    assert "WORKER TIMEOUT" not in log_path.read_text()
