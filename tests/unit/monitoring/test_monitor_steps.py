"""The monitor DAG's decisions: which alerts go out, when drift starts a retrain (of the lineage that drifted),
and when a version below its live-quality threshold is rolled back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from flightdeck import retrain
from flightdeck.monitoring import monitor, steps
from flightdeck.monitoring.config import LiveQualityGate, MonitorConfig, OnDrift


def _summary(verdict: str = "ok", quality: str | None = None, **kw: Any) -> dict[str, Any]:
    live = None
    if quality:
        below = {"accuracy": {"value": 0.5, "threshold": 0.85}} if quality == "below_threshold" else {}
        live = {"labeled_rows": 40, "metrics": {"accuracy": 0.5}, "series": [], "below_threshold": below}
        live["verdict"] = quality
    base = {
        "model_name": "m",
        "model_version": "3",
        "targets": ["local"],
        "window_start": "2026-12-07T12:00:00Z",
        "window_end": "2026-12-07T13:00:00Z",
        "rows": 500,
        "verdict": verdict,
        "drifted_features": ["mean radius"] if verdict == "drift" else [],
        "live_quality": live,
        "dataset": "breast_cancer",
        "namespace": "ns1",
        "report_html": "s3://data/monitoring/m/3/x/report.html",
    }
    return monitor.MonitorSummary.from_dict({**base, **kw}).to_dict()


@pytest.fixture()
def cfg(monkeypatch):
    """Patch params.yaml's monitor section as the steps read it."""

    def use(**kw: Any) -> None:
        monkeypatch.setattr("flightdeck.monitoring.config.monitor_config", lambda path=None: MonitorConfig(**kw))

    return use


def test_drift_starts_a_retrain_only_when_configured(cfg):
    drifted = [_summary("drift"), _summary("ok", model_version="2")]
    cfg(on_drift=OnDrift(retrain=False))
    assert steps.drift_event(drifted) is None
    cfg(on_drift=OnDrift(retrain=True))
    extra = steps.drift_event(drifted)
    assert extra == {
        "models": [
            {
                "model_name": "m",
                "model_version": "3",
                "dataset": "breast_cancer",
                "namespace": "ns1",
                "drifted_features": ["mean radius"],
            }
        ]
    }
    assert steps.drift_event([_summary("ok"), _summary("insufficient_data")]) is None


def test_a_drift_that_persists_is_announced_once(cfg):
    cfg(on_drift=OnDrift(retrain=True, notify=True))
    again = [_summary("drift", previous_verdict="drift")]
    assert steps.drift_event(again) is None
    assert steps.alerts(again, "monitor", "run2") == []
    assert steps.drift_event([_summary("drift", previous_verdict="warn")]) is not None


def test_a_failed_check_leaves_no_summary_and_the_others_still_count(cfg):
    cfg(on_drift=OnDrift(retrain=True))
    assert steps.drift_event([None, _summary("drift")])["models"][0]["model_version"] == "3"


def test_drift_alerts_follow_on_drift_notify_and_live_quality_alerts_always_go(cfg):
    summaries = [_summary("drift", quality="below_threshold")]
    cfg(on_drift=OnDrift(notify=True))
    alerts = steps.alerts(summaries, "monitor", "run1")
    assert [a.kind for a in alerts] == ["drift", "live_quality"]
    assert alerts[0].subject == "[flightdeck] drift on m v3"
    assert "drifted features: mean radius" in alerts[0].text() and "report.html" in alerts[0].text()
    assert "accuracy 0.5000 past threshold 0.85 on 40 labeled rows" in alerts[1].text()
    cfg(on_drift=OnDrift(notify=False))
    assert [a.kind for a in steps.alerts(summaries, "monitor", "run1")] == ["live_quality"]


def test_rollback_to_previous_where_live_quality_fell_only_when_configured(cfg):
    summaries = [_summary(quality="below_threshold", targets=["local", "ecs"]), _summary(quality="ok")]
    cfg(live_quality=LiveQualityGate(rollback=False))
    assert steps.rollback_confs(summaries) == []
    cfg(live_quality=LiveQualityGate(rollback=True))
    assert steps.rollback_confs(summaries) == [
        {"model": "previous", "model_name": "m", "target": "local", "strategy": "blue_green"},
        {"model": "previous", "model_name": "m", "target": "ecs", "strategy": "blue_green"},
    ]


@dataclass(frozen=True)
class _Asset:
    uri: str


@dataclass
class _Event:
    extra: dict[str, Any] = field(default_factory=dict)


def test_a_drift_started_retrain_reruns_the_lineage_that_drifted():
    extra = {"models": [{"model_name": "m", "dataset": "wine", "namespace": "ns1"}]}
    events = {
        _Asset("flightdeck://other"): [_Event({"models": [{"dataset": "x"}]})],
        _Asset(steps.DRIFT_ASSET_URI): [_Event(extra)],
    }
    assert retrain.drifted_lineage(events) == ("wine", "m", "ns1")
    assert retrain.drifted_lineage(None) is None
    assert retrain.drifted_lineage({_Asset(steps.DRIFT_ASSET_URI): [_Event({})]}) is None
