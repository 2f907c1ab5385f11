"""The retrain DAG's shape: one task per step, gates as short-circuits, schedule and retry policy."""

from __future__ import annotations

DAG_ID = "retrain"  # the `dag` fixture (tests/unit/conftest.py) loads dags/retrain.py


def test_schedule_is_daily_or_on_the_monitors_drift_asset(dag):
    from airflow.sdk import AssetOrTimeSchedule

    assert isinstance(dag.schedule, AssetOrTimeSchedule)
    assert dag.schedule.timetable.expression == "0 0 * * *"  # @daily
    assert [a.uri for a in dag.schedule.asset_condition.objects] == ["flightdeck://monitor/drift"]


def test_defaults(dag):
    assert dag.catchup is False
    assert dag.start_date.year == 2026
    assert {"flightdeck", "retrain"} <= set(dag.tags)
    assert dag.max_active_runs == 1
    assert all(t.retries >= 2 for t in dag.tasks)
    assert set(dag.params) == {"dataset", "force", "model_name", "namespace"}


def test_one_task_per_step_in_order(dag):
    order = [
        "sync_data",
        "has_changes",
        "check_data",
        "train",
        "register",
        "threshold_gate",
        "champion_gate",
        "promote",
    ]
    assert sorted(dag.task_ids) == sorted(order)
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    gates = {t.task_id for t in dag.tasks if type(t).__name__ == "_ShortCircuitDecoratedOperator"}
    assert gates == {"has_changes", "check_data", "threshold_gate", "champion_gate"}


def test_promote_emits_through_the_champion_alias_and_the_any_champion_asset(dag):
    outlets = dag.get_task("promote").outlets
    assert [type(o).__name__ for o in outlets] == ["AssetAlias", "Asset"]
    assert outlets[0].name == "flightdeck-champion"
    assert outlets[1].uri == "flightdeck://models/champion"  # what continuous_deploy is scheduled on


def test_sync_data_refuses_a_name_that_is_not_a_string():
    """A caller that hands sync_data a native-rendered value (2026, None for "None") gets a TypeError naming it."""
    import pytest

    from flightdeck import retrain as steps

    with pytest.raises(TypeError, match=r"namespace must be a string, got int 2026"):
        steps.sync_data(namespace=2026)
    with pytest.raises(TypeError, match=r"model_name must be a string, got float 1000.0"):
        steps.sync_data(model_name=1e3)
