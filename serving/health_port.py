"""Readiness on a port of its own, answered by a thread in each gunicorn worker.

The load balancer's health check must not wait behind scoring: with one request at a time per
worker, a probe on the serving port queues behind every request the worker already has, and under
heavy but valid load (48 clients sending 5,000-row requests) that is over HAProxy's 2 s check timeout,
so a busy server is marked down. Here each worker runs a small HTTP server on SERVING_HEALTH_PORT
(default 8081; all workers share it through SO_REUSEPORT) in a daemon thread. It answers
`GET /readyz` (`/ping`, `/health`) with the same smoke prediction as the serving port's /readyz and
`GET /healthz`, and needs the GIL only for that prediction. A worker stuck in a request still has
its probe answered; gunicorn's master kills a worker that stops its heartbeat (`timeout`, 30 s).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("serving")

Probe = Callable[[], tuple[int, bytes]]  # -> (HTTP status, JSON body)
READY_PATHS = frozenset({"/readyz", "/ping", "/health"})


class _HealthServer(ThreadingHTTPServer):
    allow_reuse_port = True  # every worker binds the same port; the kernel spreads the probes
    daemon_threads = True


def _handler(ready: Probe, alive: Probe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # HAProxy's checks may keep the connection

        def do_GET(self) -> None:  # http.server's naming
            path = self.path.partition("?")[0]
            if path in READY_PATHS:
                status, body = ready()
            elif path == "/healthz":
                status, body = alive()
            else:
                status, body = 404, b'{"error": {"code": "not_found", "message": "health port: /readyz, /healthz"}}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # probes every second would flood the log
            return None

    return Handler


def serve(port: int, ready: Probe, alive: Probe, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the health server on `host:port` in a daemon thread; returns it (`shutdown()` stops it).

    Raises OSError when the port cannot be bound (another process without SO_REUSEPORT holds it).
    """
    server = _HealthServer((host, port), _handler(ready, alive))
    server.disable_nagle_algorithm = True
    threading.Thread(target=server.serve_forever, name="health-port", daemon=True).start()
    return server
