"""
### Monitor: each live model version's traffic against its training baseline, and its quality on late labels

Hourly (and by hand, for any window). For every version the deployment records say serves, and every
version with captured requests in the window:

1. **find_versions** lists them (records of every target, plus `capture/<model>/<version>/` in the data bucket).
2. **check** (one mapped task per version) reads the captured window, compares it with the version's baseline
   (`baseline/profile.json` of its training run): data quality (missing columns, types, nulls, unseen
   categories) and drift per feature and on the predictions (PSI and a two-sample test, thresholds in
   params.yaml `monitor.drift`); joins late labels (`labels/<model>/`) for live accuracy or rmse per version.
   The report (JSON and HTML) goes to `s3://<data bucket>/monitoring/<model>/<version>/<time>/` and to an
   MLflow run of the `flightdeck-monitoring` experiment; the Deployments page shows the newest one.
3. **notify** sends an alert when a version drifts after a window that did not (a persisting drift is in every
   report, announced once) and when live quality is below threshold (log line, Slack or SNS, as failures are).
4. **drift_event** emits the Asset event `flightdeck://monitor/drift` (the retrain DAG is scheduled on it)
   when a version newly drifted and `monitor.on_drift.retrain` is on; otherwise it is skipped and emits nothing.
   The retrain it starts trains again when new data has landed; with none, it stops at `has_changes`.

notify, drift_event and rollback_confs run even when one version's check failed (trigger rule all_done), with
the summaries of the checks that finished. A check's window ends at the run's `run_after`, so a retried check
judges the same window and rewrites the same report.
5. **rollback_previous** deploys `previous` (blue_green) where live quality fell below the gates'
   thresholds, when `monitor.live_quality.rollback` is on.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Asset, Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException
from flightdeck_notify import FlightdeckFailureNotifier, send_notices  # plugins/: log line, Slack or SNS

from flightdeck.monitoring import steps

DRIFT = Asset(steps.DRIFT_ASSET_URI)


@task(trigger_rule="all_done")  # one version's failed check must not silence the others
def notify(summaries: list[dict[str, Any]], dag_id: str, run_id: str) -> dict[str, Any]:
    """Send the run's alerts to the configured channels."""
    return send_notices(steps.alerts(summaries, dag_id, run_id))


@task(outlets=[DRIFT], trigger_rule="all_done")
def drift_event(summaries: list[dict[str, Any]], *, outlet_events: Any = None) -> dict[str, Any]:
    """Announce drift as an Asset event (starts a retrain), or skip: a skipped task emits nothing."""
    extra = steps.drift_event(summaries)
    if extra is None:
        raise AirflowSkipException("no drift event (see the log)")
    outlet_events[DRIFT].extra = extra
    return extra


@dag(
    dag_id=Path(__file__).stem,
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=20),
        "owner": "flightdeck",
        "on_failure_callback": FlightdeckFailureNotifier(),
    },
    tags=["flightdeck", "monitor"],
    doc_md=__doc__,
    params={
        "model_name": Param("", type="string", description="watch only this registered model; empty = every one"),
        "window_hours": Param(0, type="number", minimum=0, description="0 = params.yaml monitor.window_hours"),
    },
)
def monitor() -> None:
    # the window ends at the run's run_after (the hour for scheduled runs), so a retried check judges the same one
    versions = task(steps.find_versions, task_id="find_versions")(
        model_name="{{ params.model_name }}", window_hours="{{ params.window_hours }}", now="{{ dag_run.run_after }}"
    )
    summaries = (
        task(steps.check_version, task_id="check")
        .partial(window_hours="{{ params.window_hours }}", now="{{ dag_run.run_after }}")
        .expand(watched=versions)
    )
    notify(summaries, dag_id="{{ dag.dag_id }}", run_id="{{ run_id }}")
    drift_event(summaries)
    confs = task(steps.rollback_confs, task_id="rollback_confs", trigger_rule="all_done")(summaries)
    TriggerDagRunOperator.partial(task_id="rollback_previous", trigger_dag_id="deploy").expand(conf=confs)


monitor()
