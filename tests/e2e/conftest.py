"""E2E harness: a logged-in client of the running Airflow's REST API (/api/v2), and a logged-in headless
Chromium for the pages (screenshots go to test-artifacts/, git-ignored)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from flightdeck.airflow_client import AirflowClient
from flightdeck.provisioning import airflow_password


@pytest.fixture(scope="session")
def airflow(platform) -> Iterator[AirflowClient]:
    client = AirflowClient(platform.airflow_url, "admin", airflow_password())
    yield client
    client.close()


# A private Airflow (plugin development) keeps its password elsewhere; default: the platform's.
AIRFLOW_HOME = os.environ.get("FLIGHTDECK_UI_TEST_AIRFLOW_HOME")


@pytest.fixture(scope="module")
def token(platform) -> str:
    password = airflow_password(Path(AIRFLOW_HOME) if AIRFLOW_HOME else None)
    resp = requests.post(
        f"{platform.airflow_url}/auth/token", json={"username": "admin", "password": password}, timeout=30
    )
    resp.raise_for_status()
    return resp.json()["access_token"]


@pytest.fixture(scope="module")
def browser(platform, token) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fd-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1800",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    driver.set_page_load_timeout(120)
    try:
        driver.get(f"{platform.airflow_url}/api/v2/monitor/health")  # on the origin before setting its cookie
        driver.add_cookie({"name": "_token", "value": token, "path": "/"})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
