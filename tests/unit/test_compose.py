"""docker-compose.yaml: valid for Compose (its own schema check, `config`), and shaped like Airflow's official
file: an x-airflow-common anchor, healthchecks, depends_on conditions, images from this repo's Dockerfile.
The stack is not started here (`make compose-e2e` starts it, on ports of its own: scripts/compose/e2e.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
AIRFLOW = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-init")


def _compose_cmd() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("neither docker-compose nor `docker compose` is installed (scripts/install-system.sh installs it)")


def _config(path: Path) -> subprocess.CompletedProcess:
    # an empty env file and a bare environment: the defaults in the file are what is checked, not a
    # developer's .env or the shell's FLIGHTDECK_* overrides
    empty = path.parent / ".compose-test.env"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    try:
        return subprocess.run(
            [*_compose_cmd(), "--env-file", str(empty), "-f", str(path), "config"],
            capture_output=True,
            text=True,
            cwd=path.parent,
            timeout=120,
            env=env,
        )
    finally:
        empty.unlink()


@pytest.fixture(scope="module")
def resolved() -> dict:
    proc = _config(COMPOSE)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_rejects_a_broken_file(tmp_path):
    """The schema check is live: the same file with a misspelt key fails `config`."""
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(
        COMPOSE.read_text().replace(
            '    healthcheck:\n      test: ["CMD", "pg_isready"', '    healthchek:\n      test: ["CMD", "pg_isready"', 1
        )
    )
    assert broken.read_text() != COMPOSE.read_text()
    proc = _config(broken)
    assert proc.returncode != 0 and "healthchek" in proc.stderr


def test_the_stack_has_every_part(resolved):
    assert set(resolved["services"]) == {*AIRFLOW, "postgres", "s3", "mlflow", "registry", "deploy-lb"}


def test_airflow_components_share_the_common_anchor(raw, resolved):
    assert "x-airflow-common" in raw
    common = raw["x-airflow-common"]
    text = COMPOSE.read_text()
    for name in (*AIRFLOW, "deploy-lb"):
        assert re.search(rf"^  {name}:\n    <<: \*airflow-common$", text, re.M), name
        svc = resolved["services"][name]
        assert svc["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert svc["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert svc["build"]["target"] == common["build"]["target"] == "airflow"
    commands = {n: resolved["services"][n]["command"] for n in AIRFLOW}
    assert commands["airflow-apiserver"] == ["airflow", "api-server"]
    assert commands["airflow-scheduler"] == ["airflow", "scheduler"]
    assert commands["airflow-dag-processor"] == ["airflow", "dag-processor"]
    assert commands["airflow-triggerer"] == ["airflow", "triggerer"]
    assert "airflow db migrate" in " ".join(commands["airflow-init"])


def test_every_service_has_a_healthcheck_and_waits_on_healthy_dependencies(resolved):
    services = resolved["services"]
    jobs = {n for n, s in services.items() if s.get("restart") == "no"}
    assert jobs == {"airflow-init"}
    for name, svc in services.items():
        if name in jobs:
            assert svc["healthcheck"] in ({"disable": True}, {"test": ["NONE"]})  # v1 prints disable as NONE
            continue
        check = svc.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            want = "service_completed_successfully" if dep in jobs else "service_healthy"
            assert cond["condition"] == want, (name, dep, cond)
    sched = services["airflow-scheduler"]["depends_on"]
    assert {"postgres", "airflow-init", "airflow-apiserver", "deploy-lb"} <= set(sched)


def _stages(dockerfile: Path) -> list[str]:
    return re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text(), re.M | re.I)


def test_images_build_from_this_repo(resolved):
    """Airflow (and s3, mlflow) from the root Dockerfile's `airflow` target; Postgres and the registry from
    Debian packages on the same offline base (scripts/compose/Dockerfile): no image from Docker Hub."""
    stages = _stages(ROOT / "Dockerfile")
    assert {"serving", "airflow"} <= set(stages)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.index("# ---- airflow image ----") < dockerfile.index("AS airflow")
    built = {}
    for svc in resolved["services"].values():
        if "build" in svc:
            path = Path(svc["build"]["context"]) / svc["build"].get("dockerfile", "Dockerfile")
            assert svc["build"]["target"] in _stages(path)
            built[svc["image"]] = (str(path.relative_to(ROOT)), svc["build"]["target"])
    assert built == {
        "flightdeck-airflow:latest": ("Dockerfile", "airflow"),
        "flightdeck-postgres:latest": ("scripts/compose/Dockerfile", "postgres"),
        "flightdeck-registry:latest": ("scripts/compose/Dockerfile", "registry"),
    }
    for name in ("s3", "mlflow"):
        assert resolved["services"][name]["image"] == "flightdeck-airflow:latest"
    bases = re.findall(r"^FROM\s+(\S+)", (ROOT / "scripts" / "compose" / "Dockerfile").read_text(), re.M)
    assert set(bases) == {"python:3.11-slim"}, bases


def test_every_host_port_is_a_variable_the_e2e_moves(raw):
    """Host networking: a fixed port would collide with the embedded platform on the same machine, so every
    port the stack binds is a FLIGHTDECK_*_PORT (or _BASE) variable, and scripts/compose/e2e.py moves each."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compose_e2e", ROOT / "scripts" / "compose" / "e2e.py")
    e2e = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(e2e)
    used = set(re.findall(r"\$\{(FLIGHTDECK_\w+_(?:PORT|BASE)):-", COMPOSE.read_text()))
    assert used == set(e2e.PORTS), used ^ set(e2e.PORTS)
    env = raw["x-airflow-common"]["environment"]
    for key in (
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
        "AIRFLOW__API__PORT",
    ):
        assert env[key].startswith("${FLIGHTDECK_"), key


def test_addresses_match_what_the_code_reads(resolved):
    """Every FLIGHTDECK_* variable the stack sets is one the code reads (a typo would silently be ignored),
    and the deploy tasks' view of the services is the published loopback ports."""
    env = resolved["services"]["airflow-scheduler"]["environment"]
    code = "\n".join(p.read_text() for p in (ROOT / "include" / "flightdeck").rglob("*.py"))
    for key in env:
        if key.startswith("FLIGHTDECK_"):
            assert f'"{key}"' in code, f"{key} is set in docker-compose.yaml but nothing reads it"
    ports = {n: [_port(p) for p in s.get("ports", [])] for n, s in resolved["services"].items()}
    assert env["FLIGHTDECK_S3_ENDPOINT"] == f"http://127.0.0.1:{ports['s3'][0][1]}"
    # MLflow is on the host's network (its presigned S3 URLs must work for the tasks): its own --port
    mlflow = resolved["services"]["mlflow"]
    assert mlflow["network_mode"] == "host"
    command = mlflow["command"] if isinstance(mlflow["command"], str) else " ".join(mlflow["command"])
    assert f"--port {env['MLFLOW_TRACKING_URI'].rsplit(':', 1)[1]} " in command
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == env["FLIGHTDECK_S3_ENDPOINT"]
    assert env["FLIGHTDECK_REGISTRY"] == f"127.0.0.1:{ports['registry'][0][1]}"
    assert f"@127.0.0.1:{ports['postgres'][0][1]}/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    for name in ("s3", "registry", "postgres"):
        assert [host for host, _ in ports[name]] == ["127.0.0.1"], f"{name} must listen on loopback only"
    assert resolved["services"]["airflow-scheduler"]["pid"] == "service:deploy-lb"
    assert any(
        _volume(v) == ("/var/run/docker.sock", "/var/run/docker.sock")
        for v in resolved["services"]["airflow-scheduler"]["volumes"]
    )


def _port(p: str | dict) -> tuple[str, str]:
    """(host ip, published port) from Compose v2's long form or v1's "ip:published:target" string."""
    if isinstance(p, dict):
        return p.get("host_ip", ""), str(p["published"])
    parts = p.split("/")[0].split(":")
    return (parts[0], parts[1]) if len(parts) == 3 else ("", parts[0])


def _volume(v: str | dict) -> tuple[str, str]:
    if isinstance(v, dict):
        return v.get("source", ""), v["target"]
    source, target = v.split(":")[:2]
    return source, target
