"""AirflowClient against a real local HTTP server standing in for Airflow's API."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flightdeck.airflow_client import AirflowClient, AirflowError


class _Api(BaseHTTPRequestHandler):
    busy_answers = 2  # how many 500 "Database error" answers before the trigger goes through
    calls: list[str] = []

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).calls.append(self.path)
        if self.path == "/auth/token":
            return self._send(201, {"access_token": "t"})
        if self.path == "/api/v2/dags/d/dagRuns":
            if type(self).busy_answers > 0:
                type(self).busy_answers -= 1
                return self._send(500, {"detail": "Database error"})
            return self._send(200, {"dag_run_id": "r1"})
        return self._send(404, {"detail": "no such route"})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api():
    _Api.busy_answers, _Api.calls = 2, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_server_errors_are_retried_until_the_write_goes_through(api):
    client = AirflowClient(api, "admin", "pw")
    assert client.post("/dags/d/dagRuns", {"conf": {}})["dag_run_id"] == "r1"
    assert _Api.calls.count("/api/v2/dags/d/dagRuns") == 3


def test_client_errors_are_not_retried_and_name_the_call(api):
    client = AirflowClient(api, "admin", "pw")
    with pytest.raises(AirflowError, match=r"POST /api/v2/dags/other/dagRuns -> 404"):
        client.post("/dags/other/dagRuns", {})
    assert _Api.calls.count("/api/v2/dags/other/dagRuns") == 1
