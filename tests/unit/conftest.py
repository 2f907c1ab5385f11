"""Shared fixtures for unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dag(request):
    """The DAG named by the test module's DAG_ID, parsed from its own file with no import errors."""
    from airflow.dag_processing.dagbag import DagBag

    dag_id = request.module.DAG_ID
    bag = DagBag(dag_folder=str(DAGS / f"{dag_id}.py"))
    assert bag.import_errors == {}
    return bag.dags[dag_id]
