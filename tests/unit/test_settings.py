"""settings.py is the one source of the embedded platform's defaults: load(), the CLI and scripts/env.sh."""

from __future__ import annotations

import json
import subprocess

from flightdeck import settings

ROOT = settings.REPO_ROOT


def _env_sh(extra: dict[str, str]) -> dict[str, str]:
    """What `source scripts/env.sh` exports in a clean shell."""
    script = "set -euo pipefail; source scripts/env.sh; env -0"
    out = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **extra},
        capture_output=True,
        check=True,
    ).stdout.decode()
    return dict(line.split("=", 1) for line in out.split("\0") if "=" in line)


def test_env_sh_exports_exactly_the_settings_defaults():
    exported = _env_sh({})
    for name, value in settings.environment({}).items():
        assert exported.get(name) == value, name
    assert exported["PATH"].startswith(f"{ROOT}/.venv/bin:")


def test_derived_defaults_follow_an_overridden_port_in_env_sh_and_load():
    exported = _env_sh({"FLIGHTDECK_S3_PORT": "8533", "FLIGHTDECK_MLFLOW_PORT": "5101"})
    assert exported["FLIGHTDECK_S3_ENDPOINT"] == "http://127.0.0.1:8533"
    assert exported["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5101"
    assert json.loads(exported["AIRFLOW_CONN_AWS_DEFAULT"])["extra"]["endpoint_url"] == "http://127.0.0.1:8533"


def test_local_s3_keys_only_while_s3_is_on_this_machine_and_no_profile_is_chosen():
    local = settings.environment({})
    assert (local["AWS_ACCESS_KEY_ID"], local["AWS_SECRET_ACCESS_KEY"]) == (
        settings.LOCAL_S3_ACCESS_KEY,
        settings.LOCAL_S3_SECRET_KEY,
    )
    remote = settings.environment({"FLIGHTDECK_S3_ENDPOINT": "https://s3.eu-west-1.amazonaws.com"})
    assert "AWS_ACCESS_KEY_ID" not in remote and "AIRFLOW_CONN_AWS_DEFAULT" not in remote
    profile = settings.environment({"AWS_PROFILE": "prod"})
    assert "AWS_ACCESS_KEY_ID" not in profile
    own = settings.environment({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    assert json.loads(own["AIRFLOW_CONN_AWS_DEFAULT"])["login"] == "k"


def test_apply_defaults_fills_only_what_the_caller_left_unset(monkeypatch, tmp_path):
    for name in settings.environment({}):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLIGHTDECK_LB_URL", "http://127.0.0.1:9999")
    monkeypatch.setattr(settings, "REPO_ROOT", tmp_path)  # the .env written next
    (tmp_path / ".env").write_text("# comment\nexport FLIGHTDECK_REGISTRY='127.0.0.1:6060'\n")
    settings.apply_defaults()
    s = settings.load()
    assert s.lb_url == "http://127.0.0.1:9999"  # the caller's value wins
    assert s.registry == "127.0.0.1:6060"  # then .env
    assert s.s3_endpoint == "http://127.0.0.1:8333"  # then the default
