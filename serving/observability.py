"""Prometheus metrics and structured JSON logs for the model server.

Metrics live in a per-app registry (several apps can exist in one test process). Under gunicorn
with several workers, `PROMETHEUS_MULTIPROC_DIR` (set by serving/gunicorn.conf.py before
prometheus_client is imported) makes every worker write its samples to shared files, and /metrics
aggregates them, so a scrape sees the whole container rather than one worker.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ACCESS_LOGGER = "serving.access"


def _timestamp(created: float) -> str:
    """UTC, millisecond precision (the millisecond computed as logging computes `record.msecs`)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int((created - int(created)) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields passed with `extra={"fields": {...}}` are merged in."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line: ts (ISO-8601 UTC), level, logger, msg, the `fields`, any exception."""
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class JsonStdoutHandler(logging.StreamHandler):
    """The handler `configure_logging` installs: JSON lines on stdout."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.setFormatter(JsonFormatter())


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stdout for the serving loggers (idempotent; leaves other loggers alone)."""
    handler = JsonStdoutHandler()
    for name in ("serving", ACCESS_LOGGER):
        logger = logging.getLogger(name)
        if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


class AccessLog:
    """One JSON line per request on the access logger, in JsonFormatter's format.

    With the server's own logging set-up (only configure_logging's stdout handler, no filters, no
    propagation) the line is written to that handler's stream directly: a LogRecord, the filter and
    handler chain and the formatter cost ~0.05 ms of CPU per request under gunicorn here, a tenth of
    a 1-row prediction. Any other set-up (another handler, a filter, propagation: tests, embedding)
    gets a normal `logger.info` record with the same fields.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)

    def write(self, msg: str, fields: dict[str, Any]) -> None:
        """One access-log line (`msg` plus `fields`), written straight to the stream when the logger has a
        single handler (skipping logging's record machinery), else through logging."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        handler = self._only_handler()
        if handler is None:
            self.logger.info("%s", msg, extra={"fields": fields})
            return
        entry = {"ts": _timestamp(time.time()), "level": "info", "logger": ACCESS_LOGGER, "msg": msg, **fields}
        line = orjson.dumps(entry, default=str).decode() + "\n"
        with handler.lock:  # type: ignore[union-attr]  # an RLock made by Handler.__init__
            handler.stream.write(line)
            handler.stream.flush()

    def _only_handler(self) -> JsonStdoutHandler | None:
        logger = self.logger
        handlers = logger.handlers
        if len(handlers) != 1 or type(handlers[0]) is not JsonStdoutHandler or logger.filters or logger.propagate:
            return None
        handler = handlers[0]
        return None if handler.filters or handler.level > logging.INFO else handler


class Metrics:
    """Request counters and a latency histogram, labelled with the served model version."""

    def __init__(self, model_version: str, model_name: str, predict_path: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.model_version = model_version
        self.requests = Counter(
            "flightdeck_http_requests_total",
            "HTTP requests by route, method and status",
            ["route", "method", "status", "model_version"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flightdeck_http_request_duration_seconds",
            "Time spent handling a request, by route",
            ["route", "method", "model_version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter(
            "flightdeck_predicted_rows_total",
            "Rows scored",
            ["model_version"],
            registry=self.registry,
        )
        self.info = Gauge(
            "flightdeck_model_info",
            "The model this server holds (value is always 1)",
            ["model_name", "model_version", "predict_path"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.info.labels(model_name, model_version, predict_path).set(1)
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self.rows_child = self.rows.labels(model_version)
        # Inference capture (serving/capture.py). Unprefixed names: the monitor and its docs read them as is.
        self.capture_records = Counter(
            "capture_records_total",
            "Captured records (one per request) written to S3",
            ["model_version"],
            registry=self.registry,
        )
        self.capture_drops = Counter(
            "capture_dropped_total",
            "Captured records lost: queue_full (the writer fell behind), write_failed (S3 refused the batch)",
            ["reason", "model_version"],
            registry=self.registry,
        )
        self._capture_written = self.capture_records.labels(model_version)
        # both reasons exist from the start, so a scrape shows 0 rather than no series
        self._capture_dropped = {
            reason: self.capture_drops.labels(reason, model_version) for reason in ("queue_full", "write_failed")
        }

    def capture_written(self, n: int) -> None:
        """Count `n` captured records written to S3 (serving.capture.CaptureCounters)."""
        self._capture_written.inc(n)

    def capture_dropped(self, reason: str, n: int) -> None:
        """Count `n` captured records lost for `reason` ("queue_full" or "write_failed")."""
        child = self._capture_dropped.get(reason)
        if child is None:
            child = self._capture_dropped[reason] = self.capture_drops.labels(reason, self.model_version)
        child.inc(n)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request and record its latency (`seconds`, wall clock) by route, method and status."""
        key = (route, method, str(status))
        children = self._children.get(key)
        if children is None:  # label lookups are cached: they cost more than the increment
            children = (
                self.requests.labels(route, method, key[2], self.model_version),
                self.latency.labels(route, method, self.model_version),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4), summed over gunicorn's workers when
        PROMETHEUS_MULTIPROC_DIR is set (prometheus_client's multiprocess mode)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
