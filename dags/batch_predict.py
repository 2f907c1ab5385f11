"""
### Batch predict: score a CSV/Parquet file or prefix in S3 with a registered model version

Trigger by hand with the form: the registered model and a version or alias (`champion` by default), the
input (a key or prefix in the data bucket, e.g. `landing/breast_cancer/`, or `s3://bucket/prefix`), and
optionally the output root (default `s3://<data bucket>/predictions`), rows per chunk, class
probabilities and an id column to carry instead of every input column.

1. **resolve**: the model version (an alias is pinned to its version now), the input files with their
   ETags (the input's data version) and the job id, a hash of the three: the same job writes to the same
   place, `<output root>/<model>/<version>/<job id>/`.
2. **score**: each file in chunks, validated and scored by the model server's own loader and validator,
   so a row gets exactly the answer `/predict` would give; rows the server would refuse go to `rejects/`
   with the reason. Each chunk is one `part-<file>-<chunk>.parquet`, written whole. A retry (or a new
   run of the same job) skips the parts already written: no duplicates, the same bytes.
3. **manifest**: `_manifest.json`, written last: model name, version, run id and the alias asked, the
   input's data version, row counts (in, predicted, rejected), parts and times.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from flightdeck_notify import FlightdeckFailureNotifier  # plugins/: log line, Slack or SNS

from flightdeck import batch_predict as steps


@task(task_id="resolve")
def resolve(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model version, the input listing and the job id, from the run's validated Params."""
    return steps.resolve_step(params or {})


@dag(
    dag_id=Path(__file__).stem,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=10),
        "owner": "flightdeck",
        "on_failure_callback": FlightdeckFailureNotifier(),
    },
    tags=["flightdeck", "batch", "mlflow"],
    doc_md=__doc__,
    params={
        "model_name": Param("", type="string", title="Registered model (empty: the platform default)"),
        "model": Param("champion", type="string", title="Model version or alias"),
        "input": Param(
            "",
            type="string",
            title="Input key or prefix",
            description="a CSV/Parquet key or prefix in the data bucket, or s3://bucket/key-or-prefix",
        ),
        "output": Param(
            "", type="string", title="Output root (empty: s3://<data bucket>/predictions)", description="s3://..."
        ),
        "chunk_rows": Param(steps.DEFAULT_CHUNK_ROWS, type="integer", minimum=1, title="Rows per chunk"),
        "return_probabilities": Param(False, type="boolean", title="Class probabilities (classifiers)"),
        "id_column": Param("", type="string", title="Carry only this input column (empty: all of them)"),
    },
)
def batch_predict() -> None:
    job = resolve()
    summary = task(steps.score_step, task_id="score")(job)
    task(steps.manifest_step, task_id="manifest")(job, summary)


batch_predict()
