"""gunicorn settings for the model server; every knob comes from the environment.

Run: gunicorn -c serving/gunicorn.conf.py --no-control-socket 'serving.app:create_app()'

SERVING_WORKERS (default 1) processes x SERVING_THREADS (default 1) threads; with SERVING_HEALTH_PORT
set (the image: 8081), each worker also answers health checks there (serving/health_port.py). Prediction is CPU-bound
and holds the GIL, so scale with workers; a gthread-style worker is used even with one thread
because it keeps HTTP connections alive (the sync worker closes each one). With one thread it is
serving/gunicorn_worker.py's InlineThreadWorker (gthread without the hop to a one-thread pool).
The app is preloaded: the model is read once in the master and shared by the forked workers.
"""

from __future__ import annotations

import os
import shutil
import tempfile

# Multi-process Prometheus: must be set before prometheus_client is imported by the app.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="serving-metrics-")
else:  # stale samples from a previous run would be summed in
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

# The validator rejects NaN/inf before a row reaches the model, so sklearn's own finiteness scan
# (a pass over every input per call) is redundant; read by sklearn at import, hence set here.
os.environ.setdefault("SKLEARN_ASSUME_FINITE", "1")

bind = f"{os.environ.get('SERVING_HOST', '0.0.0.0')}:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("SERVING_WORKERS") or 1)
threads = int(os.environ.get("SERVING_THREADS") or 1)
# One thread: gthread's loop without its thread pool hop (serving/gunicorn_worker.py).
worker_class = "serving.gunicorn_worker.InlineThreadWorker" if threads == 1 else "gthread"
preload_app = True
keepalive = int(os.environ.get("SERVING_KEEPALIVE") or 5)
timeout = int(os.environ.get("SERVING_TIMEOUT") or 30)
graceful_timeout = int(os.environ.get("SERVING_GRACEFUL_TIMEOUT") or 20)
backlog = int(os.environ.get("SERVING_BACKLOG") or 256)
accesslog = None  # the app writes structured JSON access logs itself
errorlog = "-"
loglevel = os.environ.get("SERVING_LOG_LEVEL", "info").lower()
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
control_socket_disable = True  # same as --no-control-socket (the image passes both)


def post_worker_init(worker) -> None:  # gunicorn's hook signature
    """Each worker answers health checks on SERVING_HEALTH_PORT from a thread (serving/health_port.py)
    and, with capture on, runs its capture writer thread (serving/capture.py). Both start here, in the
    worker: threads started in the preloaded master would not survive the fork."""
    ext = worker.wsgi.extensions
    port = int(os.environ.get("SERVING_HEALTH_PORT") or 0)
    if port:
        from serving.health_port import serve

        serve(port, ext["flightdeck_readiness"], ext["flightdeck_liveness"], os.environ.get("SERVING_HOST", "0.0.0.0"))
    capture = ext.get("flightdeck_capture")
    if capture is not None:
        capture.start()


def worker_exit(server, worker) -> None:  # gunicorn's hook signature
    """gunicorn hook, run in the worker as it exits (SIGTERM: docker stop, ECS stopping the task, a
    scale-in): write every capture record still queued, so a stopped container loses none it accepted.

    The flush takes at most CAPTURE_EXIT_SECONDS (3 s): under the local target's `docker stop` timeout
    (5 s, deploy/local.py), gunicorn's graceful_timeout (20 s) and ECS's stopTimeout (30 s)."""
    capture = getattr(worker, "wsgi", None) and worker.wsgi.extensions.get("flightdeck_capture")
    if capture:
        written = capture.close()
        worker.log.info("capture: %d records flushed at worker exit", written)


def child_exit(server, worker) -> None:  # gunicorn's hook signature
    """gunicorn hook: drop the dead worker's live gauges from prometheus_client's multiprocess directory
    (prometheus_client docs, "Multiprocess Mode (E.g. Gunicorn)")."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
