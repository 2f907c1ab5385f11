"""The monitor DAG's steps as plain functions (dags/monitor.py wires one task per step).

Each takes and returns JSON-able values (XCom) and builds its own S3 client and record store, so any worker
runs any step and a retried step repeats its work idempotently (a re-run of a check writes the same keys).
Heavy modules (pandas, scipy, MLflow) are imported inside the steps: the DAG file imports this module, and
DAG parsing must stay fast.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from flightdeck import settings as settings_mod

log = logging.getLogger(__name__)

AWS_CONN_ID = "aws_default"
# The Asset the monitor updates on drift; the retrain DAG is scheduled on it (besides @daily).
DRIFT_ASSET_URI = "flightdeck://monitor/drift"


def _window_hours(window_hours: Any) -> float:
    """The run's `window_hours` Param ("" or 0 = params.yaml `monitor.window_hours`)."""
    from flightdeck.monitoring.config import monitor_config

    value = float(window_hours or 0)
    return value if value > 0 else monitor_config().window_hours


def _end(now: str) -> datetime:
    """The window's end: `now` (ISO-8601, e.g. the run's `run_after`) or, empty, the current time."""
    return datetime.fromisoformat(now.replace("Z", "+00:00")).astimezone(UTC) if now else datetime.now(UTC)


def find_versions(model_name: str = "", window_hours: Any = 0, now: str = "") -> list[dict[str, Any]]:
    """The versions to check: what the deployment records say serves, plus versions with captures in the
    window (monitor.watched_versions), as WatchedVersionDict."""
    from flightdeck import s3
    from flightdeck.deploy import records as rec
    from flightdeck.monitoring import monitor

    s = settings_mod.load()
    client = s3.client(AWS_CONN_ID)
    store = rec.RecordStore(client, s.deploy_bucket)
    found = monitor.watched_versions(
        store,
        client,
        s.data_bucket,
        model_name=model_name,
        now=_end(now),
        window=timedelta(hours=_window_hours(window_hours)),
    )
    for w in found:
        log.info("watching %s v%s (serving on: %s)", w.model_name, w.model_version, ", ".join(w.targets) or "-")
    if not found:
        log.info("nothing to watch: no deployment serves a model and no captures arrived in the window")
    return [w.to_dict() for w in found]


def check_version(watched: dict[str, Any], window_hours: Any = 0, now: str = "") -> dict[str, Any]:
    """monitor.check of one watched version; `now`: the window's end (ISO-8601, default the current time). The DAG
    passes its run's `run_after`, so a retried check judges the same window and writes the same keys."""
    from flightdeck import s3
    from flightdeck.monitoring import monitor
    from flightdeck.monitoring.config import monitor_config

    end = _end(now)
    summary = monitor.check(
        monitor.WatchedVersion.from_dict(watched),
        monitor_config(),
        s3=s3.client(AWS_CONN_ID),
        now=end,
        window_hours=_window_hours(window_hours),
    )
    return summary.to_dict()


def _summaries(summaries: Any) -> list[Any]:
    """MonitorSummary objects of the checks that finished (a failed mapped check has no summary: None)."""
    from flightdeck.monitoring import monitor

    return [monitor.MonitorSummary.from_dict(s) for s in (summaries or []) if s]


def alerts(summaries: list[dict[str, Any]], dag_id: str, run_id: str) -> list[Any]:
    """The MonitorAlerts to send: new drift (when params.yaml `monitor.on_drift.notify`) and live quality (always)."""
    from flightdeck.monitoring import monitor
    from flightdeck.monitoring.config import monitor_config

    cfg = monitor_config()
    found = monitor.alerts(_summaries(summaries), dag_id=dag_id, run_id=run_id)
    return [a for a in found if a.kind != "drift" or cfg.on_drift.notify]


def drift_event(summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The extra of the drift Asset event when a watched version newly drifted (its window before did not) and
    `monitor.on_drift.retrain` is on; None when no event should start a retrain."""
    from flightdeck.monitoring.config import monitor_config

    drifted = [m for m in _summaries(summaries) if m.newly_drifted]
    if not drifted:
        log.info("no new drift (none, or the same as the window before): no retrain event")
        return None
    if not monitor_config().on_drift.retrain:
        log.info("drift on %s, but monitor.on_drift.retrain is off: no retrain event", [m.model_name for m in drifted])
        return None
    return {
        "models": [
            {
                "model_name": m.model_name,
                "model_version": m.model_version,
                "dataset": m.dataset,
                "namespace": m.namespace,
                "drifted_features": m.drifted_features,
            }
            for m in drifted
        ]
    }


def rollback_confs(summaries: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Deploy confs restoring `previous` where live quality fell below its threshold, when
    `monitor.live_quality.rollback` is on; [] otherwise."""
    from flightdeck.monitoring import monitor
    from flightdeck.monitoring.config import monitor_config

    confs = monitor.rollback_conf(_summaries(summaries))
    if confs and not monitor_config().live_quality.rollback:
        log.warning("live quality below threshold on %s; rollback is off (monitor.live_quality.rollback)", confs)
        return []
    return confs
