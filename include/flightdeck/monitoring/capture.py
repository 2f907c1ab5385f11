"""Reading what the model server captured (serving/capture.py writes it; its docstring is the contract).

    s3://<bucket>/<prefix>/<model_name>/<model_version>/<YYYY-MM-DD>/<HH>/<unix_ms>-<hostname>-<pid>-<seq>.jsonl

one JSON object per request: request_id, time (ISO-8601 UTC, ms), model_name, model_version, route,
columns ({feature: [one value per row]}) and predictions (one per row). A file never spans two UTC hours,
so a time window is read by listing only the hour prefixes it covers. The functions take an S3 client;
callers get it from `flightdeck.s3.client()` (the one way to S3).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

CAPTURE_PREFIX = "capture"  # under the data bucket: what the deploy passes as CAPTURE_S3_URI
BASE_COLUMNS = ("request_id", "row", "time", "model_version")


def capture_env(percent: float, data_bucket: str) -> dict[str, str]:
    """The model server's capture settings for a revision's environment (serving/capture.py): CAPTURE_PERCENT and,
    when above 0, CAPTURE_S3_URI = s3://<data_bucket>/capture. No credentials: the target provides them."""
    env = {"CAPTURE_PERCENT": f"{float(percent):g}"}
    if percent > 0:
        env["CAPTURE_S3_URI"] = f"s3://{data_bucket}/{CAPTURE_PREFIX}"
    return env


def _utc(t: datetime) -> datetime:
    """`t` as an aware UTC datetime (a naive one is taken as UTC)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def hour_prefixes(prefix: str, model_name: str, model_version: str, start: datetime, end: datetime) -> list[str]:
    """The `<prefix>/<model>/<version>/<date>/<HH>/` key prefixes of every UTC hour overlapping [start, end)."""
    start, end = _utc(start), _utc(end)
    base = "/".join(p for p in (prefix.strip("/"), model_name, str(model_version)) if p)
    hour = start.replace(minute=0, second=0, microsecond=0)
    out = []
    while hour < end:
        out.append(f"{base}/{hour:%Y-%m-%d}/{hour:%H}/")
        hour += timedelta(hours=1)
    return out


def _keys(s3_client: Any, bucket: str, prefixes: list[str]) -> Iterator[str]:
    paginator = s3_client.get_paginator("list_objects_v2")
    for prefix in prefixes:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(".jsonl"):
                    yield obj["Key"]


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def iter_records(
    s3_client: Any, bucket: str, prefix: str, model_name: str, model_version: str, start: datetime, end: datetime
) -> Iterator[dict[str, Any]]:
    """Every capture record (one request, serving.capture.CaptureRecord) of the version with start <= time < end,
    file by file in key order. Raises botocore's ClientError when S3 refuses a listing or a read."""
    start, end = _utc(start), _utc(end)
    for key in sorted(_keys(s3_client, bucket, hour_prefixes(prefix, model_name, model_version, start, end))):
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        for line in body.splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if start <= _parse_time(record["time"]) < end:
                yield record


def count_records(
    s3_client: Any, bucket: str, prefix: str, model_name: str, model_version: str, start: datetime, end: datetime
) -> int:
    """The number of captured requests of the version in [start, end) (records, not rows)."""
    return sum(1 for _ in iter_records(s3_client, bucket, prefix, model_name, model_version, start, end))


def read_captures(
    s3_client: Any, bucket: str, prefix: str, model_name: str, model_version: str, start: datetime, end: datetime
) -> pd.DataFrame:
    """The captured rows of `model_name` version `model_version` with start <= time < end (UTC; naive = UTC).

    One DataFrame row per input row: request_id (str), row (int, its index within the request), time
    (datetime64 UTC, the request's), model_version (str), then the feature columns in the order the
    server's signature gives them (a feature a request lacks is null), then `prediction` (a label, a value, or
    a list of probabilities). Empty (with the four base columns and `prediction`) when nothing was captured.
    A feature named like a base column or `prediction` is shadowed by it. Raises botocore's ClientError
    when S3 refuses a listing or a read.
    """
    import pandas as pd  # here, not at import: the deploy steps import this module for capture_env

    base: dict[str, list[Any]] = {name: [] for name in BASE_COLUMNS}
    features: dict[str, list[Any]] = {}
    predictions: list[Any] = []
    n = 0
    for record in iter_records(s3_client, bucket, prefix, model_name, model_version, start, end):
        rows = len(record["predictions"])
        when = _parse_time(record["time"])
        base["request_id"].extend([record["request_id"]] * rows)
        base["row"].extend(range(rows))
        base["time"].extend([when] * rows)
        base["model_version"].extend([str(record["model_version"])] * rows)
        for name, values in record["columns"].items():
            if name not in features:
                features[name] = [None] * n  # a column first seen now was null in earlier rows
            features[name].extend(values)
        for name, values in features.items():  # a column this record lacked: null for its rows
            if name not in record["columns"]:
                values.extend([None] * rows)
        predictions.extend(record["predictions"])
        n += rows
    data: dict[str, list[Any]] = dict(base)
    data.update((k, v) for k, v in features.items() if k not in base and k != "prediction")
    data["prediction"] = predictions
    frame = pd.DataFrame(data)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    frame["row"] = frame["row"].astype("int64")
    return frame
