"""Batch scoring: a CSV/Parquet key or prefix in S3 -> predictions in S3, with the serving evaluator.

A job is three steps (dags/batch_predict.py wires them as tasks):

1. `resolve`: the registered model version (from a version or an alias), the input objects (keys, ETags,
   sizes) and the job id, a hash of the model version, the input's data version and the options. The same
   inputs give the same job id, and so the same output prefix:
   `s3://<bucket>/predictions/<model name>/<version>/<job id>/`.
2. `score`: each input file is read in chunks of `chunk_rows` rows (pyarrow: Parquet row batches, CSV
   blocks), so memory holds about one chunk and the next. A chunk is validated and scored by the model
   server's own code: `serving.model.load_model_dir` loads the model and `LoadedModel.validator` checks the
   rows as `/predict` checks `{"columns": {...}}` (Parquet values as they are typed; CSV text first goes
   through the server's CSV coercion, `serving.mlflow_protocol.coerce`, as `/invocations` reads text/csv).
   A row the server would refuse (422) goes to `rejects/` with its row number, error code and message; the
   others are scored together. The first refusal of a chunk is narrowed down by halving the chunk, so a
   chunk with b bad rows costs about 2*b*log2(chunk) extra validations, a clean chunk one.
   Each chunk is one Parquet object, `part-<file index>-<chunk index>.parquet`, written whole by one PUT
   (S3 PUTs are atomic) with its row counts in the object metadata; its rejects, if any, are written just
   before it. A re-run (an Airflow retry, or the same job triggered again) lists the parts already there
   and skips them (a file whose parts are all present is not downloaded), so a run killed midway and
   run again ends with the same bytes under the same keys and no duplicate rows.
3. `write_manifest`: `_manifest.json`, written last, from the parts present in S3: model name, version,
   run id and the alias asked, the input's data version, row counts per file and in all, the parts, times.

The input's data version is the SHA-256 of its sorted `key<TAB>etag` lines (an object rewritten with other
content gets another ETag, so another version); when an input key lies in a DVC remote's content-addressed
layout (`.../files/md5/ab/cdef...`, DVC 3), its DVC md5 is recorded too.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from flightdeck.errors import FlightdeckError

if TYPE_CHECKING:
    from serving.model import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 100_000
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "probability_"  # one column per class: probability_<class label>
ROW_COLUMN = "row"  # the row's 0-based position among the data rows of its input file
MANIFEST_NAME = "_manifest.json"
REJECTS_DIR = "rejects"
_PART = re.compile(r"part-(\d{5})-(\d{6})\.parquet\Z")
_DVC_MD5 = re.compile(r"files/md5/([0-9a-f]{2})/([0-9a-f]{30})\Z")
# metadata keys of a part object (S3 returns them lower-cased, as x-amz-meta-*)
META_ROWS_IN, META_ROWS_OUT, META_REJECTED, META_LAST = "rows-in", "rows-out", "rows-rejected", "last-chunk"


class BatchPredictError(FlightdeckError):
    """A batch scoring job cannot run as asked."""


class NoInputFiles(BatchPredictError, FileNotFoundError):
    """The input key or prefix holds no CSV or Parquet object."""


class InputSchemaError(BatchPredictError, ValueError):
    """An input file lacks columns the model's signature requires (every row would be refused)."""


class BadLocation(BatchPredictError, ValueError):
    """An S3 location that is neither `s3://bucket/key` nor a key in the data bucket."""


class InputFormat(StrEnum):
    """How an input object is read, from its name: `.csv` or `.parquet` / `.pq`."""

    CSV = "csv"
    PARQUET = "parquet"


_SUFFIXES = {".csv": InputFormat.CSV, ".parquet": InputFormat.PARQUET, ".pq": InputFormat.PARQUET}


@dataclass(frozen=True)
class InputObject:
    """One input file: its key, ETag (without quotes), size in bytes and format."""

    key: str
    etag: str
    size: int
    format: InputFormat


@dataclass(frozen=True)
class Options:
    """What a job produces besides its model and input (part of the job id).

    `chunk_rows`: rows per part (>= 1). `return_probabilities`: add one `probability_<class>` column per
    class (classifiers only). `id_column`: carry only this input column to the output (default: every input
    column).
    """

    chunk_rows: int = DEFAULT_CHUNK_ROWS
    return_probabilities: bool = False
    id_column: str | None = None


@dataclass(frozen=True)
class Job:
    """A resolved job: everything `score` and `write_manifest` need (JSON-ready through to_dict/from_dict)."""

    job_id: str
    model_name: str
    model_version: str
    run_id: str
    alias: str  # the alias asked for ("" when a version number was asked)
    input_bucket: str
    inputs: tuple[InputObject, ...]
    data_version: str
    dvc_data_version: str  # "" unless the input is a DVC-tracked object (DVC md5; several joined by ",")
    options: Options
    output_bucket: str
    output_prefix: str  # ends with "/": <root>/<model>/<version>/<job id>/

    def to_dict(self) -> dict[str, Any]:
        """The job as plain JSON values (the XCom shape)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        """The inverse of to_dict."""
        inputs = tuple(InputObject(**{**o, "format": InputFormat(o["format"])}) for o in d["inputs"])
        return cls(**{**d, "inputs": inputs, "options": Options(**d["options"])})

    def part_key(self, file_index: int, chunk_index: int) -> str:
        """The key of a file's chunk of predictions."""
        return f"{self.output_prefix}part-{file_index:05d}-{chunk_index:06d}.parquet"

    def rejects_key(self, file_index: int, chunk_index: int) -> str:
        """The key of a file's chunk of refused rows (only written when the chunk has some)."""
        return f"{self.output_prefix}{REJECTS_DIR}/part-{file_index:05d}-{chunk_index:06d}.parquet"


@dataclass(frozen=True)
class Reject:
    """A row the serving validator (or the model) refused: its row number, the error code and message."""

    row: int
    code: str
    message: str


@dataclass
class ChunkResult:
    """One chunk scored: positions of the accepted rows (in the chunk), their predictions (and class
    probabilities, one list per row), and the refused rows."""

    accepted: list[int]
    predictions: list[Any]
    probabilities: list[list[float]] | None
    rejects: list[Reject]


@dataclass(frozen=True)
class PartInfo:
    """A part present in S3, from its object metadata."""

    key: str
    file_index: int
    chunk_index: int
    size: int
    rows_in: int
    rows_out: int
    rows_rejected: int
    last: bool


class ScoreSummary(TypedDict):
    """What `score` returns (the XCom of the score task); times are UTC ISO 8601, seconds wall clock."""

    job_id: str
    output: str
    started_at: str
    finished_at: str
    seconds: float
    chunks_total: int
    chunks_scored: int  # scored by this run
    chunks_skipped: int  # already present (written by an earlier, interrupted run)
    rows_scored: int  # input rows read and scored by this run
    rows_per_second: float  # rows_scored / seconds
    stage_seconds: dict[str, float]  # where this run's time went: download, read, convert, evaluate, write


# ---- locations and resolution -----------------------------------------------------------------


def split_location(location: str, default_bucket: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); a bare `key` -> (default_bucket, key) (leading "/" dropped).

    Raises BadLocation for an `s3://` URI without a bucket, or another URI scheme."""
    location = location.strip()
    if location.startswith("s3://"):
        bucket, _, key = location[len("s3://") :].partition("/")
        if not bucket:
            raise BadLocation(f"{location!r} names no bucket")
        return bucket, key
    if "://" in location:
        raise BadLocation(f"{location!r}: only s3:// locations or keys in the data bucket are read")
    return default_bucket, location.lstrip("/")


def list_inputs(s3: Any, bucket: str, key_or_prefix: str) -> list[InputObject]:
    """The CSV/Parquet objects at `key_or_prefix` in `bucket`: that object, or every one under the prefix
    (a prefix is read as a folder: `in/a` lists `in/a/...`, not `in/ab`), sorted by key.

    Raises NoInputFiles when there is none (the message names the location and the suffixes read)."""
    objects: list[InputObject] = []
    fmt = _SUFFIXES.get(Path(key_or_prefix).suffix.lower())
    if fmt and key_or_prefix and not key_or_prefix.endswith("/"):
        try:
            head = s3.head_object(Bucket=bucket, Key=key_or_prefix)
        except s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
        else:
            etag = str(head["ETag"]).strip('"')
            return [InputObject(key_or_prefix, etag, int(head["ContentLength"]), fmt)]
    prefix = key_or_prefix if not key_or_prefix or key_or_prefix.endswith("/") else key_or_prefix + "/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            fmt = _SUFFIXES.get(Path(obj["Key"]).suffix.lower())
            if fmt:
                objects.append(InputObject(obj["Key"], str(obj["ETag"]).strip('"'), int(obj["Size"]), fmt))
    if not objects:
        raise NoInputFiles(
            f"no CSV or Parquet object ({', '.join(sorted(_SUFFIXES))}) at s3://{bucket}/{key_or_prefix}"
        )
    return sorted(objects, key=lambda o: o.key)


def data_version(bucket: str, inputs: Sequence[InputObject]) -> str:
    """The input's data version: SHA-256 (hex) of the sorted `s3://bucket/key<TAB>etag` lines."""
    lines = sorted(f"s3://{bucket}/{o.key}\t{o.etag}" for o in inputs)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def dvc_data_version(inputs: Sequence[InputObject]) -> str:
    """The DVC md5 of each input lying in a DVC 3 remote's layout (`files/md5/ab/cdef...`), joined by ","
    ("" when none does)."""
    found = [m.group(1) + m.group(2) for o in inputs if (m := _DVC_MD5.search(o.key))]
    return ",".join(found)


def make_job_id(model_name: str, model_version: str, input_data_version: str, options: Options) -> str:
    """A deterministic job id (16 hex chars): the SHA-256 of the model version, data version and options."""
    identity = {
        "model_name": model_name,
        "model_version": str(model_version),
        "data_version": input_data_version,
        "options": asdict(options),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def plan_job(
    *,
    model_name: str,
    model_version: str,
    run_id: str,
    alias: str,
    input_bucket: str,
    inputs: Sequence[InputObject],
    options: Options,
    output_root: str,
) -> Job:
    """The job for already-resolved model and inputs; `output_root` is `s3://bucket/prefix` (the output goes
    to `<root>/<model>/<version>/<job id>/`).

    Raises BadLocation when `output_root` is not an s3:// URI; ValueError for chunk_rows < 1."""
    if options.chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {options.chunk_rows}")
    if not output_root.startswith("s3://"):
        raise BadLocation(f"output root {output_root!r} must be an s3:// URI")
    version = data_version(input_bucket, inputs)
    job_id = make_job_id(model_name, model_version, version, options)
    out_bucket, root = split_location(output_root, "")
    root = root.strip("/")
    prefix = f"{root + '/' if root else ''}{model_name}/{model_version}/{job_id}/"
    return Job(
        job_id=job_id,
        model_name=model_name,
        model_version=str(model_version),
        run_id=run_id,
        alias=alias,
        input_bucket=input_bucket,
        inputs=tuple(inputs),
        data_version=version,
        dvc_data_version=dvc_data_version(inputs),
        options=options,
        output_bucket=out_bucket,
        output_prefix=prefix,
    )


def resolve(
    *,
    model_name: str,
    model: str,
    input_location: str,
    output_location: str = "",
    options: Options | None = None,
    s3: Any = None,
    tracking_uri: str | None = None,
) -> Job:
    """Resolve `model` (a version number or an alias) of registered `model_name` in MLflow, list the input
    (`s3://bucket/key-or-prefix`, or a key/prefix in the data bucket) and plan the job. `output_location`
    defaults to `s3://<data bucket>/predictions`.

    Raises NoInputFiles (nothing to read), BadLocation (a malformed location) and MLflow's
    RestException for an unknown model, version or alias."""
    from flightdeck import images, settings
    from flightdeck import s3 as s3_mod

    conf = settings.load()
    s3 = s3 or s3_mod.client()
    ref = images.resolve_model(model_name, model, tracking_uri=tracking_uri)
    bucket, key = split_location(input_location, conf.data_bucket)
    inputs = list_inputs(s3, bucket, key)
    out_bucket, out_root = split_location(output_location or "predictions", conf.data_bucket)
    job = plan_job(
        model_name=ref.name,
        model_version=ref.version,
        run_id=ref.run_id,
        alias=ref.alias,
        input_bucket=bucket,
        inputs=inputs,
        options=options or Options(),
        output_root=f"s3://{out_bucket}/{out_root.strip('/')}",
    )
    log.info(
        "job %s: %s v%s (asked %s) on %d file(s), %d bytes, data version %s -> s3://%s/%s",
        job.job_id,
        job.model_name,
        job.model_version,
        model,
        len(inputs),
        sum(o.size for o in inputs),
        job.data_version[:12],
        job.output_bucket,
        job.output_prefix,
    )
    return job


# ---- reading in chunks --------------------------------------------------------------------------


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh), [])


def read_chunks(path: Path, fmt: InputFormat, chunk_rows: int) -> Iterator[tuple[pa.Table, bool]]:
    """(chunk, is_last) pairs of exactly `chunk_rows` rows (the last one may be shorter; a file without data
    rows gives one empty chunk). Parquet comes as typed, one row group decoded at a time (without pyarrow's
    pre-buffering of the whole file); CSV comes as strings, every column (the server's CSV coercion types
    them), read in 1 MiB blocks. At most two chunks (plus, for Parquet, the row group being sliced) are held.

    Raises InputSchemaError for a CSV file without a header row."""
    if fmt is InputFormat.PARQUET:
        # pre_buffer (pyarrow's default) reads every column chunk of the file ahead: memory grows with the file
        parquet = pq.ParquetFile(path, pre_buffer=False)
        schema = parquet.schema_arrow
        batches: Iterator[pa.RecordBatch] = parquet.iter_batches(batch_size=chunk_rows)
    else:
        names = _csv_header(path)
        if not names:
            raise InputSchemaError(f"{path.name}: an empty CSV file (no header row)")
        schema = pa.schema([(name, pa.string()) for name in names])
        reader = pacsv.open_csv(
            path,
            # 1 MiB blocks: with 8 MiB ones the threaded reader held ~300 MB ahead on a 290 MB file (measured)
            read_options=pacsv.ReadOptions(block_size=1 << 20),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        batches = iter(reader)
    pending: list[pa.RecordBatch] = []
    held = 0
    previous: pa.Table | None = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        held += batch.num_rows
        while held >= chunk_rows:
            table = pa.Table.from_batches(pending, schema=schema)
            chunk, rest = table.slice(0, chunk_rows), table.slice(chunk_rows)
            pending, held = rest.to_batches(), rest.num_rows
            if previous is not None:
                yield previous, False
            previous = chunk.combine_chunks()
    if held:
        if previous is not None:
            yield previous, False
        previous = pa.Table.from_batches(pending, schema=schema).combine_chunks()
    yield (previous if previous is not None else schema.empty_table()), True


def _serving_importable() -> None:
    """Make the model server's package (`serving/`, beside `include/` in the repo and in the Airflow image's
    /opt/flightdeck) importable: Airflow's task processes have the installed flightdeck on sys.path, not the
    project root. The evaluator is the server's own code, imported, never copied."""
    try:
        import serving  # noqa: F401
    except ImportError:
        root = Path(__file__).resolve().parents[2]
        if (root / "serving" / "model.py").is_file() and str(root) not in sys.path:
            sys.path.append(str(root))


# ---- scoring one chunk with the server's evaluator ---------------------------------------------


def check_columns(model: LoadedModel, names: Sequence[str], where: str) -> None:
    """Raise InputSchemaError when columns the model's signature requires are not among `names`."""
    missing = [n for n in model.validator.order if n in model.validator.required and n not in names]
    if missing:
        raise InputSchemaError(f"{where}: missing column(s) the model requires: {', '.join(missing)}")


def score_chunk(model: LoadedModel, columns: dict[str, list[Any]], *, text: bool, probabilities: bool) -> ChunkResult:
    """Validate and score one chunk as the server does: `columns` holds the signature's columns as Python
    lists of equal length (CSV strings when `text`, else typed values as `/predict` receives them in
    `{"columns": {...}}`). Rows the server refuses (a RequestError, e.g. 422 wrong_type, non_finite) are
    found by halving the failing range down to one row, and returned as rejects (row = position in the
    chunk); the other rows are scored in as few calls as the halving leaves.

    Raises RequestError only for a refusal that is not about rows (413 too_many_rows: a chunk larger than
    the validator's max_rows)."""
    _serving_importable()
    from serving.mlflow_protocol import coerce
    from serving.schema import RequestError

    n = len(next(iter(columns.values()))) if columns else 0
    result = ChunkResult([], [], [] if probabilities else None, [])
    validator = model.validator

    def evaluate(lo: int, hi: int) -> None:
        part = {name: values[lo:hi] for name, values in columns.items()}
        try:
            batch = coerce(validator, part, "csv", text=True).batch if text else validator.columnar(part, "columns")
            predictions = model.predict(batch)
            proba = model.predict_proba(batch) if probabilities else None
        except RequestError as exc:
            if exc.status == 413 or exc.code in ("missing_columns", "probabilities_not_supported"):
                raise
            if hi - lo == 1:
                result.rejects.append(Reject(lo, exc.code, exc.message))
                return
            mid = (lo + hi) // 2
            evaluate(lo, mid)
            evaluate(mid, hi)
            return
        result.accepted.extend(range(lo, hi))
        result.predictions.extend(predictions)
        if result.probabilities is not None and proba is not None:
            result.probabilities.extend(proba)

    if n:
        evaluate(0, n)
    return result


def _pylists(table: pa.Table, names: Sequence[str]) -> dict[str, list[Any]]:
    return {name: table.column(name).to_pylist() for name in names if name in table.column_names}


# signature type -> the Arrow type a CSV text column of accepted rows is written as
_ARROW_TYPES = {
    "double": pa.float64(),
    "float": pa.float32(),
    "long": pa.int64(),
    "integer": pa.int32(),
    "boolean": pa.bool_(),
}


def typed_text_columns(table: pa.Table, signature_types: Mapping[str, str]) -> pa.Table:
    """CSV text columns of rows the server accepted, cast to their signature's Arrow type (double ->
    float64, long -> int64, boolean -> bool, ...); pandas' NA strings become nulls. A column Arrow cannot
    cast the way the server's coercion read it (e.g. "1_000", " 7") stays text: values are never changed."""
    _serving_importable()
    from serving.mlflow_protocol import CSV_NA

    na = pa.array(sorted(CSV_NA), pa.string())
    for name, kind in signature_types.items():
        target = _ARROW_TYPES.get(kind)
        if target is None or name not in table.column_names:
            continue
        column = table.column(name)
        nulled = pc.if_else(pc.is_in(column, value_set=na), pa.scalar(None, pa.string()), column)
        try:
            cast = pc.cast(nulled, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        table = table.set_column(table.column_names.index(name), name, cast)
    return table


def build_output(
    chunk: pa.Table,
    result: ChunkResult,
    options: Options,
    classes: Sequence[Any] | None,
    first_row: int,
    text_types: Mapping[str, str] | None = None,
) -> tuple[pa.Table, pa.Table | None]:
    """(predictions table, rejects table or None) for a scored chunk. Predictions: the input columns (or
    only `options.id_column`) of the accepted rows, `prediction`, and with probabilities one
    `probability_<class>` float64 column per class. `text_types` (signature column -> type) types a CSV
    chunk's accepted columns (see typed_text_columns). Rejects: `row` (position in the input file), the
    input columns of the refused rows as read, `error_code`, `error_message`.

    Raises InputSchemaError when `options.id_column` is not a column of the input."""
    if options.id_column and options.id_column not in chunk.column_names:
        raise InputSchemaError(f"id column {options.id_column!r} is not an input column ({chunk.column_names})")
    kept = chunk.select([options.id_column]) if options.id_column else chunk
    accepted = kept.take(pa.array(result.accepted, type=pa.int64()))
    if text_types:
        accepted = typed_text_columns(accepted, text_types)
    out = accepted.append_column(PREDICTION_COLUMN, pa.array(result.predictions))
    if result.probabilities is not None and classes is not None:
        matrix = result.probabilities
        for j, label in enumerate(classes):
            out = out.append_column(
                f"{PROBABILITY_PREFIX}{label}", pa.array([row[j] for row in matrix], type=pa.float64())
            )
    if not result.rejects:
        return out, None
    positions = pa.array([r.row for r in result.rejects], type=pa.int64())
    refused = chunk.take(positions)
    rejects = refused.add_column(0, ROW_COLUMN, pa.array([first_row + r.row for r in result.rejects], pa.int64()))
    rejects = rejects.append_column("error_code", pa.array([r.code for r in result.rejects], pa.string()))
    rejects = rejects.append_column("error_message", pa.array([r.message for r in result.rejects], pa.string()))
    return out, rejects


def parquet_bytes(table: pa.Table) -> bytes:
    """`table` as one Parquet file (snappy; the same table gives the same bytes)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue()


# ---- the parts in S3 ------------------------------------------------------------------------------


def existing_parts(s3: Any, job: Job) -> dict[tuple[int, int], PartInfo]:
    """The prediction parts of `job` present in S3, by (file index, chunk index), read from their metadata.
    A part without the row-count metadata (not written by this module) is left out, so it is rewritten."""
    found: dict[tuple[int, int], PartInfo] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=job.output_bucket, Prefix=job.output_prefix):
        for obj in page.get("Contents", []):
            rest = obj["Key"][len(job.output_prefix) :]
            m = _PART.fullmatch(rest)
            if not m:
                continue
            head = s3.head_object(Bucket=job.output_bucket, Key=obj["Key"])
            meta = head.get("Metadata", {})
            if not {META_ROWS_IN, META_ROWS_OUT, META_REJECTED, META_LAST} <= set(meta):
                log.warning("part %s has no row counts in its metadata; it will be rewritten", obj["Key"])
                continue
            if int(head["ContentLength"]) != int(obj["Size"]):
                continue
            file_index, chunk_index = int(m.group(1)), int(m.group(2))
            found[(file_index, chunk_index)] = PartInfo(
                key=obj["Key"],
                file_index=file_index,
                chunk_index=chunk_index,
                size=int(obj["Size"]),
                rows_in=int(meta[META_ROWS_IN]),
                rows_out=int(meta[META_ROWS_OUT]),
                rows_rejected=int(meta[META_REJECTED]),
                last=meta[META_LAST] == "1",
            )
    return found


def file_complete(parts: dict[tuple[int, int], PartInfo], file_index: int) -> bool:
    """Whether every chunk of input file `file_index` is present: chunks 0..k, the k-th marked last."""
    indices = sorted(c for f, c in parts if f == file_index)
    if not indices or indices != list(range(len(indices))):
        return False
    return parts[(file_index, indices[-1])].last


def _put(s3: Any, bucket: str, key: str, body: bytes, metadata: dict[str, str] | None = None) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata or {}, ContentType="application/octet-stream")


def write_part(
    s3: Any,
    job: Job,
    file_index: int,
    chunk_index: int,
    out: pa.Table,
    rejects: pa.Table | None,
    rows_in: int,
    last: bool,
) -> PartInfo:
    """Write one scored chunk: its rejects first (if any), then its predictions part, each by one PUT, the part
    carrying its row counts as object metadata (what a re-run checks). Returns the part as written."""
    if rejects is not None:
        _put(s3, job.output_bucket, job.rejects_key(file_index, chunk_index), parquet_bytes(rejects))
    body = parquet_bytes(out)
    info = PartInfo(
        key=job.part_key(file_index, chunk_index),
        file_index=file_index,
        chunk_index=chunk_index,
        size=len(body),
        rows_in=rows_in,
        rows_out=out.num_rows,
        rows_rejected=0 if rejects is None else rejects.num_rows,
        last=last,
    )
    metadata = {
        META_ROWS_IN: str(info.rows_in),
        META_ROWS_OUT: str(info.rows_out),
        META_REJECTED: str(info.rows_rejected),
        META_LAST: "1" if last else "0",
    }
    _put(s3, job.output_bucket, info.key, body, metadata)
    return info


# ---- the job --------------------------------------------------------------------------------------


def run_job(
    job: Job,
    model: LoadedModel,
    s3: Any,
    *,
    after_part: Callable[[PartInfo], None] | None = None,
    workdir: str | Path | None = None,
) -> ScoreSummary:
    """Score every input file of `job` with the loaded `model`, writing the parts that are not there yet.

    Each input file is downloaded to `workdir` (a temporary folder by default), read in chunks and deleted;
    a file whose parts are all present is skipped unread. `after_part` is called after each part written by
    this run (tests inject a failure there). Progress is logged per chunk: chunks done / total, rows/s.

    Raises BatchPredictError when probabilities are asked of a model without them, InputSchemaError for an
    input file missing a required column (or the id column), and RequestError (413) when a chunk exceeds the
    model's validator row limit (load it with max_rows >= chunk_rows)."""
    started_at, t0 = datetime.now(UTC), time.perf_counter()
    existing = existing_parts(s3, job)
    probabilities = job.options.return_probabilities
    if probabilities and model.classes is None:
        raise BatchPredictError(f"{job.model_name} v{job.model_version} gives no class probabilities")
    chunk_rows = job.options.chunk_rows
    total_bytes = sum(o.size for o in job.inputs) or 1
    done_bytes = 0
    stages = dict.fromkeys(("download", "read", "convert", "evaluate", "write"), 0.0)
    scored = skipped = rows_scored = 0
    progress = ""
    pending: Future[PartInfo] | None = None

    def finish(info: PartInfo) -> None:
        nonlocal scored, rows_scored
        scored += 1
        rows_scored += info.rows_in
        elapsed = time.perf_counter() - t0
        log.info(
            "%s done: %d rows in, %d out, %d rejected; %d chunk(s) written, %d skipped; input %.0f%% read; %.0f rows/s",
            progress,
            info.rows_in,
            info.rows_out,
            info.rows_rejected,
            scored,
            skipped,
            100 * done_bytes / total_bytes,
            rows_scored / elapsed if elapsed > 0 else 0.0,
        )
        if after_part is not None:
            after_part(info)

    # One part uploads while the next chunk is scored: S3 and Parquet encoding release the GIL. At most one
    # upload is in flight, and a part is reported (after_part) only once its PUT has returned.
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-predict-put") as writer,
        tempfile.TemporaryDirectory(dir=workdir, prefix="batch-predict-") as tmp,
    ):
        for file_index, obj in enumerate(job.inputs):
            if file_complete(existing, file_index):
                n_parts = sum(1 for f, _ in existing if f == file_index)
                skipped += n_parts
                done_bytes += obj.size
                log.info(
                    "file %d/%d %s: all %d part(s) present, skipped", file_index + 1, len(job.inputs), obj.key, n_parts
                )
                continue
            local = Path(tmp) / f"input-{file_index:05d}{Path(obj.key).suffix}"
            mark = time.perf_counter()
            s3.download_file(job.input_bucket, obj.key, str(local))
            chunks_in_file = "?"
            if obj.format is InputFormat.PARQUET:
                parquet = pq.ParquetFile(local)
                chunks_in_file = str(max(1, math.ceil(parquet.metadata.num_rows / chunk_rows)))
                names = parquet.schema_arrow.names
            else:
                names = _csv_header(local)
            check_columns(model, names, f"s3://{job.input_bucket}/{obj.key}")
            stages["download"] += time.perf_counter() - mark
            mark = time.perf_counter()
            for chunk_index, (chunk, last) in enumerate(read_chunks(local, obj.format, chunk_rows)):
                stages["read"] += time.perf_counter() - mark
                mark = time.perf_counter()
                done = existing.get((file_index, chunk_index))
                if done is not None and done.rows_in == chunk.num_rows and done.last == last:
                    skipped += 1
                    continue
                columns = _pylists(chunk, model.validator.order)
                stages["convert"] += time.perf_counter() - mark
                mark = time.perf_counter()
                result = score_chunk(model, columns, text=obj.format is InputFormat.CSV, probabilities=probabilities)
                del columns
                stages["evaluate"] += time.perf_counter() - mark
                mark = time.perf_counter()
                text_types = {c.name: c.type for c in model.validator.specs} if obj.format is InputFormat.CSV else None
                out, rejects = build_output(
                    chunk, result, job.options, model.classes, chunk_index * chunk_rows, text_types
                )
                if pending is not None:
                    finish(pending.result())
                pending = writer.submit(
                    write_part, s3, job, file_index, chunk_index, out, rejects, chunk.num_rows, last
                )
                stages["write"] += time.perf_counter() - mark
                progress = f"chunk {chunk_index + 1}/{chunks_in_file} of file {file_index + 1}/{len(job.inputs)}"
                mark = time.perf_counter()
            local.unlink()
            done_bytes += obj.size
        if pending is not None:
            mark = time.perf_counter()
            finish(pending.result())
            stages["write"] += time.perf_counter() - mark
    seconds = time.perf_counter() - t0
    summary = ScoreSummary(
        job_id=job.job_id,
        output=f"s3://{job.output_bucket}/{job.output_prefix}",
        started_at=started_at.isoformat(),
        finished_at=datetime.now(UTC).isoformat(),
        seconds=round(seconds, 3),
        chunks_total=scored + skipped,
        chunks_scored=scored,
        chunks_skipped=skipped,
        rows_scored=rows_scored,
        rows_per_second=round(rows_scored / seconds, 1) if seconds > 0 else 0.0,
        stage_seconds={k: round(v, 3) for k, v in stages.items()},
    )
    log.info(
        "job %s scored: %d chunk(s) written, %d already present, %d rows at %.0f rows/s (seconds: %s)",
        job.job_id,
        scored,
        skipped,
        rows_scored,
        summary["rows_per_second"],
        ", ".join(f"{k} {v:.2f}" for k, v in summary["stage_seconds"].items()),
    )
    return summary


def load_model(job: Job, dest: Path, tracking_uri: str | None = None) -> LoadedModel:
    """Download the job's model version from MLflow into `dest` and load it with the model server's loader
    (validator row limit = the job's chunk size).

    Raises flightdeck.images.ModelFilesMissing (no MLmodel) and serving.model.ModelLoadError (not servable)."""
    from flightdeck import images

    _serving_importable()
    from serving.model import load_model_dir

    ref = images.ModelRef(job.model_name, job.model_version, run_id=job.run_id, alias=job.alias)
    path = images.download_model(ref, dest, tracking_uri=tracking_uri)
    lineage = {"model_name": job.model_name, "model_version": job.model_version, "run_id": job.run_id}
    with warnings.catch_warnings():
        # skops lists its trusted types by walking every imported module; with Airflow imported (the S3 hook)
        # that is thousands of DeprecatedImportWarning (a FutureWarning) lines in the task log, none about the model
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_model_dir(path, max_rows=job.options.chunk_rows, lineage=lineage)


def score(job: Job, s3: Any = None, tracking_uri: str | None = None) -> ScoreSummary:
    """The score step: load the model (as the server does) and `run_job`; re-running it resumes.

    Raises what load_model and run_job raise."""
    from flightdeck import s3 as s3_mod

    s3 = s3 or s3_mod.client()
    with tempfile.TemporaryDirectory(prefix="batch-predict-model-") as tmp:
        model = load_model(job, Path(tmp), tracking_uri=tracking_uri)
        return run_job(job, model, s3)


# ---- the manifest ---------------------------------------------------------------------------------


class FileCounts(TypedDict):
    """Row counts of one input file in the manifest."""

    key: str
    etag: str
    size: int
    format: str
    chunks: int
    rows_in: int
    rows_out: int
    rows_rejected: int


class ModelLineage(TypedDict):
    """The model of a job in the manifest: registered name, version, its MLflow run, the alias asked ("" if none)."""

    name: str
    version: str
    run_id: str
    alias_asked: str


class InputLineage(TypedDict):
    """The input of a job in the manifest: bucket, data version (see `data_version`), DVC md5s, files."""

    bucket: str
    data_version: str
    dvc_data_version: str
    files: list[FileCounts]


class PartEntry(TypedDict):
    """One prediction part in the manifest: its key, rows written, rows refused, size in bytes."""

    key: str
    rows_out: int
    rows_rejected: int
    size: int


class OptionsEntry(TypedDict):
    """The job's Options in the manifest."""

    chunk_rows: int
    return_probabilities: bool
    id_column: str | None


@dataclass
class Manifest:
    """`_manifest.json`: lineage, counts and times (the score step's summary) of a finished job."""

    job_id: str
    model: ModelLineage
    input: InputLineage
    options: OptionsEntry
    output: str
    parts: list[PartEntry]
    rows_in: int
    rows_out: int
    rows_rejected: int
    chunks: int
    times: ScoreSummary | None = None


class IncompleteJob(BatchPredictError, RuntimeError):
    """The manifest was asked for before every input file's parts were written."""


def build_manifest(job: Job, parts: dict[tuple[int, int], PartInfo], summary: ScoreSummary | None) -> Manifest:
    """The manifest of `job` from its parts (as `existing_parts` reads them) and the score step's summary.

    Raises IncompleteJob naming the input files whose parts are not all present."""
    missing = [o.key for i, o in enumerate(job.inputs) if not file_complete(parts, i)]
    if missing:
        raise IncompleteJob(f"job {job.job_id}: parts missing for {len(missing)} file(s), e.g. {missing[:3]}")
    files: list[FileCounts] = []
    for i, o in enumerate(job.inputs):
        mine = [parts[k] for k in sorted(parts) if k[0] == i]
        files.append(
            FileCounts(
                key=o.key,
                etag=o.etag,
                size=o.size,
                format=o.format.value,
                chunks=len(mine),
                rows_in=sum(p.rows_in for p in mine),
                rows_out=sum(p.rows_out for p in mine),
                rows_rejected=sum(p.rows_rejected for p in mine),
            )
        )
    ordered = [parts[k] for k in sorted(parts) if k[0] < len(job.inputs)]
    return Manifest(
        job_id=job.job_id,
        model=ModelLineage(name=job.model_name, version=job.model_version, run_id=job.run_id, alias_asked=job.alias),
        input=InputLineage(
            bucket=job.input_bucket,
            data_version=job.data_version,
            dvc_data_version=job.dvc_data_version,
            files=files,
        ),
        options=OptionsEntry(
            chunk_rows=job.options.chunk_rows,
            return_probabilities=job.options.return_probabilities,
            id_column=job.options.id_column,
        ),
        output=f"s3://{job.output_bucket}/{job.output_prefix}",
        parts=[
            {"key": p.key, "rows_out": p.rows_out, "rows_rejected": p.rows_rejected, "size": p.size} for p in ordered
        ],
        rows_in=sum(f["rows_in"] for f in files),
        rows_out=sum(f["rows_out"] for f in files),
        rows_rejected=sum(f["rows_rejected"] for f in files),
        chunks=len(ordered),
        times=summary,
    )


def write_manifest(job: Job, summary: ScoreSummary | None = None, s3: Any = None) -> Manifest:
    """Write `<output>/_manifest.json` (last, after every part) and return it.

    Raises IncompleteJob when parts are missing (the score step has not finished)."""
    from flightdeck import s3 as s3_mod

    s3 = s3 or s3_mod.client()
    manifest = build_manifest(job, existing_parts(s3, job), summary)
    body = json.dumps(asdict(manifest), indent=2, sort_keys=True).encode()
    s3.put_object(
        Bucket=job.output_bucket,
        Key=job.output_prefix + MANIFEST_NAME,
        Body=body,
        ContentType="application/json",
    )
    log.info(
        "manifest s3://%s/%s%s: %d rows in, %d predicted, %d rejected, %d part(s)",
        job.output_bucket,
        job.output_prefix,
        MANIFEST_NAME,
        manifest.rows_in,
        manifest.rows_out,
        manifest.rows_rejected,
        manifest.chunks,
    )
    return manifest


# ---- the DAG's steps (plain values in and out: what XCom carries) ----------------------------------


@dataclass(frozen=True)
class JobParams:
    """The batch_predict DAG's Params, typed. `model_name` "" = the platform's model (FLIGHTDECK_MODEL_NAME);
    `model`: a version number or an alias; `input`: `s3://bucket/key-or-prefix` or a key/prefix in the data
    bucket; `output` "" = `s3://<data bucket>/predictions`; `id_column` "" = carry every input column."""

    input: str
    model_name: str = ""
    model: str = "champion"
    output: str = ""
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    return_probabilities: bool = False
    id_column: str = ""

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> JobParams:
        """From a run's validated Params (unknown keys ignored; strings kept as strings).

        Raises BatchPredictError when `input` is empty."""
        known = {k: params[k] for k in cls.__dataclass_fields__ if k in params and params[k] is not None}
        if not str(known.get("input", "")).strip():
            raise BatchPredictError("the `input` Param is empty: give an S3 key or prefix (or s3://bucket/...)")
        return cls(
            input=str(known["input"]),
            model_name=str(known.get("model_name", "")),
            model=str(known.get("model", "champion")) or "champion",
            output=str(known.get("output", "")),
            chunk_rows=int(known.get("chunk_rows", DEFAULT_CHUNK_ROWS)),
            return_probabilities=bool(known.get("return_probabilities", False)),
            id_column=str(known.get("id_column", "")),
        )


def resolve_step(params: Mapping[str, Any]) -> dict[str, Any]:
    """The DAG's `resolve` task: Params -> the job (Job.to_dict).

    Raises BatchPredictError (empty input), NoInputFiles, BadLocation, and MLflow's RestException."""
    from flightdeck import settings

    p = JobParams.from_params(params)
    job = resolve(
        model_name=p.model_name or settings.load().model_name,
        model=p.model,
        input_location=p.input,
        output_location=p.output,
        options=Options(p.chunk_rows, p.return_probabilities, p.id_column or None),
    )
    return job.to_dict()


def score_step(job: Mapping[str, Any]) -> ScoreSummary:
    """The DAG's `score` task: score the job's chunks not written yet (a retry resumes).

    Raises what `score` raises."""
    return score(Job.from_dict(dict(job)))


def manifest_step(job: Mapping[str, Any], summary: ScoreSummary | None = None) -> dict[str, Any]:
    """The DAG's `manifest` task: write `_manifest.json` last; returns it (as JSON values).

    Raises IncompleteJob when parts are missing."""
    return asdict(write_manifest(Job.from_dict(dict(job)), summary))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m flightdeck.batch_predict --input KEY_OR_PREFIX [--model-name N] [--model champion] ...`:
    resolve, score and write the manifest in this process (the DAG's three tasks); prints the manifest's
    counts as JSON. Exit 0 when done, 2 when the job cannot run as asked."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flightdeck.batch_predict", description=main.__doc__)
    parser.add_argument("--input", required=True, help="s3://bucket/key-or-prefix, or a key/prefix in the data bucket")
    parser.add_argument("--model-name", default="", help="registered model (default: FLIGHTDECK_MODEL_NAME)")
    parser.add_argument("--model", default="champion", help="a version number or an alias")
    parser.add_argument("--output", default="", help="output root (default s3://<data bucket>/predictions)")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--probabilities", action="store_true", help="add probability_<class> columns")
    parser.add_argument("--id-column", default="", help="carry only this input column")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("botocore", "urllib3", "airflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    params = {
        "input": args.input,
        "model_name": args.model_name,
        "model": args.model,
        "output": args.output,
        "chunk_rows": args.chunk_rows,
        "return_probabilities": args.probabilities,
        "id_column": args.id_column,
    }
    try:
        job = resolve_step(params)
        summary = score_step(job)
        manifest = manifest_step(job, summary)
    except BatchPredictError as exc:
        print(f"batch_predict: {exc}")
        return 2
    keys = ("job_id", "output", "rows_in", "rows_out", "rows_rejected", "chunks")
    print(json.dumps({k: manifest[k] for k in keys} | {"rows_per_second": summary["rows_per_second"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
