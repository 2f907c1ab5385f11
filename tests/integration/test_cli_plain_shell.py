"""The `flightdeck` CLI as users run it: the virtualenv on PATH, nothing from scripts/env.sh.

Every command runs as a subprocess with a clean environment (`env -i PATH=<venv>/bin:/usr/bin:/bin
HOME=...`) against the running platform. Answers must come back on the local platform's defaults
(settings.py); every user error must be one line on stderr, a non-zero exit, and no traceback.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flightdeck import settings

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("flightdeck"))
VENV_BIN = str(Path(sys.executable).parent)


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def plain_shell(platform: settings.Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a fresh shell with the venv activated (HOME empty: no ~/.aws to lean on)."""
    defaults = settings.environment({})
    for name in ("FLIGHTDECK_S3_ENDPOINT", "MLFLOW_TRACKING_URI", "FLIGHTDECK_AIRFLOW_URL", "FLIGHTDECK_LB_URL"):
        if platform_value(platform, name) != defaults[name]:
            pytest.skip(f"the platform runs on non-default addresses ({name}); a plain shell cannot find it")
    return {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(tmp_path_factory.mktemp("home"))}


def platform_value(s: settings.Settings, name: str) -> str:
    return {
        "FLIGHTDECK_S3_ENDPOINT": s.s3_endpoint,
        "MLFLOW_TRACKING_URI": s.mlflow_uri,
        "FLIGHTDECK_AIRFLOW_URL": s.airflow_url,
        "FLIGHTDECK_LB_URL": s.lb_url,
    }[name]


def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_history_answers_from_a_plain_shell(plain_shell):
    proc = run_cli(plain_shell, "history", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert isinstance(rows, list)
    assert all(r["target"] == "local" for r in rows)
    assert "Traceback" not in proc.stderr


def test_status_answers_from_a_plain_shell(plain_shell):
    proc = run_cli(plain_shell, "status", "--target", "local", "--json")
    st = json.loads(proc.stdout)  # an answer, whatever the platform serves right now
    assert st["target"] == "local"
    # exit 0 when everything agrees, 1 when the answer carries warnings: never a crash
    assert proc.returncode == (1 if st["warnings"] else 0), proc.stderr
    assert "Traceback" not in proc.stderr and "NoCredentialsError" not in proc.stderr
    text = run_cli(plain_shell, "status")
    assert text.stdout.startswith("target local"), text.stderr


def test_status_with_mlflow_down_is_an_answer_naming_mlflow(plain_shell):
    env = {**plain_shell, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_closed_port()}"}
    proc = run_cli(env, "status", "--json")
    assert "Traceback" not in proc.stderr
    st = json.loads(proc.stdout)
    assert st["deployment"] is None or st["model"]["error"], st["model"]


def _user_errors() -> list:
    closed = _closed_port()
    return [
        # (id, argv, extra env, expected exit code, what the line says)
        ("wrong-target", ["status", "--target", "nope"], {}, 2, "invalid choice: 'nope'"),
        ("unknown-command", ["bogus"], {}, 2, "invalid choice: 'bogus'"),
        ("bad-limit", ["history", "--limit", "x"], {}, 2, "not a whole number"),
        ("zero-limit", ["history", "--limit", "0"], {}, 2, "must be 1 or more"),
        ("bad-timeout", ["run", "deploy", "--timeout", "-1"], {}, 2, "more than 0 seconds"),
        ("conf-not-json", ["run", "deploy", "--conf", "{bad"], {}, 2, "--conf is not JSON"),
        ("conf-not-object", ["run", "deploy", "--conf", "[1]"], {}, 2, "--conf must be a JSON object"),
        ("unknown-deployment", ["diff", "no-such-run", "other"], {}, 1, "no deployment record 'no-such-run'"),
        ("unknown-rollback-target", ["rollback", "--to", "no-such-run"], {}, 1, "no deployment record"),
        ("unknown-dag", ["run", "no_such_dag"], {}, 1, "unknown DAG 'no_such_dag'; Airflow has: "),
        ("clear-unknown-dag", ["clear", "no_such_dag", "r", "t"], {}, 1, "was not found"),
        ("unknown-dataset", ["dataset", "schema", "no_such_dataset"], {}, 2, "unknown dataset 'no_such_dataset'"),
        ("missing-file", ["dataset", "init", "x", "--from", "/no/such.csv", "--target", "y"], {}, 2, "/no/such.csv"),
        (
            "s3-unreachable",
            ["history"],
            {"FLIGHTDECK_S3_ENDPOINT": f"http://127.0.0.1:{closed}"},
            1,
            "cannot reach S3 at http://127.0.0.1:",
        ),
        (
            "s3-unreachable-dataset",
            ["dataset", "schema", "wine"],
            {"FLIGHTDECK_S3_ENDPOINT": f"http://127.0.0.1:{closed}"},
            1,
            "S3 unreachable at http://127.0.0.1:",
        ),
        (
            "no-credentials-off-machine",
            ["history"],
            {"FLIGHTDECK_S3_ENDPOINT": "https://s3.example.invalid"},
            2,
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ),
        (
            "wrong-credentials",
            ["history"],
            {"AWS_ACCESS_KEY_ID": "wrong", "AWS_SECRET_ACCESS_KEY": "wrong"},
            2,
            "refused the credentials",
        ),
        ("unknown-profile", ["history"], {"AWS_PROFILE": "no-such-profile"}, 2, "set AWS_PROFILE"),
        (
            "no-bucket",
            ["history"],
            {"FLIGHTDECK_DEPLOY_BUCKET": "flightdeck-no-such-bucket"},
            2,
            "set FLIGHTDECK_DEPLOY_BUCKET",
        ),
        (
            "airflow-unreachable",
            ["run", "deploy"],
            {"FLIGHTDECK_AIRFLOW_URL": f"http://127.0.0.1:{closed}"},
            1,
            "cannot reach Airflow",
        ),
        (
            "airflow-login",
            ["run", "deploy"],
            {"FLIGHTDECK_AIRFLOW_PASSWORD": "wrong"},
            2,
            "FLIGHTDECK_AIRFLOW_PASSWORD",
        ),
        (
            "no-airflow-password",
            ["clear", "deploy", "r", "t"],
            {"FLIGHTDECK_STATE_DIR": "/no/such/state"},
            2,
            "set FLIGHTDECK_AIRFLOW_PASSWORD",
        ),
        (
            "docker-unreachable",
            ["logs", "--no-upload"],
            {"DOCKER_HOST": f"tcp://127.0.0.1:{closed}"},
            1,
            "start dockerd, or set DOCKER_HOST",
        ),
    ]


@pytest.mark.parametrize(
    ("argv", "extra", "code", "says"), [c[1:] for c in _user_errors()], ids=[c[0] for c in _user_errors()]
)
def test_a_user_error_is_one_line_without_a_traceback(plain_shell, argv, extra, code, says):
    proc = run_cli({**plain_shell, **extra}, *argv)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert says in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
