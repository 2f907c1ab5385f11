"""batch_predict against the running platform: a model registered in MLflow under this test's own name, a
CSV and a Parquet file landed in the data bucket under a unique prefix, scored through the job's steps, the
CLI in a subprocess killed midway and re-run, and the DAG through Airflow's REST API."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flightdeck import batch_predict as bp
from flightdeck import s3 as s3_mod
from tests.support.model_examples import log_breast_cancer_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]
ROWS_CSV, ROWS_PARQUET = 30_000, 40_000


@pytest.fixture(scope="module")
def s3(platform) -> Any:
    return s3_mod.client()


@pytest.fixture(scope="module")
def model(platform) -> Iterator[tuple[str, str, Any]]:
    """(registered name, version, estimator): a logistic regression under a unique name, alias champion."""
    import mlflow
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    mlflow.set_tracking_uri(platform.mlflow_uri)
    name = f"fd-test-batch-{uuid.uuid4().hex[:8]}"
    version, estimator = log_breast_cancer_model(name, experiment="fd-test-batch-predict")
    client = MlflowClient(platform.mlflow_uri)
    client.set_registered_model_alias(name, "champion", str(version))
    yield name, str(version), estimator
    client.delete_registered_model(name)


@pytest.fixture(scope="module")
def landed(platform, s3) -> Iterator[tuple[str, Any]]:
    """(prefix, frame): breast-cancer rows resampled with noise, with an `id`, as a CSV and a Parquet file."""
    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    rng = np.random.default_rng(7)
    frame = X.iloc[rng.integers(0, len(X), ROWS_CSV + ROWS_PARQUET)].reset_index(drop=True)
    frame = frame * rng.normal(1.0, 0.05, frame.shape)
    frame.insert(0, "id", np.arange(len(frame)))
    prefix = f"tests/batch-predict/{uuid.uuid4().hex[:8]}/"
    s3.put_object(
        Bucket=platform.data_bucket, Key=f"{prefix}in/a.csv", Body=frame.iloc[:ROWS_CSV].to_csv(index=False).encode()
    )
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame.iloc[ROWS_CSV:], preserve_index=False), sink)
    s3.put_object(Bucket=platform.data_bucket, Key=f"{prefix}in/b.parquet", Body=sink.getvalue())
    yield prefix, frame
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=platform.data_bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=platform.data_bucket, Key=obj["Key"])


def _params(model, landed, platform, out: str, chunk_rows: int, **extra: Any) -> dict[str, Any]:
    name, _, _ = model
    prefix, _ = landed
    return {
        "model_name": name,
        "model": "champion",
        "input": f"{prefix}in/",
        "output": f"s3://{platform.data_bucket}/{prefix}{out}",
        "chunk_rows": chunk_rows,
        **extra,
    }


def _parts(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".parquet"):
                found[obj["Key"][len(prefix) :]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return found


def _predictions(parts: dict[str, bytes]) -> pa.Table:
    tables = []
    for key in sorted(parts):
        if not key.startswith(bp.REJECTS_DIR):
            t = pq.read_table(io.BytesIO(parts[key]))
            tables.append(t.set_column(0, "id", t.column("id").cast(pa.int64())))
    return pa.concat_tables(tables)


def test_csv_and_parquet_are_scored_as_the_model_predicts_with_lineage(model, landed, platform, s3):
    name, version, estimator = model
    _, frame = landed
    job = bp.resolve_step(_params(model, landed, platform, "steps", 25_000, return_probabilities=True))
    assert (job["model_name"], job["model_version"], job["alias"]) == (name, version, "champion")
    summary = bp.score_step(job)
    manifest = bp.manifest_step(job, summary)

    assert manifest["rows_in"] == manifest["rows_out"] == len(frame) and manifest["rows_rejected"] == 0
    assert manifest["chunks"] == 2 + 2  # 30k rows and 40k rows in chunks of 25k
    assert manifest["model"]["run_id"] and manifest["input"]["data_version"] == job["data_version"]
    table = _predictions(_parts(s3, job["output_bucket"], job["output_prefix"]))
    ids = np.asarray(table.column("id").to_pylist())
    assert sorted(ids.tolist()) == list(range(len(frame)))
    X = frame.drop(columns="id").iloc[ids]
    assert table.column("prediction").to_pylist() == estimator.predict(X).tolist()
    assert np.allclose(table.column("probability_1").to_numpy(), estimator.predict_proba(X)[:, 1])
    stored = json.loads(
        s3.get_object(Bucket=job["output_bucket"], Key=job["output_prefix"] + bp.MANIFEST_NAME)["Body"].read()
    )
    assert stored["job_id"] == job["job_id"] and f"/{name}/{version}/{job['job_id']}/" in stored["output"]


def test_a_run_killed_midway_and_rerun_gives_the_same_output_without_duplicates(model, landed, platform, s3, tmp_path):
    params = _params(model, landed, platform, "killed", 2_000)
    clean = bp.resolve_step({**params, "output": params["output"].replace("/killed", "/clean")})
    bp.manifest_step(clean, bp.score_step(clean))
    expected = _parts(s3, clean["output_bucket"], clean["output_prefix"])
    total = len([k for k in expected if k.startswith("part-")])

    job = bp.resolve_step(params)
    assert job["job_id"] == clean["job_id"]
    bucket, prefix = job["output_bucket"], job["output_prefix"]
    cmd = [sys.executable, "-m", "flightdeck.batch_predict", "--model-name", params["model_name"]]
    cmd += ["--input", params["input"], "--output", params["output"], "--chunk-rows", "2000"]
    log_path = tmp_path / "killed.log"
    with log_path.open("wb") as log_file:  # a file, not a pipe: a full pipe would stall the child
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        # the first whole part (an upload in flight may be listed before it completes; it is not a part yet)
        while not bp.existing_parts(s3, bp.Job.from_dict(job)) and time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    out = log_path.read_text()
    assert proc.returncode == -signal.SIGKILL, out[-2000:]
    written = bp.existing_parts(s3, bp.Job.from_dict(job))
    assert 0 < len(written) < total, f"killed after {len(written)} of {total} parts; its output: {out[-3000:]}"
    assert bp.MANIFEST_NAME not in _list(s3, bucket, prefix)

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert f"{len(written)} already present" in rerun.stdout + rerun.stderr, rerun.stdout[-3000:]
    after = _parts(s3, bucket, prefix)
    assert after == expected  # the same part keys with the same bytes
    ids = _predictions(after).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == len(landed[1])


def _list(s3: Any, bucket: str, prefix: str) -> list[str]:
    page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"][len(prefix) :] for o in page.get("Contents", [])]


def test_the_dag_scores_through_airflow(model, landed, platform, s3):
    from flightdeck.airflow_client import AirflowClient
    from flightdeck.provisioning import airflow_password

    name, version, _ = model
    params = _params(model, landed, platform, "dag", 50_000, id_column="id")
    airflow = AirflowClient(platform.airflow_url, "admin", airflow_password())
    try:
        run_id = airflow.trigger("batch_predict", params)
        state = airflow.wait("batch_predict", run_id, timeout=300)
        assert state == "success", airflow.task_log("batch_predict", run_id, "score")[-3000:]
        job = airflow.get(f"/dags/batch_predict/dagRuns/{run_id}/taskInstances/resolve/xcomEntries/return_value")
    finally:
        airflow.close()
    job = job["value"] if isinstance(job["value"], dict) else json.loads(job["value"])
    manifest = json.loads(
        s3.get_object(Bucket=job["output_bucket"], Key=job["output_prefix"] + bp.MANIFEST_NAME)["Body"].read()
    )
    assert manifest["model"] == {
        "name": name,
        "version": version,
        "run_id": manifest["model"]["run_id"],
        "alias_asked": "champion",
    }
    assert manifest["rows_out"] == len(landed[1]) and manifest["chunks"] == 2
    assert pq.read_table(
        io.BytesIO(_parts(s3, job["output_bucket"], job["output_prefix"])["part-00000-000000.parquet"])
    ).column_names == ["id", "prediction"]
