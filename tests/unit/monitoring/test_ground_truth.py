"""Late labels joined to captured rows give each version's live quality, judged against the gates' thresholds."""

from __future__ import annotations

import io

import boto3
import pandas as pd
import pytest
from moto import mock_aws

from flightdeck.data.schema import Task
from flightdeck.monitoring import ground_truth as gt

BUCKET = "data"


def _captures(version: str, n: int, predicted: list, start: str = "2026-12-07T10:00:00Z") -> pd.DataFrame:
    t0 = pd.Timestamp(start)
    return pd.DataFrame(
        {
            "request_id": [f"{version}-r{i // 2}" for i in range(n)],
            "row": [i % 2 for i in range(n)],
            "time": [t0 + pd.Timedelta(minutes=45 * i) for i in range(n)],
            "model_version": version,
            "prediction": predicted,
        }
    )


@pytest.fixture()
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def test_labels_from_csv_and_parquet_files_later_file_wins(s3):
    s3.put_object(Bucket=BUCKET, Key="labels/m/a.csv", Body=b"request_id,row,label\n0001,0,1\n0001,1,0\n")
    buf = io.BytesIO()
    pd.DataFrame({"request_id": ["0001", "x"], "label": [0, 1]}).to_parquet(buf)  # no row column: row 0
    s3.put_object(Bucket=BUCKET, Key="labels/m/b.parquet", Body=buf.getvalue())
    labels = gt.read_labels(s3, BUCKET, "m")
    got = {(r.request_id, r.row): r.label for r in labels.itertuples()}
    assert got == {("0001", 0): 0, ("0001", 1): 0, ("x", 0): 1}  # request ids stay text: "0001", not 1


def test_a_bad_labels_file_is_skipped_by_name_and_the_good_ones_still_read(s3, caplog):
    s3.put_object(Bucket=BUCKET, Key="labels/m/bad.csv", Body=b"id,label\n1,0\n")
    s3.put_object(Bucket=BUCKET, Key="labels/m/notes.txt", Body=b"hello")
    s3.put_object(Bucket=BUCKET, Key="labels/m/good.csv", Body=b"request_id,row,label\na,0,1\nb,,1\nc,0,\n")
    labels = gt.read_labels(s3, BUCKET, "m")
    assert labels[["request_id", "row"]].values.tolist() == [["a", 0]]  # rows missing a key or label left out
    assert "labels/m/bad.csv skipped: missing column(s) ['request_id']" in caplog.text
    assert "labels/m/notes.txt skipped: not a .csv or .parquet file" in caplog.text


def test_labels_landed_before_the_lookback_are_not_read(s3):
    from datetime import UTC, datetime, timedelta

    s3.put_object(Bucket=BUCKET, Key="labels/m/old.csv", Body=b"request_id,label\na,1\n")
    assert len(gt.read_labels(s3, BUCKET, "m", since=datetime.now(UTC) - timedelta(hours=1))) == 1
    assert gt.read_labels(s3, BUCKET, "m", since=datetime.now(UTC) + timedelta(hours=1)).empty


def test_a_feature_called_label_does_not_collide_with_the_truth():
    captures = _captures("1", 2, [1, 0]).assign(label=["x", "y"])  # a feature named `label`
    joined = gt.join_labels(captures, pd.DataFrame({"request_id": ["1-r0"], "row": [1], "label": [0]}))
    assert joined["label"].tolist() == ["y"] and joined[gt.TRUTH].tolist() == [0]


def test_join_keeps_only_captured_rows_with_a_label():
    captures = _captures("3", 4, [1, 0, 1, 1])
    labels = pd.DataFrame({"request_id": ["3-r0", "3-r1", "nowhere"], "row": [1, 0, 0], "label": [0, 1, 1]})
    joined = gt.join_labels(captures, labels)
    assert sorted(zip(joined["request_id"], joined["row"], strict=True)) == [("3-r0", 1), ("3-r1", 0)]


def test_live_accuracy_per_version_and_per_hour_with_the_threshold_verdict():
    good = _captures("1", 8, [1] * 8)
    bad = _captures("2", 8, [0] * 8)
    joined = pd.concat([good, bad]).assign(**{gt.TRUTH: 1})
    quality = gt.live_quality(joined, Task.CLASSIFICATION, {"accuracy": 0.85}, min_labeled_rows=8)
    assert quality["1"].metrics["accuracy"] == 1.0 and quality["1"].verdict == "ok"
    assert quality["2"].metrics["accuracy"] == 0.0 and quality["2"].verdict == "below_threshold"
    assert quality["2"].below_threshold == {"accuracy": {"value": 0.0, "threshold": 0.85}}
    # 8 rows 45 minutes apart from 10:00 span 6 hours; each point is that hour's rows
    assert [p.rows for p in quality["1"].series] == [
        2,
        1,
        1,
        2,
        1,
        1,
    ]  # 10:00 10:45 | 11:30 | 12:15 | 13:00 13:45 | ...
    assert quality["1"].series[0].hour == "2026-12-07T10:00:00Z"
    assert gt.LiveQuality.from_dict(quality["2"].to_dict()) == quality["2"]


def test_too_few_labels_give_no_verdict():
    joined = _captures("1", 4, [0] * 4).assign(**{gt.TRUTH: 1})
    quality = gt.live_quality(joined, Task.CLASSIFICATION, {"accuracy": 0.85}, min_labeled_rows=30)
    assert quality["1"].verdict == "insufficient_labels" and quality["1"].below_threshold == {}


def test_regression_rmse_is_a_ceiling():
    joined = _captures("1", 6, [10.0] * 6).assign(**{gt.TRUTH: [10.0, 10.0, 10.0, 10.0, 40.0, 40.0]})
    quality = gt.live_quality(joined, Task.REGRESSION, {"rmse": 5.0, "r2": -100.0}, min_labeled_rows=6)
    assert quality["1"].metrics["rmse"] == pytest.approx(((2 * 30**2) / 6) ** 0.5, rel=1e-6)
    assert set(quality["1"].below_threshold) == {"rmse"}


def test_integer_labels_match_text_predictions():
    assert gt.task_metrics(Task.CLASSIFICATION, [1.0, 0.0], ["1", "0"])["accuracy"] == 1.0
