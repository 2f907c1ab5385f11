"""Inference capture: sampled requests and their predictions, written to S3 off the request path.

The contract (the `monitor` DAG and flightdeck.monitoring.capture read it; change them together):

    s3://<bucket>/<prefix>/<model_name>/<model_version>/<YYYY-MM-DD>/<HH>/<unix_ms>-<hostname>-<pid>-<seq>.jsonl

- <YYYY-MM-DD>/<HH>: the UTC date and hour of the file's first record. A file never spans two hours
  (the writer cuts a batch at the hour), so every record of a file lies in the hour its key names.
- <unix_ms>: the first record's time in milliseconds since the epoch; <hostname> and <pid> name the
  writing worker (on Docker the hostname is the container id), <seq> counts that worker's files from 0.
- JSON lines; each line a `CaptureBlock`: consecutive requests of the file, column by column (format 2):

      {"format": 2, "model_name": "flightdeck-model", "model_version": "3",
       "request_id": ["9f0c...", "77ab..."], "time_ms": [1796648701123, 1796648702456],
       "route": ["/predict", "/invocations"], "rows": [2, 1],
       "columns": {"age": [41, 37, 29], "income": [5200.0, null, 3100.5]},
       "predictions": [1, 0, 1]}

  One entry per request in `request_id`, `time_ms` (milliseconds since the epoch, UTC), `route` and
  `rows` (its number of input rows); one entry per input row, the block's requests one after another, in
  each list of `columns` (the validated inputs in the signature's column order: integer columns as
  integers, a missing optional value as null) and in `predictions` (a label or a value; an /invocations
  answer of class probabilities, `predict_method: predict_proba`, is not captured). A block holds at most
  BLOCK_RECORDS requests.
  Format 1, written before format 2 and still read by the reader, had one line per request: {"request_id",
  "time" (ISO-8601 UTC, ms), "model_name", "model_version", "route", "columns", "predictions"} (a CaptureRecord).

Only requests answered 200 by a scoring route are captured, and of those CAPTURE_PERCENT percent.

How it stays off the request path: the handler does a sampling check, a length check and a `deque.append`
of a tuple of references (no lock, no condition to notify; ~0.3 us); a background thread in each gunicorn
worker (started by serving/gunicorn.conf.py's post_worker_init, never in the preloaded master, whose threads
would not survive the fork) looks at the queue's length every POLL_SECONDS and, once a batch is full or
its first record flush_seconds old, turns it into blocks (the numeric matrices of a block stacked into one
array that orjson writes natively, no per-record dict or list) and PUTs one object per batch. A full queue
drops the record; a batch S3 refuses `write_attempts` times is dropped; both are counted in /metrics
(`capture_dropped_total{reason="queue_full"|"write_failed"}`, written records in `capture_records_total`).
On a graceful stop (SIGTERM: docker stop, an ECS task stopping) gunicorn's worker_exit hook calls
`Capture.close`, which writes everything still queued before the worker exits, within `exit_seconds`.

Settings (environment, read by `CaptureConfig.from_env`): CAPTURE_PERCENT (0-100, default 0 = off),
CAPTURE_S3_URI (s3://bucket/prefix), CAPTURE_FLUSH_SECONDS (5), CAPTURE_BATCH_RECORDS (1000),
CAPTURE_QUEUE_RECORDS (10000, the records waiting for the writer, the batch it is filling included),
CAPTURE_WRITE_ATTEMPTS (4), CAPTURE_EXIT_SECONDS (3). S3's endpoint and credentials come from boto3's own
environment (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...; on ECS the task role).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from random import random
from typing import Any, NamedTuple, Protocol, TypedDict

import numpy as np
import orjson

from serving.errors import ServingError

log = logging.getLogger("serving")

ROUTES = ("/predict", "/invocations")
POLL_SECONDS = 0.1  # how often the writer thread looks at the queue's length
BLOCK_RECORDS = 1000  # requests per line (CaptureBlock) at most; the writer offers the GIL between lines
FORMAT = 2  # the CaptureBlock format written (1: one line per request, still read by the reader)
_INT_TYPES = frozenset({"integer", "long"})  # MLflow signature types whose values are JSON integers


class CaptureConfigError(ServingError, ValueError):
    """A CAPTURE_* setting out of range, or capture switched on without a valid CAPTURE_S3_URI."""


class CaptureBlock(TypedDict):
    """One line of a capture file: consecutive requests answered 200, column by column (module docstring)."""

    format: int  # 2
    model_name: str
    model_version: str
    request_id: list[str]  # one per request
    time_ms: list[int]  # one per request: milliseconds since the epoch (UTC)
    route: list[str]  # one per request: "/predict" or "/invocations"
    rows: list[int]  # one per request: its number of input rows
    columns: dict[str, list[Any]]  # signature order, one JSON value per input row of the block
    predictions: list[Any]  # one per input row of the block


class CaptureRecord(TypedDict):
    """One request answered 200: a line of format 1, and what flightdeck.monitoring.capture.iter_records yields
    for either format."""

    request_id: str
    time: str  # ISO-8601 UTC with milliseconds, "2026-12-07T13:05:01.123Z"
    model_name: str
    model_version: str
    route: str  # "/predict" or "/invocations"
    columns: dict[str, list[Any]]  # signature order, one JSON value per row
    predictions: list[Any]  # one per row


class DropReason:
    """The `reason` label values of capture_dropped_total."""

    QUEUE_FULL = "queue_full"
    WRITE_FAILED = "write_failed"


class CaptureCounters(Protocol):
    """Where capture counts what it wrote and dropped (serving.observability.Metrics implements it)."""

    def capture_written(self, n: int) -> None:
        """`n` records reached S3."""

    def capture_dropped(self, reason: str, n: int) -> None:
        """`n` records were lost, for `reason` (a DropReason value)."""


@dataclass(frozen=True)
class CaptureConfig:
    """Capture settings; `percent` 0 (the default) switches capture off."""

    percent: float = 0.0  # share of 200 scoring responses recorded, 0-100
    s3_uri: str = ""  # s3://bucket/prefix
    flush_seconds: float = 5.0  # a batch is written at most this long after its first record
    batch_records: int = 1000  # ... or as soon as it holds this many records
    queue_records: int = 10_000  # records waiting for the writer; past this they are dropped
    write_attempts: int = 4  # PUT attempts per batch (backoff 0.5 s, 1 s, 2 s, ... between them)
    exit_seconds: float = 3.0  # budget of the final flush at worker exit (under docker stop's 5-10 s)

    @property
    def enabled(self) -> bool:
        """True when a share of requests is recorded."""
        return self.percent > 0

    @property
    def bucket_prefix(self) -> tuple[str, str]:
        """(bucket, prefix without slashes at either end) of `s3_uri`.

        Raises CaptureConfigError when `s3_uri` is not s3://bucket[/prefix]."""
        if not self.s3_uri.startswith("s3://"):
            raise CaptureConfigError(f"CAPTURE_S3_URI must be s3://bucket/prefix, got {self.s3_uri!r}")
        bucket, _, prefix = self.s3_uri[len("s3://") :].partition("/")
        if not bucket:
            raise CaptureConfigError(f"CAPTURE_S3_URI names no bucket: {self.s3_uri!r}")
        return bucket, prefix.strip("/")

    def validate(self) -> None:
        """Raises CaptureConfigError naming the first setting out of range (and a bad URI when enabled)."""
        if not 0 <= self.percent <= 100 or math.isnan(self.percent):
            raise CaptureConfigError(f"CAPTURE_PERCENT must be within 0-100, got {self.percent}")
        for name, value in (
            ("CAPTURE_FLUSH_SECONDS", self.flush_seconds),
            ("CAPTURE_BATCH_RECORDS", self.batch_records),
            ("CAPTURE_QUEUE_RECORDS", self.queue_records),
            ("CAPTURE_WRITE_ATTEMPTS", self.write_attempts),
        ):
            if not value > 0:
                raise CaptureConfigError(f"{name} must be positive, got {value}")
        if self.exit_seconds < 0:
            raise CaptureConfigError(f"CAPTURE_EXIT_SECONDS must be >= 0, got {self.exit_seconds}")
        if self.enabled:
            self.bucket_prefix  # noqa: B018  # raises for a bad URI

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CaptureConfig:
        """The CAPTURE_* variables of `environ` (default os.environ) over the defaults, validated.

        Raises CaptureConfigError for a value that is not a number or out of range."""
        env = os.environ if environ is None else environ
        d = cls()

        def num(name: str, default: float, cast: Callable[[str], Any]) -> Any:
            raw = (env.get(name) or "").strip()
            if not raw:
                return default
            try:
                return cast(raw)
            except ValueError:
                raise CaptureConfigError(f"{name} must be a number, got {raw!r}") from None

        config = cls(
            percent=num("CAPTURE_PERCENT", d.percent, float),
            s3_uri=(env.get("CAPTURE_S3_URI") or "").strip(),
            flush_seconds=num("CAPTURE_FLUSH_SECONDS", d.flush_seconds, float),
            batch_records=num("CAPTURE_BATCH_RECORDS", d.batch_records, int),
            queue_records=num("CAPTURE_QUEUE_RECORDS", d.queue_records, int),
            write_attempts=num("CAPTURE_WRITE_ATTEMPTS", d.write_attempts, int),
            exit_seconds=num("CAPTURE_EXIT_SECONDS", d.exit_seconds, float),
        )
        config.validate()
        return config


class _Item(NamedTuple):
    """What the request handler queues (as a plain tuple, in this order): references only, no copies or
    formatting on the hot path."""

    request_id: str
    time: float  # seconds since the epoch
    route: str
    columns: Sequence[Sequence[Any]]  # Batch.columns (may be empty when `matrix` holds the batch)
    matrix: Any  # Batch.matrix: a float64 rows x columns array, or None
    predictions: list[Any]


def _json_default(value: Any) -> Any:
    """JSON for what orjson does not take natively: numpy arrays of any dtype, numpy scalars, the rest as str."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars (object/str dtypes orjson refuses)
        return value.tolist()
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


def default_s3_client() -> Any:
    """A boto3 S3 client from boto3's standard environment (endpoint, keys, region; the task role on ECS).

    One attempt per call (the writer retries with its own backoff), short timeouts so a dead endpoint
    fails fast. Imported here: boto3 costs ~0.3 s and a server without capture never loads it."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=2, read_timeout=5)
    return boto3.session.Session().client("s3", config=config)


class Capture:
    """The per-worker capture queue and its background writer (see the module docstring).

    `offer` is the only method the request path calls. `start` (gunicorn post_worker_init) starts the
    writer thread; `close` (worker_exit) stops it and writes what is left; `flush_now` writes what is
    queued in the calling thread (tests, tools).

    `pending` is the queue: a deque the request threads append to and one consumer at a time (the writer, or
    `flush_now` once the writer is stopped) pops from the left; deque's append and popleft are atomic, so
    neither side takes a lock. Its bound is checked before the append: with several request threads it can
    be passed by at most one record per other thread.
    """

    def __init__(
        self,
        config: CaptureConfig,
        counters: CaptureCounters,
        model_name: str,
        model_version: str,
        columns: Sequence[tuple[str, str]],
        client_factory: Callable[[], Any] = default_s3_client,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`columns`: (name, signature type) in the validator's order. Raises CaptureConfigError for a bad config."""
        config.validate()
        self.config = config
        self.counters = counters
        self.model_name = model_name
        self.model_version = model_version
        self.names = [name for name, _ in columns]
        self._int_columns = frozenset(i for i, (_, kind) in enumerate(columns) if kind in _INT_TYPES)
        self.bucket, prefix = config.bucket_prefix
        self.key_base = "/".join(p for p in (prefix, model_name, model_version) if p)
        self.percent = config.percent
        self.limit = config.queue_records
        self.pending: deque[tuple[Any, ...]] = deque()
        self._client_factory = client_factory
        self._client: Any = None
        self._sleep = sleep
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._stop = threading.Event()
        self._exit_deadline = 0.0  # time.monotonic() by which close() must be done (set before _stop)
        self._thread: threading.Thread | None = None
        self._last_written = 0  # records the writer thread wrote once stopping (for close's count)
        self._in_flight = 0  # records of the batch _write holds now (taken off the queue, not yet settled)
        self._abandoned = False  # close() gave up on the writer and counted its in-flight batch as dropped
        self._host = socket.gethostname()

    # -- the request path ---------------------------------------------------------------------
    def offer(self, request_id: str | None, route: str, columns: Any, matrix: Any, predictions: list[Any]) -> None:
        """Maybe record one 200 answer: a sampling draw, then an append to `pending` unless it holds
        queue_records already (then dropped, counted).

        `columns`/`matrix`: the validated Batch's; `predictions`: the list answered. Never raises
        for a full queue and never blocks."""
        if self.percent < 100 and random() * 100 >= self.percent:
            return
        pending = self.pending
        if len(pending) >= self.limit:
            self.counters.capture_dropped(DropReason.QUEUE_FULL, 1)
            return
        pending.append((request_id or "", time.time(), route, columns, matrix, predictions))

    # -- the writer ---------------------------------------------------------------------------
    def start(self) -> None:
        """Create the S3 client and start the background writer in this process (idempotent). Call it in each
        gunicorn worker."""
        if self._thread is not None and self._thread.is_alive():
            return
        try:  # boto3's import and client set-up here, before the worker serves its first request
            self._get_client()
        except Exception:  # a broken environment: every write will fail and be counted
            log.exception("capture: no S3 client; records will be dropped as write_failed")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = None) -> int:
        """Stop the writer and write every record still queued, within `timeout` seconds (default
        config.exit_seconds); what cannot be written by then is counted as write_failed.

        Returns the number of records written by this call and the writer's last batches."""
        budget = self.config.exit_seconds if timeout is None else timeout
        deadline = time.monotonic() + budget
        self._exit_deadline = deadline
        self._stop.set()
        written = 0
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            written += self._last_written
            if self._thread.is_alive() and self._in_flight:
                # a PUT still in flight past the budget: the worker exits with it, so count it lost now
                self._abandoned = True
                log.warning("capture: %d records in flight at exit, dropped", self._in_flight)
                self.counters.capture_dropped(DropReason.WRITE_FAILED, self._in_flight)
        written += self.flush_now(deadline)
        return written

    def flush_now(self, deadline: float | None = None) -> int:
        """Write every record queued now, in this thread, in hour-bounded batches of at most
        batch_records; retries stop at `deadline` (time.monotonic()). Returns the records written."""
        return self._drain(deadline, whole=True)

    def _drain(self, deadline: float | None = None, whole: bool = True) -> int:
        """Pop `pending` from the left in batches of at most batch_records that never span two UTC hours and
        write each; `whole` False: stop once less than a full batch is left (a batch cut at the hour is
        written). Returns the records written."""
        pending, size = self.pending, self.config.batch_records
        written = 0
        while pending and (whole or len(pending) >= size):
            batch = [pending.popleft()]
            hour = _hour(batch[0][1])
            while len(batch) < size:
                try:
                    item = pending.popleft()
                except IndexError:
                    break
                if _hour(item[1]) != hour:
                    pending.appendleft(item)  # the next batch's first (the only consumer: order kept)
                    break
                batch.append(item)
            written += self._write(batch, deadline)
        return written

    def _run(self) -> None:
        """The writer thread: every POLL_SECONDS, a look at the queue's length; once it holds batch_records, write
        the full batches; once its first record is flush_seconds old, write it all; on stop, write it all and
        return.

        It sleeps on the stop event rather than blocking on the queue: a consumer woken by every put is a thread
        switch per request (measured: +30 % CPU per 1-row request); polling costs one wake-up per POLL_SECONDS
        whatever the request rate, and the GIL is taken in one burst per batch."""
        cfg, pending = self.config, self.pending
        while True:
            stopping = self._stop.wait(POLL_SECONDS)
            if stopping:
                self._last_written = self._drain(time.monotonic() + cfg.exit_seconds, whole=True)
                return
            if not pending:
                continue
            try:
                if len(pending) >= cfg.batch_records:
                    self._drain(None, whole=False)
                if pending and time.time() - pending[0][1] >= cfg.flush_seconds:
                    self._drain(None, whole=True)
            except Exception:  # a bug, not S3 (_write counts those): keep the writer alive
                log.exception("capture: writer error")

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _next_seq(self) -> int:
        with self._seq_lock:
            seq = self._seq
            self._seq += 1
        return seq

    def key_for(self, first_time: float, seq: int, pid: int | None = None) -> str:
        """The object key of a batch whose first record is at `first_time` (seconds since the epoch)."""
        stamp = datetime.fromtimestamp(first_time, UTC)
        return (
            f"{self.key_base}/{stamp:%Y-%m-%d}/{stamp:%H}/"
            f"{int(first_time * 1000)}-{self._host}-{os.getpid() if pid is None else pid}-{seq}.jsonl"
        )

    def block(self, items: Sequence[Sequence[Any]]) -> CaptureBlock:
        """The JSON-ready block of queued items (at most BLOCK_RECORDS): per-request lists, and per column the
        values of every row. Numeric matrices are stacked into one array and handed to orjson as numpy arrays
        (integer columns as int64 when they hold no null); columns of mixed batches are concatenated."""
        predictions: list[Any] = []
        rows: list[int] = []
        for item in items:
            predictions.extend(item[5])
            rows.append(len(item[5]))
        n_cols = len(self.names)
        if all(not item[3] and item[4] is not None for item in items):  # the fast path: numeric matrices only
            stacked = np.concatenate([item[4] for item in items]) if items else np.empty((0, n_cols))
            by_column = np.ascontiguousarray(stacked.reshape(-1, n_cols).T, dtype=np.float64)
            values: list[Any] = list(by_column)
            for i in self._int_columns:  # the fast path made every column float64; ints fit exactly
                col = by_column[i]
                nulls = np.isnan(col)
                values[i] = (
                    col.astype(np.int64)
                    if not nulls.any()
                    else [None if m else int(v) for v, m in zip(col, nulls, strict=True)]
                )
        else:
            values = [[] for _ in range(n_cols)]
            for item in items:
                if item[3]:
                    for out, col in zip(values, item[3], strict=True):
                        out.extend(col)
                elif item[4] is not None:
                    lists = item[4].T.tolist()
                    for i, (out, col) in enumerate(zip(values, lists, strict=True)):
                        out.extend(col if i not in self._int_columns else [int(v) if v == v else None for v in col])
        return {
            "format": FORMAT,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "request_id": [item[0] for item in items],
            "time_ms": [int(item[1] * 1000) for item in items],
            "route": [item[2] for item in items],
            "rows": rows,
            "columns": dict(zip(self.names, values, strict=True)),
            "predictions": predictions,
        }

    def serialize(self, batch: Sequence[Sequence[Any]]) -> bytes:
        """The batch as JSON lines, one CaptureBlock of at most BLOCK_RECORDS requests per line."""
        lines = []
        for i in range(0, len(batch), BLOCK_RECORDS):
            if i:
                # hand the GIL to a request waiting for it now rather than at the interpreter's next forced
                # switch (up to 5 ms later)
                time.sleep(0)
            lines.append(
                orjson.dumps(self.block(batch[i : i + BLOCK_RECORDS]), default=_json_default, option=_DUMPS_OPTIONS)
            )
        return b"".join(lines)

    def _write(self, batch: Sequence[Sequence[Any]], deadline: float | None = None) -> int:
        """PUT one batch, retrying with backoff; returns len(batch) when written, 0 when dropped (counted).

        `deadline` (time.monotonic()): no new attempt starts after it (the exit flush's budget)."""
        n = len(batch)
        if deadline is not None and time.monotonic() >= deadline:  # the exit budget is spent: no attempt
            log.warning("capture: %d records dropped, no time left to write them", n)
            self.counters.capture_dropped(DropReason.WRITE_FAILED, n)
            return 0
        try:
            body = self.serialize(batch)
        except Exception:  # a value nothing can turn into JSON: lose this batch, not the writer
            log.exception("capture: could not serialize %d records; dropped", n)
            self.counters.capture_dropped(DropReason.WRITE_FAILED, n)
            return 0
        key = self.key_for(batch[0][1], self._next_seq())
        self._in_flight = n
        try:
            return self._put(batch, key, body, deadline)
        finally:
            self._in_flight = 0

    def _put(self, batch: Sequence[Sequence[Any]], key: str, body: bytes, deadline: float | None) -> int:
        """_write's attempts for one serialized batch: len(batch) when written, 0 when dropped (counted, unless
        close() already counted it as abandoned)."""
        n = len(batch)
        error: Exception | None = None
        for attempt in range(self.config.write_attempts):
            if deadline is None and self._stop.is_set():
                # the worker is exiting while this batch was in flight: its retries get the exit budget, so
                # close() sees the writer done (and the records written or counted) before the worker ends
                deadline = self._exit_deadline
            if attempt:
                pause = 0.5 * 2 ** (attempt - 1)
                if deadline is not None and time.monotonic() + pause >= deadline:
                    break
                self._sleep(pause)
            try:
                self._get_client().put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-ndjson"
                )
            except Exception as exc:  # botocore's errors and anything a client factory raises
                error = exc
                continue
            self.counters.capture_written(n)  # written after all: the object is in S3
            return n
        if not self._abandoned:
            log.warning("capture: %d records dropped, s3://%s/%s not written: %s", n, self.bucket, key, error)
            self.counters.capture_dropped(DropReason.WRITE_FAILED, n)
        return 0


def _hour(t: float) -> int:
    return int(t // 3600)
