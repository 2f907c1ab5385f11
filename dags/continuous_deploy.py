"""
### Continuous deploy: each new champion -> the deploy DAG, without a person (opt-in)

Scheduled on the Asset `flightdeck://models/champion`, which the retrain DAG's promote task updates on every
promotion. **plan** turns the triggering events into deploy confs from params.yaml `continuous_deploy`
(target, strategy: canary by default, its steps and bake time), or into none while
`continuous_deploy.enabled` is false; **deploy** starts one deploy DAG run per conf (skipped when there is
none). The deploy run is the one a person would start: the same health checks, automatic rollback and,
with its `require_approval` Param, the approval step.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Asset, dag, task
from flightdeck_notify import FlightdeckFailureNotifier  # plugins/: log line, Slack or SNS

from flightdeck.retrain import ANY_CHAMPION_ASSET_URI


@task
def plan(*, triggering_asset_events: Any = None) -> list[dict[str, Any]]:
    """Deploy confs for the champion events that started this run ([] when continuous deployment is off)."""
    from flightdeck.deploy.continuous import deploy_confs
    from flightdeck.monitoring.config import continuous_deploy_config

    extras = [event.extra for events in (triggering_asset_events or {}).values() for event in events]
    return [dict(c) for c in deploy_confs(extras, continuous_deploy_config())]


@dag(
    dag_id=Path(__file__).stem,
    schedule=[Asset(ANY_CHAMPION_ASSET_URI)],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=10),
        "owner": "flightdeck",
        "on_failure_callback": FlightdeckFailureNotifier(),
    },
    tags=["flightdeck", "deploy", "continuous"],
    doc_md=__doc__,
)
def continuous_deploy() -> None:
    TriggerDagRunOperator.partial(task_id="deploy", trigger_dag_id="deploy").expand(conf=plan())


continuous_deploy()
