"""Fault suite: real services of the embedded platform killed or restarted mid-run (tests/support/faults.py),
each test restoring what it broke. Marked `faults` (and driven like e2e: the running Airflow's REST API)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flightdeck.airflow_client import AirflowClient
from flightdeck.provisioning import airflow_password


@pytest.fixture(scope="session")
def airflow(platform) -> Iterator[AirflowClient]:
    client = AirflowClient(platform.airflow_url, "admin", airflow_password())
    yield client
    client.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)
