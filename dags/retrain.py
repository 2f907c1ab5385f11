"""
### Retrain: the next data batch in S3 -> a validated, promoted model in MLflow

1. **sync_data** checks the CSV/Parquet files under `s3://<data bucket>/landing/<dataset>/` against the
   dataset's schema (declared in params.yaml, or inferred from the first data and stored): bad ones go to
   `quarantine/` with a reason naming the column and rows; good ones, identified by content, are appended
   to the DVC-tracked dataset, which is `dvc push`ed; the data version is the dataset's DVC md5.
2. **has_changes** short-circuits the rest when this data version and these params were already trained.
3. **check_data** (gate): row count, nulls, ranges, label balance. Pass -> the candidate
   becomes the dataset's current version; fail -> its batches are quarantined, nothing else changes.
4. **train** runs the DVC pipeline (`dvc repro`: prepare -> train -> evaluate, stage by stage in the
   log) in the dataset's workspace and logs one MLflow run (params, metrics, model, nested search runs).
5. **register** makes a registry version, alias `challenger`.
6. **threshold_gate** / **champion_gate**: bounds on the holdout metrics (floors for scores, ceilings
   for errors such as rmse), then challenger vs champion on the same holdout with a margin, in the
   metric's direction (the first model, or the first on a new holdout, is gated on the bounds alone).
   If the `champion` alias was lost with its deleted version, the champion is what is live (deployment
   records), else `previous`; a live version gone from the registry fails the gate with that reason.
   Gate results are version tags.
7. **promote** moves `champion` (the former one becomes `previous`) and emits an Asset event on
   `flightdeck://models/<model name>/champion` and on `flightdeck://models/champion`: the continuous_deploy
   DAG is scheduled on the latter and deploys only when params.yaml `continuous_deploy.enabled` is true.

Scheduled daily, and on the monitor's drift Asset `flightdeck://monitor/drift` (emitted only when params.yaml
`monitor.on_drift.retrain` is on).

Params: `dataset` (a key of params.yaml `datasets`; empty = params.yaml's default), `force` (train even
when data and params are unchanged), `model_name` (override the registry name) and `namespace` (an
isolated lineage: S3 prefixes, workspace and experiment; e.g. to try a config without touching the
main one). String Params reach the steps as strings, whatever they look like ("2026", "None", "1e3"):
templates render as text (never as native Python objects), and the boolean `force` is read from the
run's Params.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Asset, AssetAlias, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from flightdeck_notify import FlightdeckFailureNotifier  # plugins/: log line, Slack or SNS

from flightdeck import retrain as steps
from flightdeck.monitoring.steps import DRIFT_ASSET_URI

# Promotion events go through an alias (the concrete Asset depends on the dataset's model name) and on one
# fixed Asset for every model, which the continuous_deploy DAG is scheduled on.
CHAMPION_EVENTS = AssetAlias("flightdeck-champion")
ANY_CHAMPION = Asset(steps.ANY_CHAMPION_ASSET_URI)


@task(outlets=[CHAMPION_EVENTS, ANY_CHAMPION])
def promote(registered: dict[str, Any], *, outlet_events: Any = None) -> dict[str, Any]:
    """Move the champion alias and announce it as an Asset event."""
    result = steps.promote(registered)
    extra = {
        "model_name": result["model_name"],
        "version": result["version"],
        "previous": result["previous"],
        "data_version": result["data_version"],
    }
    outlet_events[CHAMPION_EVENTS].add(Asset(result["asset_uri"]), extra=extra)
    outlet_events[ANY_CHAMPION].extra = extra
    return result


@task.short_circuit(task_id="has_changes")
def has_changes(synced: dict[str, Any], params: dict[str, Any] | None = None) -> bool:
    """Short-circuit unless the data or params changed (or `force`).

    `force` is read from the run's validated Params, not from a template: templates render to strings
    ("False" is truthy), and rendering them as native objects turns string Params into ints and None.
    """
    return steps.has_changes(synced, force=bool((params or {}).get("force")))


@dag(
    dag_id=Path(__file__).stem,
    # daily, and whenever the monitor reports drift with monitor.on_drift.retrain on
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("@daily", timezone="UTC"), assets=[Asset(DRIFT_ASSET_URI)]
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # runs share the dataset's workspace and aliases
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=20),
        "owner": "flightdeck",
        "on_failure_callback": FlightdeckFailureNotifier(),
    },
    tags=["flightdeck", "retrain", "mlflow", "dvc"],
    doc_md=__doc__,
    params={
        "dataset": Param("", type="string", description="params.yaml `datasets` key; empty = the default"),
        "force": Param(False, type="boolean", description="retrain even if data and params are unchanged"),
        "model_name": Param("", type="string", description="registry name; empty = the dataset's configured one"),
        "namespace": Param("", type="string", description="isolated lineage (S3 prefixes, workspace, experiment)"),
    },
)
def retrain() -> None:
    synced = task(steps.sync_data, task_id="sync_data")(
        dataset="{{ params.dataset }}",
        model_name="{{ params.model_name }}",
        namespace="{{ params.namespace }}",
    )
    changed = has_changes(synced)
    data_ok = task.short_circuit(steps.check_data, task_id="check_data")(synced)
    trained = task(steps.train, task_id="train")(synced, dag_id="{{ dag.dag_id }}", run_id="{{ run_id }}")
    registered = task(steps.register, task_id="register")(trained)
    thresholds_ok = task.short_circuit(steps.threshold_gate, task_id="threshold_gate")(registered)
    beats_champion = task.short_circuit(steps.champion_gate, task_id="champion_gate")(registered)
    promoted = promote(registered)

    changed >> data_ok >> trained
    registered >> thresholds_ok >> beats_champion >> promoted


retrain()
