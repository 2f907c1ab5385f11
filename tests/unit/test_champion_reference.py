"""Which version a challenger must beat when the `champion` alias is gone (its version was deleted from
the registry, and MLflow removed the alias with it): what is live, else `previous`, else refuse."""

from __future__ import annotations

import pytest

from flightdeck import gates
from flightdeck.deploy import records as rec


def ref(champion=None, live=None, previous=None, registered=("1", "2", "3", "4")):
    return gates.champion_reference(
        "m",
        "5",
        champion_alias=champion,
        live=live or {},
        previous_alias=previous,
        registered=lambda v: v in registered,
    )


def test_the_champion_alias_wins_when_it_exists():
    assert ref(champion="4", live={"local": ("3", "run-a")}, previous="2") == gates.ChampionRef("4", "alias champion")


def test_without_the_alias_the_live_version_is_the_champion():
    got = ref(live={"local": ("3", "manual__a")}, previous="2")
    assert got.version == "3" and got.source.startswith("live on local (deploy run manual__a)")


def test_without_the_alias_or_a_live_record_previous_is_the_champion():
    assert ref(previous="2") == gates.ChampionRef("2", "alias previous; the champion alias is gone")


def test_only_with_nothing_at_all_is_it_the_first_model():
    assert ref() == gates.ChampionRef(None, "")
    assert ref(previous="9") == gates.ChampionRef(None, "")  # a previous alias whose version is gone too


def test_a_live_version_gone_from_the_registry_refuses_with_the_reason():
    with pytest.raises(gates.ChampionUnknown) as err:
        ref(live={"local": ("7", "manual__x")}, previous="2")
    message = str(err.value)
    assert "m has no `champion` alias and v7 is live on local (deploy run manual__x)" in message
    assert "gone from the registry" in message and "not promoted on thresholds alone" in message
    assert "set_registered_model_alias('m', 'champion'" in message


def test_the_gate_message_names_where_the_champion_came_from():
    result = gates.compare_champion(
        "f1_macro",
        0.95,
        0.93,
        min_delta=0.0,
        challenger_version="5",
        champion_version="3",
        champion_source="live on local (deploy run r); the champion alias is gone",
    )
    assert result.passed and "champion v3 (live on local (deploy run r); the champion alias is gone)" in result.message
    assert "no champion yet" not in result.message


def test_records_say_what_serves_after_a_success_and_after_a_rollback():
    """Schema-1 documents (what older buckets hold), read through the upgrade to typed records."""
    ok = rec.DeploymentRecord.from_json(
        {"target": "local", "outcome": "succeeded", "run_id": "r2", "model": {"name": "m", "version": "2"}}
    )
    assert rec.served_models(ok) == [{"name": "m", "version": "2", "run_id": "r2"}]
    back = {
        "target": "local",
        "outcome": "rolled_back",
        "run_id": "r3",
        "model": {"name": "m", "version": "3"},
        "rollback": {"restored": {"v2-rev": 100, "v3-rev": 0}},
        "previous": {"specs": {"v2-rev": {"model_name": "m", "model_version": "2", "run_id": "r2"}}},
    }
    assert rec.served_models(rec.DeploymentRecord.from_json(back)) == [{"name": "m", "version": "2", "run_id": "r2"}]
    running = {"target": "local", "run_id": "r4", "outcome": "in_progress", "model": {"name": "m", "version": "4"}}
    assert rec.served_models(rec.DeploymentRecord.from_json(running)) == []
