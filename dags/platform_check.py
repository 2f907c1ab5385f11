"""Platform check: write an object to S3 with the provider's S3Hook and log a run to MLflow.

Run it after `make up` to see S3, MLflow and Airflow work together; its task logs land in S3 (remote logging).
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.sdk import dag, task
from flightdeck_notify import FlightdeckFailureNotifier  # plugins/: log line, Slack or SNS

from flightdeck import platform_check as probes


@dag(
    dag_id=Path(__file__).stem,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={
        "retries": 2,
        "retry_delay": pendulum.duration(seconds=5),
        "on_failure_callback": FlightdeckFailureNotifier(),
    },
    tags=["flightdeck", "platform"],
    doc_md=__doc__,
)
def platform_check():
    @task
    def write_probe(run_id: str | None = None) -> str:  # run_id injected from the task context
        return probes.write_probe(run_id)

    @task
    def log_probe_run(probe_uri: str, run_id: str | None = None) -> str:
        return probes.log_probe_run(run_id, probe_uri)

    log_probe_run(write_probe())


platform_check()
