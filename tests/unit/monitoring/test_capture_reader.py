"""The capture contract end to end in one process: serving.capture writes, monitoring.capture reads (moto S3)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # serving/ is a top-level package next to include/
    sys.path.insert(0, str(REPO))

from flightdeck.monitoring.capture import count_records, read_captures  # noqa: E402
from serving.capture import Capture, CaptureConfig, _Item  # noqa: E402

BUCKET = "flightdeck-data"
T0 = datetime(2026, 12, 7, 13, 59, 58, tzinfo=UTC)


class Counts:
    def __init__(self) -> None:
        self.written = 0

    def capture_written(self, n: int) -> None:
        self.written += n

    def capture_dropped(self, reason: str, n: int) -> None:
        raise AssertionError(f"{n} records dropped: {reason}")


@pytest.fixture()
def s3() -> Iterator:
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _write(s3, version: str, items: list[_Item]) -> Capture:
    counts = Counts()
    columns = [("city", "string"), ("visits", "long"), ("spend", "double")]
    capture = Capture(
        CaptureConfig(percent=100, s3_uri=f"s3://{BUCKET}/capture"), counts, "m", version, columns, lambda: s3
    )
    for item in items:
        capture.pending.append(item)
    assert capture.flush_now() == len(items) == counts.written
    return capture


def test_read_captures_gives_one_row_per_input_row_with_its_request_and_prediction(s3):
    at = T0.timestamp()
    _write(
        s3,
        "4",
        [
            _Item("a", at, "/predict", [["oslo", "rome"], [3, 7], [10.5, None]], None, [1, 0]),
            _Item("b", at + 1.5, "/invocations", [["paris"], [1], [2.0]], None, [[0.2, 0.8]]),  # probabilities
            _Item("c", at + 4, "/predict", [["rome"], [9], [1.0]], None, [1]),  # the next UTC hour: its own file
        ],
    )
    frame = read_captures(s3, BUCKET, "capture", "m", "4", T0 - timedelta(minutes=5), T0 + timedelta(minutes=5))
    assert list(frame.columns) == [
        "request_id",
        "row",
        "time",
        "model_version",
        "city",
        "visits",
        "spend",
        "prediction",
    ]
    assert frame["request_id"].tolist() == ["a", "a", "b", "c"]
    assert frame["row"].tolist() == [0, 1, 0, 0]
    assert frame["city"].tolist() == ["oslo", "rome", "paris", "rome"]
    assert frame["visits"].tolist() == [3, 7, 1, 9]
    assert frame["spend"].isna().tolist() == [False, True, False, False]
    assert frame["prediction"].tolist() == [1, 0, [0.2, 0.8], 1]
    assert set(frame["model_version"]) == {"4"}
    assert str(frame["time"].dt.tz) == "UTC" and frame["time"].iloc[0] == T0
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="capture/m/4/")["Contents"])
    assert [k.split("/")[4] for k in keys] == ["13", "14"]  # date/hour of each file's first record


def test_the_window_is_half_open_and_only_its_hours_are_listed(s3):
    at = T0.timestamp()
    _write(s3, "5", [_Item(str(i), at + 60 * i, "/predict", [["oslo"], [1], [1.0]], None, [0]) for i in range(5)])
    # T0 + 0, 1, 2, 3, 4 minutes: [T0 + 1 min, T0 + 3 min) holds requests 1 and 2
    start, end = T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)
    assert read_captures(s3, BUCKET, "capture", "m", "5", start, end)["request_id"].tolist() == ["1", "2"]
    assert count_records(s3, BUCKET, "capture", "m", "5", start, end) == 2
    # a naive datetime is UTC; another version reads nothing
    assert count_records(s3, BUCKET, "capture", "m", "5", T0.replace(tzinfo=None), end.replace(tzinfo=None)) == 3
    empty = read_captures(s3, BUCKET, "capture", "m", "6", start, end)
    assert empty.empty and {"request_id", "row", "time", "model_version", "prediction"} <= set(empty.columns)


def test_stacked_matrices_keep_integers_and_nulls_and_files_of_format_1_are_still_read(s3):
    import json

    import numpy as np

    at = T0.timestamp() - 60
    columns = [("visits", "long"), ("spend", "double")]
    capture = Capture(
        CaptureConfig(percent=100, s3_uri=f"s3://{BUCKET}/capture"), Counts(), "m", "7", columns, lambda: s3
    )
    capture.pending.extend(
        [
            _Item("a", at, "/predict", [], np.array([[3.0, 10.5], [7.0, np.nan]]), [1, 0]),  # the numeric fast path
            _Item("b", at + 1, "/predict", [], np.array([[np.nan, 2.0]]), [1]),  # an optional integer left out
            _Item("c", at + 2, "/invocations", [[4], [1.25]], None, [[0.2, 0.8]]),  # a mixed batch: columns
            _Item("d", at + 3, "/predict", [], np.array([[5.0, 0.5]]), [0]),
        ]
    )
    matrices_only = [capture.pending[i] for i in (0, 1, 3)]  # one stacked array: the writer's fast path
    assert json.loads(capture.serialize(matrices_only))["columns"] == {
        "visits": [3, 7, None, 5],
        "spend": [10.5, None, 2.0, 0.5],
    }
    assert json.loads(capture.serialize(matrices_only[::2]))["columns"]["visits"] == [3, 7, 5]  # int64, no null
    assert capture.flush_now() == 4
    [obj] = s3.list_objects_v2(Bucket=BUCKET, Prefix="capture/m/7/")["Contents"]
    [line] = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read().splitlines()
    assert json.loads(line)["columns"] == {"visits": [3, 7, None, 4, 5], "spend": [10.5, None, 2.0, 1.25, 0.5]}
    old = {  # format 1: one line per request, ISO time
        "request_id": "z",
        "time": "2026-12-07T13:59:30.250Z",
        "model_name": "m",
        "model_version": "7",
        "route": "/predict",
        "columns": {"visits": [8], "spend": [1.5]},
        "predictions": [1],
    }
    s3.put_object(Bucket=BUCKET, Key="capture/m/7/2026-12-07/13/1796651970250-h-1-0.jsonl", Body=json.dumps(old))
    frame = read_captures(s3, BUCKET, "capture", "m", "7", T0 - timedelta(minutes=5), T0)
    assert frame["request_id"].tolist() == ["a", "a", "b", "c", "d", "z"]
    assert frame["row"].tolist() == [0, 1, 0, 0, 0, 0]
    assert frame["visits"].tolist()[:2] == [3, 7] and pd_isna(frame["visits"].iloc[2]) and frame["visits"].iloc[5] == 8
    assert frame["prediction"].tolist() == [1, 0, 1, [0.2, 0.8], 0, 1]
    assert frame["time"].iloc[0] == T0 - timedelta(minutes=1)
    assert frame["time"].iloc[5] == datetime(2026, 12, 7, 13, 59, 30, 250000, tzinfo=UTC)
    assert count_records(s3, BUCKET, "capture", "m", "7", T0 - timedelta(minutes=5), T0) == 5


def pd_isna(value: object) -> bool:
    import pandas as pd

    return bool(pd.isna(value))
