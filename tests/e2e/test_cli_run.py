"""`flightdeck run` (what CI runs on main) against the running Airflow: triggers the platform_check DAG,
waits, and reports the same run, state and task states the REST API reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_run_triggers_and_waits(airflow):
    cli = str(Path(sys.executable).with_name("flightdeck"))
    proc = subprocess.run(
        [cli, "run", "platform_check", "--wait", "--timeout", "400", "--json"],
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    run = airflow.get(f"/dags/platform_check/dagRuns/{out['run_id']}")
    assert run["state"] == out["state"] == "success"
    assert run["run_type"] == "manual"
    assert out["tasks"] == airflow.task_states("platform_check", out["run_id"]) and out["tasks"]
    assert out["url"].endswith("/dags/platform_check/runs/" + out["run_id"].replace(":", "%3A").replace("+", "%2B"))
