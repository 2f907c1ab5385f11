"""Inference capture: sampled requests and their predictions, written to S3 off the request path.

The contract (the `monitor` DAG and flightdeck.monitoring.capture read it; do not change it):

    s3://<bucket>/<prefix>/<model_name>/<model_version>/<YYYY-MM-DD>/<HH>/<unix_ms>-<hostname>-<pid>-<seq>.jsonl

- <YYYY-MM-DD>/<HH>: the UTC date and hour of the file's first record. A file never spans two hours
  (the writer cuts a batch at the hour), so every record of a file lies in the hour its key names.
- <unix_ms>: the first record's time in milliseconds since the epoch; <hostname> and <pid> name the
  writing worker (on Docker the hostname is the container id), <seq> counts that worker's files from 0.
- One JSON object per line, one line per request (a `CaptureRecord`):

      {"request_id": "9f0c...", "time": "2026-12-07T13:05:01.123Z", "model_name": "flightdeck-model",
       "model_version": "3", "route": "/predict", "columns": {"age": [41, 37], "income": [5200.0, null]},
       "predictions": [1, 0]}

  `columns`: the validated input batch in the signature's column order, one list of JSON values per
  column (integer columns as integers, a missing optional value as null); `predictions`: one per row
  (a label, a value, or a list of class probabilities for /invocations' predict_proba).

Only requests answered 200 by a scoring route are captured, and of those CAPTURE_PERCENT percent.

How it stays off the request path: the handler does a sampling check and a non-blocking `put_nowait`
of a small tuple onto a bounded queue (~1-2 microseconds); a background thread in each gunicorn worker
(started by serving/gunicorn.conf.py's post_worker_init, never in the preloaded master, whose threads
would not survive the fork) turns the tuples into JSON lines and PUTs one object per batch. A full
queue drops the record; a batch S3 refuses `write_attempts` times is dropped; both are counted in
/metrics (`capture_dropped_total{reason="queue_full"|"write_failed"}`, written records in
`capture_records_total`). On a graceful stop (SIGTERM: docker stop, an ECS task stopping) gunicorn's
worker_exit hook calls `Capture.close`, which writes everything still queued before the worker exits,
within `exit_seconds`.

Settings (environment, read by `CaptureConfig.from_env`): CAPTURE_PERCENT (0-100, default 0 = off),
CAPTURE_S3_URI (s3://bucket/prefix), CAPTURE_FLUSH_SECONDS (5), CAPTURE_BATCH_RECORDS (1000),
CAPTURE_QUEUE_RECORDS (10000), CAPTURE_WRITE_ATTEMPTS (4), CAPTURE_EXIT_SECONDS (3). S3's endpoint
and credentials come from boto3's own environment (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...; on
ECS the task role).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypedDict

import orjson

from serving.errors import ServingError

log = logging.getLogger("serving")

ROUTES = ("/predict", "/invocations")
POLL_SECONDS = 0.1  # how often the writer thread looks at the queue
YIELD_EVERY = 50  # records the writer serializes between offers of the GIL to the request thread
_INT_TYPES = frozenset({"integer", "long"})  # MLflow signature types whose values are JSON integers


class CaptureConfigError(ServingError, ValueError):
    """A CAPTURE_* setting out of range, or capture switched on without a valid CAPTURE_S3_URI."""


class CaptureRecord(TypedDict):
    """One line of a capture file: one request answered 200 (see the module docstring)."""

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
    """What the request handler queues: references only, no copies or formatting on the hot path."""

    request_id: str
    time: float  # seconds since the epoch
    route: str
    columns: Sequence[Sequence[Any]]  # Batch.columns (may be empty when `matrix` holds the batch)
    matrix: Any  # Batch.matrix: a float64 rows x columns array, or None
    predictions: list[Any]


_iso_cache: tuple[int, str] = (-1, "")  # (second, its "YYYY-MM-DDTHH:MM:SS"): strftime once a second, not per record


def _iso(t: float) -> str:
    """`t` (seconds since the epoch) as "2026-12-07T13:05:01.123Z" (UTC, milliseconds)."""
    global _iso_cache
    ms = int(t * 1000)
    second, text = _iso_cache  # one tuple read: consistent even if another thread replaces it
    if second != ms // 1000:
        second = ms // 1000
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _iso_cache = (second, text)
    return f"{text}.{ms % 1000:03d}Z"


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
        self._int_columns = [i for i, (_, kind) in enumerate(columns) if kind in _INT_TYPES]
        self.bucket, prefix = config.bucket_prefix
        self.key_base = "/".join(p for p in (prefix, model_name, model_version) if p)
        self.percent = config.percent
        self.queue: queue.Queue[_Item] = queue.Queue(maxsize=config.queue_records)
        self._client_factory = client_factory
        self._client: Any = None
        self._sleep = sleep
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_written = 0  # records the writer thread wrote in its final batch (for close's count)
        self._host = socket.gethostname()

    # -- the request path ---------------------------------------------------------------------
    def offer(self, request_id: str | None, route: str, columns: Any, matrix: Any, predictions: list[Any]) -> None:
        """Maybe record one 200 answer: a sampling draw, then a non-blocking put (a full queue: dropped, counted).

        `columns`/`matrix`: the validated Batch's; `predictions`: the list answered. Never raises
        for a full queue and never blocks."""
        if self.percent < 100 and random.random() * 100 >= self.percent:
            return
        try:
            self.queue.put_nowait(_Item(request_id or "", time.time(), route, columns, matrix, predictions))
        except queue.Full:
            self.counters.capture_dropped(DropReason.QUEUE_FULL, 1)

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

        Returns the number of records written by this call and the writer's last batch."""
        budget = self.config.exit_seconds if timeout is None else timeout
        deadline = time.monotonic() + budget
        self._stop.set()
        written = 0
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            written += self._last_written
        written += self.flush_now(deadline)
        return written

    def flush_now(self, deadline: float | None = None) -> int:
        """Write every record queued now, in this thread, in hour-bounded batches of at most
        batch_records; retries stop at `deadline` (time.monotonic()). Returns the records written."""
        written = 0
        batch: list[_Item] = []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if batch and (len(batch) >= self.config.batch_records or _hour(item.time) != _hour(batch[0].time)):
                written += self._write(batch, deadline)
                batch = []
            batch.append(item)
        if batch:
            written += self._write(batch, deadline)
        return written

    def _run(self) -> None:
        """The writer thread: every POLL_SECONDS, move what is queued into the batch, writing it when it holds
        batch_records, when its first record is flush_seconds old, or before a record of another UTC hour; on
        stop, write the batch in hand and return.

        It sleeps on the stop event rather than blocking in `queue.get`: a consumer waiting in get is woken by
        every put, a thread switch per request (measured: +30 % CPU per 1-row request); polling costs one
        wake-up per POLL_SECONDS whatever the request rate."""
        cfg = self.config
        batch: list[_Item] = []
        due = math.inf
        while True:
            stopping = self._stop.wait(POLL_SECONDS)
            while True:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if batch and _hour(item.time) != _hour(batch[0].time):
                    self._write(batch)
                    batch = []
                if not batch:
                    due = time.monotonic() + cfg.flush_seconds
                batch.append(item)
                if len(batch) >= cfg.batch_records:
                    self._write(batch)
                    batch = []
            if batch and (time.monotonic() >= due or stopping):
                n = self._write(batch, None if not stopping else time.monotonic() + cfg.exit_seconds)
                if stopping:
                    self._last_written = n
                batch = []
            if stopping:
                return

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

    def record(self, item: _Item) -> CaptureRecord:
        """The JSON-ready record of one queued item (integer columns of a numeric matrix back to integers)."""
        if item.columns:
            columns = {name: list(col) for name, col in zip(self.names, item.columns, strict=True)}
        elif item.matrix is not None:
            lists = item.matrix.T.tolist()
            for i in self._int_columns:  # the fast path made every column float64; ints fit exactly
                lists[i] = [int(v) if v == v else None for v in lists[i]]
            columns = dict(zip(self.names, lists, strict=True))
        else:
            columns = {name: [] for name in self.names}
        return {
            "request_id": item.request_id,
            "time": _iso(item.time),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "route": item.route,
            "columns": columns,
            "predictions": item.predictions,
        }

    def serialize(self, batch: Sequence[_Item]) -> bytes:
        """The batch as JSON lines (one CaptureRecord per line, each ending in a newline)."""
        dumps, record = orjson.dumps, self.record
        lines = []
        for i, item in enumerate(batch):
            lines.append(dumps(record(item), default=_json_default, option=_DUMPS_OPTIONS))
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                # hand the GIL to a request waiting for it now rather than at the interpreter's next forced
                # switch (up to 5 ms later): a batch of 1000 records is ~10 ms of CPU
                time.sleep(0)
        return b"".join(lines)

    def _write(self, batch: Sequence[_Item], deadline: float | None = None) -> int:
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
        key = self.key_for(batch[0].time, self._next_seq())
        error: Exception | None = None
        for attempt in range(self.config.write_attempts):
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
            self.counters.capture_written(n)
            return n
        log.warning("capture: %d records dropped, s3://%s/%s not written: %s", n, self.bucket, key, error)
        self.counters.capture_dropped(DropReason.WRITE_FAILED, n)
        return 0


def _hour(t: float) -> int:
    return int(t // 3600)
