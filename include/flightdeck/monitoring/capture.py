"""Reading what the model server captured (serving/capture.py writes it; its docstring is the contract).

    s3://<bucket>/<prefix>/<model_name>/<model_version>/<YYYY-MM-DD>/<HH>/<unix_ms>-<hostname>-<pid>-<seq>.jsonl

JSON lines, each a block of requests column by column (format 2: per request request_id, time_ms, route and
rows; per input row the values of each feature in `columns` and the `predictions`), or, in files written
before format 2, one JSON object per request (format 1: request_id, time (ISO-8601 UTC, ms), model_name,
model_version, route, columns ({feature: [one value per row]}), predictions); both are read. A file never
spans two UTC hours, so a time window is read by listing only the hour prefixes it covers. The functions take
an S3 client; callers get it from `flightdeck.s3.client()` (the one way to S3).
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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def _requests(line: dict[str, Any]) -> Iterator[tuple[str, datetime, str, str, dict[str, list[Any]], list[Any]]]:
    """(request_id, time, model_version, route, columns, predictions) of each request of one line, either format."""
    if line.get("format", 1) == 1:
        yield (
            line["request_id"],
            _parse_time(line["time"]),
            str(line["model_version"]),
            line["route"],
            line["columns"],
            line["predictions"],
        )
        return
    version, columns, predictions = str(line["model_version"]), line["columns"], line["predictions"]
    at = 0
    for request_id, ms, route, rows in zip(
        line["request_id"], line["time_ms"], line["route"], line["rows"], strict=True
    ):
        when = _EPOCH + timedelta(milliseconds=ms)
        cut = slice(at, at + rows)
        yield request_id, when, version, route, {k: v[cut] for k, v in columns.items()}, predictions[cut]
        at += rows


def _iter_requests(
    s3_client: Any, bucket: str, prefix: str, model_name: str, model_version: str, start: datetime, end: datetime
) -> Iterator[tuple[str, datetime, str, str, dict[str, list[Any]], list[Any]]]:
    start, end = _utc(start), _utc(end)
    for key in sorted(_keys(s3_client, bucket, hour_prefixes(prefix, model_name, model_version, start, end))):
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        for raw in body.splitlines():
            if not raw.strip():
                continue
            for request in _requests(json.loads(raw)):
                if start <= request[1] < end:
                    yield request


def iter_records(
    s3_client: Any, bucket: str, prefix: str, model_name: str, model_version: str, start: datetime, end: datetime
) -> Iterator[dict[str, Any]]:
    """Every captured request of the version with start <= time < end as a serving.capture.CaptureRecord (time
    as ISO-8601 UTC with milliseconds), whichever format its file has, file by file in key order. Raises
    botocore's ClientError when S3 refuses a listing or a read."""
    for request_id, when, version, route, columns, predictions in _iter_requests(
        s3_client, bucket, prefix, model_name, model_version, start, end
    ):
        yield {
            "request_id": request_id,
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "model_name": model_name,
            "model_version": version,
            "route": route,
            "columns": columns,
            "predictions": predictions,
        }


def count_records(
    s3_client: Any, bucket: str, prefix: str, model_name: str, model_version: str, start: datetime, end: datetime
) -> int:
    """The number of captured requests of the version in [start, end) (records, not rows)."""
    return sum(1 for _ in _iter_requests(s3_client, bucket, prefix, model_name, model_version, start, end))


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
    for request_id, when, version, _route, columns, rows_predicted in _iter_requests(
        s3_client, bucket, prefix, model_name, model_version, start, end
    ):
        rows = len(rows_predicted)
        base["request_id"].extend([request_id] * rows)
        base["row"].extend(range(rows))
        base["time"].extend([when] * rows)
        base["model_version"].extend([version] * rows)
        for name, values in columns.items():
            if name not in features:
                features[name] = [None] * n  # a column first seen now was null in earlier rows
            features[name].extend(values)
        for name, values in features.items():  # a column this request lacked: null for its rows
            if name not in columns:
                values.extend([None] * rows)
        predictions.extend(rows_predicted)
        n += rows
    data: dict[str, list[Any]] = dict(base)
    data.update((k, v) for k, v in features.items() if k not in base and k != "prediction")
    data["prediction"] = predictions
    frame = pd.DataFrame(data)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    frame["row"] = frame["row"].astype("int64")
    return frame
