"""Shared fixtures: the running local platform (started by `make up` / `make test`)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flightdeck import settings
from flightdeck.provisioning import use_local_aws_default

# Tests run outside Airflow; `make test` sources scripts/env.sh, a bare `pytest` gets the same connection here.
use_local_aws_default()

# Airflow puts plugins/ on sys.path for DAG files; do the same for tests that load them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as err:  # S3 answers anonymous requests with 403: it is up
        return err.code < 500
    except OSError:
        return False


@pytest.fixture(scope="session")
def platform() -> settings.Settings:
    """The platform's addresses; fails (never skips) with the name of each service that does not answer."""
    s = settings.load()
    checks = {
        "S3 (SeaweedFS)": s.s3_endpoint + "/",
        "MLflow": s.mlflow_uri + "/health",
        "Airflow": s.airflow_url + "/api/v2/monitor/health",
        "image registry": f"http://{s.registry}/v2/",
    }
    down = [f"{name} at {url}" for name, url in checks.items() if not _answers(url)]
    if down:
        pytest.fail("platform services not answering (run `make up`): " + "; ".join(down), pytrace=False)
    return s
