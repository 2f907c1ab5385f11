"""gunicorn's gthread worker, minus the thread hop, for the one-thread-per-worker setting.

With SERVING_THREADS=1 (the default) requests on one worker are served one at a time anyway, but
gthread still hands every request from its event loop to a one-thread pool and back: a future, a
thread wake-up, a GIL hand-over, a pipe write and read per request (~0.1-0.25 ms CPU on a 1 ms
request here). This worker keeps gthread's event loop, keep-alive handling, timeouts and shutdown
unchanged and only runs the request handler in the loop's thread. It also touches the heartbeat
file at most once a second instead of once per loop turn (the master only checks it against
`timeout`, 30 s), and skips gunicorn's per-request access-log check when that log is off.
serving/gunicorn.conf.py uses it when threads == 1 and plain gthread otherwise.

Two guards keep one slow client from holding the worker's only thread (and with it every other
client and the load balancer's health check, which then marks the server down):
- a new connection that has sent nothing yet waits in the event loop, not in the handler (gthread
  waits up to 5 s for its first bytes in the pool thread, which here is the loop itself);
- while a request is read (headers, then the body), a pause longer than SERVING_READ_TIMEOUT
  seconds (default 2) ends it: the scoring routes answer 408 for a stalled body, a stalled header
  closes the connection.
Behind the platform's HAProxy neither happens: it buffers each request whole before it picks a server.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from concurrent.futures import Future
from typing import Any

from gunicorn.workers import gthread
from gunicorn.workers.gthread import ThreadWorker

HEARTBEAT_EVERY_S = 1.0
READ_TIMEOUT_S = float(os.environ.get("SERVING_READ_TIMEOUT") or 2.0)


def _no_access_log(*args: Any, **kwargs: Any) -> None:
    return None


class InlineThreadWorker(ThreadWorker):
    """gthread's worker with the request handler run in the event loop's thread (see the module docstring)."""

    _last_notify = 0.0

    def init_process(self) -> None:
        """gthread's start-up, with the access-log hook made a no-op when the log is off.

        The app writes its own JSON access log (gunicorn's is off, accesslog = None), but gunicorn still
        asks five settings per request whether to write one; ask once per worker instead."""
        if not self.log.access_log_enabled:
            self.log.access = _no_access_log
        super().init_process()

    def enqueue_req(self, conn: Any) -> None:
        """Handle `conn` now, in this thread, instead of in a pool; one that has sent nothing yet goes
        back to the poller, so a silent client never holds the worker's only thread."""
        done: Future = Future()
        try:
            if not conn.initialized and not conn.data_ready and not conn.wait_for_data(0):
                # nothing sent yet: finish_request parks it in the poller until it is readable
                done.set_result(gthread._DEFER)
            else:
                done.set_result(self.handle(conn))
        except BaseException as exc:  # finish_request closes the connection, as after a pool job
            done.set_exception(exc)
        self.finish_request(conn, done)

    def handle_request(self, req: Any, conn: Any) -> bool:
        """gthread's handler; True to keep the connection alive, False after a stalled read.

        After a stalled read (the app answered 408) the rest of the body may still trickle in;
        gunicorn's keep-alive drain would wait on it byte by byte. Close instead."""
        keepalive = super().handle_request(req, conn)
        return keepalive and not conn.sock.timed_out

    def accept(self, listener: Any) -> None:
        """gthread's accept, with the client socket made a _ReadTimeoutSocket (SERVING_READ_TIMEOUT seconds)."""
        try:
            sock, addr = listener.accept()
            sock = _ReadTimeoutSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
            self.nr_conns += 1
            sock.setblocking(True)
            self.enqueue_req(gthread.TConn(self.cfg, sock, addr, listener.getsockname()))
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise


class _ReadTimeoutSocket(socket.socket):
    """A client socket whose blocking mode has a timeout: each recv/send waits at most READ_TIMEOUT_S.

    gthread switches a connection to blocking mode before it reads each request (headers, then the
    body through the app) and back to non-blocking in its poller. A timeout there raises
    TimeoutError: in the app's body read, serving/scoring.py answers 408; while gunicorn reads the
    headers, it drops the connection (logging a socket error). gunicorn's keep-alive drain sets and
    restores its own timeouts.
    """

    timed_out = False

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(READ_TIMEOUT_S)
        else:
            super().setblocking(False)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        try:
            return super().recv(bufsize, flags)
        except TimeoutError:
            self.timed_out = True
            raise

    def notify(self) -> None:
        now = time.monotonic()
        if now - self._last_notify >= HEARTBEAT_EVERY_S:
            self._last_notify = now
            super().notify()
