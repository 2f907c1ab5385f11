"""One monitor check against the platform's S3 and MLflow: the model server's own capture writer records
traffic shifted on two named features, late labels land, and `monitor.check` reads both back.

Proves the whole read side without containers (tests/e2e/test_monitor.py drives it through the deploy DAG and
the load balancer): exactly the shifted features are flagged, live accuracy per version matches the labels,
and the report lands in S3 (JSON + HTML), in MLflow and as the version's latest summary.
"""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from flightdeck import s3 as s3_mod
from flightdeck import settings as settings_mod
from flightdeck.data.schema import infer
from flightdeck.monitoring import monitor
from flightdeck.monitoring.baseline import PROFILE_ARTIFACT, profile_frame
from flightdeck.monitoring.config import MonitorConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MODEL = f"monitor-check-{uuid.uuid4().hex[:8]}"
SHIFTED = ["mean texture", "worst smoothness"]


class _Counters:
    written = 0
    dropped = 0

    def capture_written(self, n: int) -> None:
        self.written += n

    def capture_dropped(self, reason: str, n: int) -> None:
        self.dropped += n


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X, y


@pytest.fixture(scope="module")
def version(platform, data) -> str:
    """A registered logistic regression whose training run carries the tags, thresholds and baseline a
    retrain logs (tracking.log_training_run): the monitor's only source of how to judge the version."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    from flightdeck.tracking import TAG_DATASET, TAG_NAMESPACE, TAG_TASK

    X, y = data
    model = LogisticRegression(max_iter=5000).fit(X.iloc[:400], y.iloc[:400])
    schema = infer(X.assign(target=y), "target", "classification")
    profile = profile_frame(X.iloc[:400], schema, model.predict(X.iloc[400:]))
    mlflow.set_tracking_uri(platform.mlflow_uri)
    mlflow.set_experiment("monitor-tests")
    tags = {TAG_TASK: "classification", TAG_DATASET: "breast_cancer", TAG_NAMESPACE: "monitor-check"}
    with mlflow.start_run(tags=tags):
        mlflow.log_params({"gates.thresholds.accuracy": 0.85, "gates.thresholds.f1_macro": 0.85})
        mlflow.log_dict(profile.to_dict(), PROFILE_ARTIFACT)
        info = mlflow.sklearn.log_model(
            model, name="model", signature=infer_signature(X, y), registered_model_name=MODEL
        )
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def checked(platform, data, version):
    """400 rows captured by serving/capture.py's writer (two features shifted by 3 standard deviations),
    labels for the first 300 landed, then one check; returns (summary, sent frame, predictions, s3)."""
    import mlflow

    from serving.capture import Capture, CaptureConfig

    X, y = data
    rng = np.random.default_rng(5)
    idx = rng.choice(len(X), 400, replace=True)
    sent = X.iloc[idx].reset_index(drop=True).copy()
    for col in SHIFTED:
        sent[col] = sent[col] + 3 * X[col].std()
    truth = y.iloc[idx].reset_index(drop=True)
    model = mlflow.sklearn.load_model(f"models:/{MODEL}/{version}")
    predicted = model.predict(sent).tolist()

    client = s3_mod.client()
    counters = _Counters()
    capture = Capture(
        CaptureConfig(percent=100, s3_uri=f"s3://{platform.data_bucket}/capture"),
        counters,
        MODEL,
        version,
        [(c, "double") for c in X.columns],
        client_factory=lambda: client,
    )
    for i in range(0, 400, 5):  # 80 requests of 5 rows, as the server queues them
        matrix = sent.iloc[i : i + 5].to_numpy(dtype=float)
        capture.offer(f"req-{i // 5}", "/predict", None, matrix, predicted[i : i + 5])
    capture.flush_now()
    assert counters.written == 80 and counters.dropped == 0

    labels = pd.DataFrame(
        {"request_id": [f"req-{i // 5}" for i in range(300)], "row": [i % 5 for i in range(300)], "label": truth[:300]}
    )
    buf = io.BytesIO()
    labels.to_parquet(buf)
    client.put_object(Bucket=platform.data_bucket, Key=f"labels/{MODEL}/day1.parquet", Body=buf.getvalue())

    summary = monitor.check(
        monitor.WatchedVersion(MODEL, version, ("local",)),
        MonitorConfig(),
        s3=client,
        settings=settings_mod.load(),
        now=datetime.now(UTC),
    )
    return summary, sent, predicted, truth, client


def test_exactly_the_shifted_features_are_flagged(checked):
    summary, *_ = checked
    assert summary.rows == 400
    assert summary.verdict == "drift"
    assert sorted(summary.drifted_features) == sorted(SHIFTED)
    assert summary.dataset == "breast_cancer" and summary.namespace == "monitor-check"


def test_live_accuracy_is_the_labeled_rows_accuracy(checked):
    summary, _, predicted, truth, _ = checked
    expected = float(np.mean(np.asarray(predicted[:300]) == truth[:300].to_numpy()))
    quality = summary.live_quality
    assert quality["labeled_rows"] == 300
    assert quality["metrics"]["accuracy"] == pytest.approx(expected, abs=1e-6)
    assert quality["verdict"] == ("ok" if expected >= 0.85 else "below_threshold")


def test_the_report_is_in_s3_mlflow_and_the_latest_summary(platform, checked):
    summary, _, _, _, client = checked
    doc = json.loads(monitor.read_report(client, summary.report_json))
    assert sorted(doc["drift"]["drifted_features"]) == sorted(SHIFTED)
    html = monitor.read_report(client, summary.report_html).decode()
    assert all(name in html for name in SHIFTED) and "Live quality" in html
    latest = monitor.latest_summaries(client, platform.data_bucket, MODEL)
    assert [m.model_version for m in latest] == [summary.model_version]
    assert latest[0].report_html == summary.report_html

    from mlflow import MlflowClient

    run = MlflowClient(platform.mlflow_uri).get_run(summary.mlflow_run_id)
    assert run.data.tags["model_name"] == MODEL and run.data.tags["verdict"] == "drift"
    assert run.data.metrics["rows"] == 400 and run.data.metrics["drifted_features"] == 2
    assert "live_accuracy" in run.data.metrics


def test_a_late_check_of_an_older_window_leaves_the_latest_summary(platform, checked):
    """An older window checked after a newer one (a scheduled run queued behind a manual one) writes its own
    report but does not replace the newer latest.json the page, the CLI and the next alert read."""
    summary, _, _, _, client = checked
    older = monitor.check(
        monitor.WatchedVersion(MODEL, summary.model_version, ("local",)),
        MonitorConfig(),
        s3=client,
        settings=settings_mod.load(),
        now=datetime.fromisoformat(summary.window_end) - timedelta(hours=3),
        log_to_mlflow=False,
    )
    assert older.rows == 0 and older.window_end < summary.window_end
    assert json.loads(monitor.read_report(client, older.report_json))["summary"]["rows"] == 0
    [latest] = monitor.latest_summaries(client, platform.data_bucket, MODEL)
    assert (latest.window_end, latest.verdict) == (summary.window_end, "drift")
