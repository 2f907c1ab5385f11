"""gunicorn's gthread worker, minus the thread hop, for the one-thread-per-worker setting.

With SERVING_THREADS=1 (the default) requests on one worker are served one at a time anyway, but
gthread still hands every request from its event loop to a one-thread pool and back: a future, a
thread wake-up, a GIL hand-over, a pipe write and read per request (~0.1-0.25 ms CPU on a 1 ms
request here). This worker keeps gthread's event loop, keep-alive handling, timeouts and shutdown
unchanged and only runs the request handler in the loop's thread. It also touches the heartbeat
file at most once a second instead of once per loop turn (the master only checks it against
`timeout`, 30 s), and skips gunicorn's per-request access-log check when that log is off.
serving/gunicorn.conf.py uses it when threads == 1 and plain gthread otherwise.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

HEARTBEAT_EVERY_S = 1.0


def _no_access_log(*args: Any, **kwargs: Any) -> None:
    return None


class InlineThreadWorker(ThreadWorker):
    _last_notify = 0.0

    def init_process(self) -> None:
        # The app writes its own JSON access log (gunicorn's is off, accesslog = None), but gunicorn
        # still asks five settings per request whether to write one; ask once per worker instead.
        if not self.log.access_log_enabled:
            self.log.access = _no_access_log
        super().init_process()

    def enqueue_req(self, conn: Any) -> None:
        done: Future = Future()
        try:
            done.set_result(self.handle(conn))
        except BaseException as exc:  # finish_request closes the connection, as after a pool job
            done.set_exception(exc)
        self.finish_request(conn, done)

    def notify(self) -> None:
        now = time.monotonic()
        if now - self._last_notify >= HEARTBEAT_EVERY_S:
            self._last_notify = now
            super().notify()
