"""Shared fixtures for unit tests."""

from __future__ import annotations

from collections.abc import Iterator
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


RECORDS_BUCKET = "deployments"


@pytest.fixture()
def store() -> Iterator:
    """A deploy.records.RecordStore on bucket RECORDS_BUCKET of an in-process S3 (moto)."""
    import boto3
    from moto import mock_aws

    from flightdeck.deploy import records as rec

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=RECORDS_BUCKET)
        yield rec.RecordStore(s3, RECORDS_BUCKET)
