"""`python -m flightdeck.supervisor` up -> status -> up again -> down on a throw-away second platform.

Own ports and state folder, so it runs beside the platform `make test` started; it uses that platform's
Docker engine (as `up` does whenever an engine answers) and must leave it running. About 2 minutes: Airflow
standalone's start is most of it. scripts/lifecycle_check.py goes further (a DAG run, data kept across a
restart).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from flightdeck.supervisor.embedded import processes_of

pytestmark = pytest.mark.integration

PORTS = {
    "FLIGHTDECK_S3_PORT": "9633",
    "FLIGHTDECK_MLFLOW_PORT": "9601",
    "FLIGHTDECK_AIRFLOW_PORT": "9680",
    "FLIGHTDECK_REGISTRY": "127.0.0.1:9650",
    "FLIGHTDECK_LB_URL": "http://127.0.0.1:9690",
    "FLIGHTDECK_LB_SLOT_BASE": "9700",
}


def _supervisor(action: str, env: dict[str, str], timeout: float = 120) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "flightdeck.supervisor", action],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout, result.stderr, time.monotonic() - t0


def _env(state: Path) -> dict[str, str]:
    """The caller's environment without the running platform's addresses, then this instance's."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("FLIGHTDECK_", "MLFLOW_", "AIRFLOW", "AWS_"))}
    return {**keep, **PORTS, "FLIGHTDECK_STATE_DIR": str(state)}


def test_up_status_up_again_down_leaves_no_process():
    state = Path(tempfile.mkdtemp(prefix="fd-sup-"))  # short: HAProxy's socket path must fit 108 bytes
    env = _env(state)
    try:
        rc, out, err, up_s = _supervisor("up", env, timeout=600)
        assert rc == 0, out + err
        for line in (
            "s3: healthy at http://127.0.0.1:9633",
            "docker engine: using the running engine",
            "image registry: healthy at http://127.0.0.1:9650/v2/",
            "mlflow: healthy at http://127.0.0.1:9601/health",
            "airflow: scheduler and dag processor healthy",
            "  Airflow UI   http://127.0.0.1:9680   user admin, password: ",
            "  Model (LB)   http://127.0.0.1:9690   (after a deploy)",
        ):
            assert line in out, out
        assert "password: see " not in out, "the generated admin password is printed"
        print(f"\nup: {up_s:.0f} s")

        rc, out, err, _ = _supervisor("status", env)
        assert rc == 0, out + err
        for name in ("s3", "mlflow", "airflow", "docker engine", "image registry", "base image"):
            assert f"  {name:<16} up    " in out, out
        assert "haproxy: up" in out

        pids = {f.name: f.read_text() for f in (state / "run").glob("*.pid")}
        assert set(pids) == {"s3.pid", "mlflow.pid", "registry.pid", "airflow.pid"}, "no dockerd: one answered"
        rc, out, err, again_s = _supervisor("up", env)
        assert rc == 0, out + err
        for line in ("s3: running", "mlflow: running", "airflow: running", "registry: answering on 127.0.0.1:9650"):
            assert line in out, out
        assert {f.name: f.read_text() for f in (state / "run").glob("*.pid")} == pids, "nothing restarted"
        assert again_s < 30

        # a second instance on the same ports: the first port it needs is named with the variable to set
        other = Path(tempfile.mkdtemp(prefix="fd-sup-other-"))
        try:
            rc, out, err, _ = _supervisor("up", {**env, "FLIGHTDECK_STATE_DIR": str(other)})
            assert rc == 1
            assert "port 9633 is taken (needed by S3 (SeaweedFS)); free it or set FLIGHTDECK_S3_PORT" in err
            assert not processes_of(other)
        finally:
            shutil.rmtree(other, ignore_errors=True)
    finally:
        rc, out, err, down_s = _supervisor("down", env, timeout=300)
        time.sleep(1)
        left = processes_of(state)
        for pid in left:  # never leave a second platform running on the test machine
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    print(f"down: {down_s:.0f} s")
    assert rc == 0, out + err
    for line in (
        "haproxy stopped",
        "airflow: stopped",
        "mlflow: stopped",
        "image registry: stopped",
        "docker engine: not started by us, left running",
        "s3: stopped",
    ):
        assert line in out, out
    assert not left, f"processes left after down: {left}"
    assert not list((state / "run").glob("*.pid"))
    rc, out, _, _ = _supervisor("status", env)
    assert rc == 1 and "  s3               DOWN  http://127.0.0.1:9633" in out, out
    shutil.rmtree(state, ignore_errors=True)
