"""E2E harness: a logged-in client of the running Airflow's REST API (/api/v2)."""

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
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
