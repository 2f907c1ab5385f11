"""Ground truth that arrives after the predictions: labels joined to captured requests, live quality per version.

Labels are landed like data: CSV or Parquet files under `s3://<data bucket>/labels/<model name>/`, one row per
scored row, with the columns

    request_id   the X-Request-ID the model server answered (it is in every response and capture record)
    row          the row's index within that request (optional: 0, for one-row requests)
    label        the true value (a class for classification, a number for regression)

`join_labels` matches them to the capture rows (monitoring/capture.read_captures) on (request_id, row); a label
without a captured row joins nothing. A file that cannot be read (not CSV/Parquet, no request_id or label column)
is skipped with a warning naming it, so one bad file does not stop the monitor.
`live_quality` scores each model version on its joined rows, in
the metric names the gates use (accuracy and f1_macro, or rmse, mae and r2), overall and per hour of capture.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from flightdeck.data.schema import Task
from flightdeck.errors import FlightdeckError
from flightdeck.metric_direction import LOWER_IS_BETTER
from flightdeck.modeling import prediction_metrics

log = logging.getLogger(__name__)

LABELS_PREFIX = "labels"
TRUTH = "__truth__"  # the joined label's column (a feature may itself be called `label`)
LABEL_COLUMNS = ("request_id", "row", "label")


class LabelsError(FlightdeckError, ValueError):
    """A labels file cannot be read or lacks the columns it needs (the message says which)."""


def labels_prefix(model_name: str) -> str:
    """Where the labels of `model_name` are landed in the data bucket: `labels/<model name>/`."""
    return f"{LABELS_PREFIX}/{model_name}/"


def _labels_file(key: str, body: bytes) -> pd.DataFrame:
    """One labels file as (request_id, row, label) rows with both keys and a label present. Raises LabelsError
    for a file that is not CSV/Parquet or lacks request_id or label (the message names the file's columns)."""
    if not key.endswith((".parquet", ".csv")):
        raise LabelsError("not a .csv or .parquet file")
    try:
        if key.endswith(".parquet"):
            frame = pd.read_parquet(io.BytesIO(body))
        else:
            frame = pd.read_csv(io.BytesIO(body), dtype={"request_id": str})
    except (ValueError, OSError) as e:  # pandas' and pyarrow's parse errors
        raise LabelsError(f"unreadable: {e}") from None
    missing = [c for c in ("request_id", "label") if c not in frame.columns]
    if missing:
        raise LabelsError(f"missing column(s) {missing}; need {list(LABEL_COLUMNS)}, has {list(frame.columns)}")
    if "row" not in frame.columns:
        frame["row"] = 0
    frame = frame[list(LABEL_COLUMNS)].dropna()  # a row without its request, index or label joins nothing
    return frame.assign(row=pd.to_numeric(frame["row"], errors="coerce")).dropna()


def read_labels(s3: Any, bucket: str, model_name: str, since: datetime | None = None) -> pd.DataFrame:
    """The labels files of `model_name` (modified at or after `since`, when given) as one frame (request_id: str,
    row: int, label), later files winning on a repeated (request_id, row). A file that cannot be read is
    skipped with a warning naming it and why (the monitor goes on with the others); rows missing a key or the
    label are left out."""
    frames = []
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=labels_prefix(model_name)):
        keys.extend(
            (o["LastModified"], o["Key"]) for o in page.get("Contents", []) if not since or o["LastModified"] >= since
        )
    for _, key in sorted(keys):
        try:
            frames.append(_labels_file(key, s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        except LabelsError as e:
            log.warning("labels file s3://%s/%s skipped: %s", bucket, key, e)
    if not frames:
        return pd.DataFrame({"request_id": pd.Series(dtype=str), "row": pd.Series(dtype=int), "label": []})
    out = pd.concat(frames, ignore_index=True)
    out["request_id"] = out["request_id"].astype(str)
    out["row"] = out["row"].astype(int)
    return out.drop_duplicates(["request_id", "row"], keep="last").reset_index(drop=True)


def join_labels(captures: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The capture rows that have a label: capture columns plus the label in column TRUTH (inner join on
    request_id and row)."""
    right = labels.rename(columns={"label": TRUTH})
    if captures.empty or labels.empty:
        return captures.iloc[0:0].assign(**{TRUTH: pd.Series(dtype=object)})
    left = captures.assign(request_id=captures["request_id"].astype(str), row=captures["row"].astype(int))
    return left.merge(right, on=["request_id", "row"], how="inner")


def task_metrics(task: Task, truth: Sequence[Any], predicted: Sequence[Any]) -> dict[str, float]:
    """The metrics the gates use that need only predictions: classification accuracy and f1_macro; regression
    rmse, mae and r2 (in the target's units). Labels and predictions compare as strings for classification,
    so a class landed as 1 matches a prediction of "1"."""
    if task is Task.REGRESSION:
        # r2 of a single row is nan (scikit-learn warns); live_quality leaves a nan metric unjudged
        return prediction_metrics(task, np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float))
    return prediction_metrics(task, [_label(v) for v in truth], [_label(v) for v in predicted])


def _label(value: Any) -> str:
    """A class as text; 1.0 and 1 read the same (CSV turns integer labels into floats when a value is missing)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class QualityPoint:
    """One hour of a version's joined rows and its metrics then."""

    hour: str  # ISO-8601 UTC, the hour the requests were captured
    rows: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class LiveQuality:
    """A model version's live quality: its metrics on every joined row, per hour, and the gate's verdict."""

    model_version: str
    labeled_rows: int
    metrics: dict[str, float] = field(default_factory=dict)
    series: list[QualityPoint] = field(default_factory=list)
    below_threshold: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> {value, threshold}
    verdict: str = "insufficient_labels"  # ok | below_threshold | insufficient_labels

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LiveQuality:
        """The inverse of to_dict."""
        return cls(**{**d, "series": [QualityPoint(**p) for p in d.get("series", [])]})


def live_quality(
    joined: pd.DataFrame, task: Task, thresholds: Mapping[str, float], min_labeled_rows: int
) -> dict[str, LiveQuality]:
    """model version -> its LiveQuality on `joined` (join_labels' output: model_version, time, prediction, TRUTH).

    The gate: with at least `min_labeled_rows` joined rows, a metric on the wrong side of its threshold (a floor
    for scores, a ceiling for errors, as the retrain's threshold gate reads `gates.thresholds`) makes the verdict
    `below_threshold`; metrics without a threshold are reported only."""
    out: dict[str, LiveQuality] = {}
    if joined.empty:
        return out
    for version, rows in joined.groupby(joined["model_version"].astype(str), sort=True):
        metrics = task_metrics(task, rows[TRUTH].tolist(), rows["prediction"].tolist())
        hours = pd.to_datetime(rows["time"], utc=True).dt.floor("h")
        series = [
            QualityPoint(
                hour=hour.strftime("%Y-%m-%dT%H:00:00Z"),
                rows=len(group),
                metrics=task_metrics(task, group[TRUTH].tolist(), group["prediction"].tolist()),
            )
            for hour, group in rows.groupby(hours, sort=True)
        ]
        below: dict[str, dict[str, float]] = {}
        if len(rows) >= min_labeled_rows:
            for metric, bound in thresholds.items():
                value = metrics.get(metric)
                if value is None or np.isnan(value):
                    continue
                ok = value <= bound if metric in LOWER_IS_BETTER else value >= bound
                if not ok:
                    below[metric] = {"value": round(value, 6), "threshold": float(bound)}
        verdict = "insufficient_labels" if len(rows) < min_labeled_rows else ("below_threshold" if below else "ok")
        out[str(version)] = LiveQuality(
            model_version=str(version),
            labeled_rows=len(rows),
            metrics={k: round(v, 6) for k, v in metrics.items()},
            series=series,
            below_threshold=below,
            verdict=verdict,
        )
    return out
