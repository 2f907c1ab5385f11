"""A stand-in for the serving image in deploy tests: the same endpoints, no model, failure knobs.

Env knobs (why: rollback paths need an image that misbehaves on purpose):
  NEVER_READY=1      /readyz always answers 503 (the image never becomes ready)
  FAIL_PREDICT=1     /predict answers 500 (starts fine, fails on traffic)
  READY_DELAY_S=N    /readyz answers 503 for the first N seconds
  BREAK_AFTER_S=N    after N seconds /readyz answers 503 and /predict 500 (goes bad once exposed)
  PREDICT_DELAY_S=N  each /predict takes N seconds (a busy model: requests queue in the LB)
  MODEL_NAME, MODEL_VERSION, GIT_SHA, IMAGE_TAG   reported by /version
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.monotonic()
ENV = os.environ.get


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet: the LB logs requests
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _broken(self) -> bool:
        after = ENV("BREAK_AFTER_S")
        return after is not None and time.monotonic() - STARTED >= float(after)

    def _ready(self) -> bool:
        if ENV("NEVER_READY") == "1" or self._broken():
            return False
        return time.monotonic() - STARTED >= float(ENV("READY_DELAY_S", "0"))

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, {"status": "alive"})
        elif self.path == "/readyz":
            self._send(200, {"status": "ready"}) if self._ready() else self._send(503, {"status": "loading"})
        elif self.path == "/version":
            self._send(
                200,
                {
                    "model_name": ENV("MODEL_NAME", "stub"),
                    "model_version": ENV("MODEL_VERSION", "0"),
                    "git_sha": ENV("GIT_SHA", ""),
                    "image": ENV("IMAGE_TAG", ""),
                },
            )
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path != "/predict":
            self._send(404, {"error": "not found"})
        elif ENV("FAIL_PREDICT") == "1" or self._broken():
            self._send(500, {"error": "model failed"})
        else:
            time.sleep(float(ENV("PREDICT_DELAY_S", "0")))
            self._send(200, {"predictions": [0], "model_version": ENV("MODEL_VERSION", "0")})


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 ignores SIGTERM unless handled
    ThreadingHTTPServer.daemon_threads = True
    Handler.disable_nagle_algorithm = True  # headers and body are written apart: no 40 ms delayed-ACK stall
    # 8081 answers the load balancer's health checks, as the serving image does (serving/health_port.py)
    health = ThreadingHTTPServer(("0.0.0.0", 8081), Handler)
    threading.Thread(target=health.serve_forever, daemon=True).start()
    ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
