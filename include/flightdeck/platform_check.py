"""The platform check: proves Airflow, S3 (through the provider's S3Hook) and MLflow work together."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from flightdeck import s3, settings

log = logging.getLogger(__name__)

PROBE_EXPERIMENT = "flightdeck-platform-check"


def write_probe(run_id: str, aws_conn_id: str = "aws_default") -> str:
    """Write a small JSON object for this run to the data bucket; return its s3:// URI.

    Raises botocore's errors (ClientError, EndpointConnectionError) when S3 refuses or does not answer."""
    bucket = settings.load().data_bucket
    key = f"platform-check/{run_id}.json"
    body = json.dumps({"run_id": run_id, "written_at": datetime.now(UTC).isoformat()})
    s3.hook(aws_conn_id).load_string(body, key=key, bucket_name=bucket, replace=True)
    log.info("wrote probe object s3://%s/%s (%d bytes)", bucket, key, len(body))
    return f"s3://{bucket}/{key}"


def log_probe_run(run_id: str, probe_uri: str) -> str:
    """Log one MLflow run that points at the probe object; return the MLflow run id."""
    import mlflow  # imported here: the DAG file must parse in milliseconds

    mlflow.set_tracking_uri(settings.load().mlflow_uri)
    mlflow.set_experiment(PROBE_EXPERIMENT)
    with mlflow.start_run(run_name=f"platform-check-{run_id}") as run:
        mlflow.set_tags({"airflow_run_id": run_id, "probe_uri": probe_uri})
        mlflow.log_metric("probe", 1.0)
    log.info("logged MLflow run %s in experiment %s", run.info.run_id, PROBE_EXPERIMENT)
    return run.info.run_id
