"""The compose stack end to end (`make compose-e2e`): build -> up (every service healthy) -> retrain -> deploy
-> a live prediction through the load balancer -> down, each phase timed.

It runs beside the embedded platform on the same machine: every host port of the stack is moved (the Airflow
components and HAProxy use host networking), the compose project has its own name, and it only ever stops or
removes what this project created (its containers, volumes and network, the model containers the deploy
started, the serving images it pushed to its own registry). Docker Compose v1 (`docker-compose`, Debian's
1.29) or v2 (`docker compose`), whichever is installed.

    .venv/bin/python scripts/compose/e2e.py [--keep]     # --keep: leave the stack up at the end (or on failure)

Every FLIGHTDECK_*_PORT below can be overridden from the environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = os.environ.get("FLIGHTDECK_COMPOSE_PROJECT", "flightdeck-compose")

# Ports clear of the embedded platform's (8333-8339, 18333+, 5001, 8080, 8793, 8794, 5050, 8090, 8401+, 5432) and
# of the other platforms seen on the shared development machine (5201-5350, 8200-8699, 8801+, 8993, 9401+)
PORTS = {
    "FLIGHTDECK_POSTGRES_PORT": "7532",
    "FLIGHTDECK_S3_PORT": "7733",
    "FLIGHTDECK_MLFLOW_PORT": "7401",
    "FLIGHTDECK_AIRFLOW_PORT": "7480",
    "FLIGHTDECK_REGISTRY_PORT": "7450",
    "FLIGHTDECK_LB_PORT": "7690",
    "FLIGHTDECK_LB_SLOT_BASE": "7700",  # model containers on 7701.. and 7801.., the S3 relay on 7799
    "FLIGHTDECK_WORKER_LOG_PORT": "7693",
    "FLIGHTDECK_TRIGGER_LOG_PORT": "7694",
    "FLIGHTDECK_SCHEDULER_HEALTH_PORT": "7695",
}
SERVICES = (
    "postgres",
    "s3",
    "mlflow",
    "registry",
    "deploy-lb",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)

log = logging.getLogger("compose-e2e")


def compose_env() -> dict[str, str]:
    """The environment for docker-compose and for this script's own clients (flightdeck.settings reads it)."""
    env = dict(os.environ)
    for name, value in PORTS.items():
        env.setdefault(name, value)
    p = {name: env[name] for name in PORTS}
    env.setdefault("FLIGHTDECK_AIRFLOW_IMAGE", "flightdeck-compose-airflow:latest")
    env.setdefault("FLIGHTDECK_POSTGRES_IMAGE", "flightdeck-compose-postgres:latest")
    env.setdefault("FLIGHTDECK_REGISTRY_IMAGE", "flightdeck-compose-registry:latest")
    env.setdefault("AIRFLOW_UID", "50000")
    env["DOCKER_GID"] = str(os.stat("/var/run/docker.sock").st_gid)
    env["FLIGHTDECK_GIT_SHA"] = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    # what flightdeck.settings gives this script's clients (landing data, REST, the LB), pointing at the stack
    env["FLIGHTDECK_S3_ENDPOINT"] = f"http://127.0.0.1:{p['FLIGHTDECK_S3_PORT']}"
    env["FLIGHTDECK_AIRFLOW_URL"] = f"http://127.0.0.1:{p['FLIGHTDECK_AIRFLOW_PORT']}"
    env["FLIGHTDECK_REGISTRY"] = f"127.0.0.1:{p['FLIGHTDECK_REGISTRY_PORT']}"
    env["FLIGHTDECK_LB_URL"] = f"http://127.0.0.1:{p['FLIGHTDECK_LB_PORT']}"
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{p['FLIGHTDECK_MLFLOW_PORT']}"
    env.setdefault("AWS_ACCESS_KEY_ID", "flightdeck")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "flightdeck-secret")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return env


def compose_cmd() -> list[str]:
    if shutil.which("docker-compose"):
        base = ["docker-compose"]
    else:
        base = ["docker", "compose"]
    return [*base, "-p", PROJECT, "-f", str(ROOT / "docker-compose.yaml")]


def sh(cmd: list[str], env: dict[str, str], check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    log.info("$ %s", " ".join(cmd))
    return subprocess.run(cmd, env=env, cwd=ROOT, check=check, text=True, capture_output=capture)


def check_ports_free(env: dict[str, str]) -> None:
    """Fail before starting anything when a port of the stack is already taken (by the embedded platform...)."""
    import socket

    base = int(env["FLIGHTDECK_LB_SLOT_BASE"])
    ports = [int(env[n]) for n in PORTS if n != "FLIGHTDECK_LB_SLOT_BASE"] + [base + 1, base + 101, base + 99]
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    if busy:
        raise SystemExit(f"ports already in use: {busy}; move them with the FLIGHTDECK_*_PORT variables")


def container_states(env: dict[str, str]) -> dict[str, str]:
    """service -> health ('healthy', 'starting', 'unhealthy') or, without a healthcheck, the container status."""
    out = {}
    for service in [*SERVICES, "airflow-init"]:
        ids = sh([*compose_cmd(), "ps", "-q", service], env, check=False, capture=True).stdout.split()
        if not ids:
            out[service] = "missing"
            continue
        info = json.loads(subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True).stdout)[0]
        state = info["State"]
        health = (state.get("Health") or {}).get("Status")
        out[service] = health or f"{state['Status']}({state.get('ExitCode')})"
    return out


def wait_healthy(env: dict[str, str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    while True:
        states = container_states(env)
        if states != last:
            log.info("services: %s", ", ".join(f"{k}={v}" for k, v in states.items()))
            last = states
        if all(states[s] == "healthy" for s in SERVICES) and states["airflow-init"] == "exited(0)":
            return states
        init = states["airflow-init"]
        if init.startswith("exited(") and init != "exited(0)":  # (a healthcheck may flap under load: wait on)
            raise SystemExit(f"airflow-init failed: {states}")
        if time.monotonic() > deadline:
            raise SystemExit(f"not every service healthy after {timeout:.0f} s: {states}")
        time.sleep(3)


def run_flows(env: dict[str, str], times: dict[str, float]) -> None:
    """Retrain, deploy and predict through the stack, as a user: the REST API of its Airflow and its LB."""
    os.environ.update({k: v for k, v in env.items() if k.startswith(("FLIGHTDECK_", "AWS_", "MLFLOW_"))})
    sys.path.insert(0, str(ROOT / "scripts"))
    from demo import http_json, run_dag, unpause_and_settle  # the same REST calls as `make demo`

    from flightdeck import pipeline_config, settings
    from flightdeck.airflow_client import AirflowClient
    from flightdeck.data import generate, land
    from flightdeck.data.store import ObjectStore

    s = settings.load()
    # the provider's aws_default (ObjectStore's S3Hook) aimed at the stack's S3, whatever the shell had
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = settings.aws_connection_json(
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], s.s3_endpoint, env["AWS_DEFAULT_REGION"]
    )
    cat = sh([*compose_cmd(), "exec", "-T", "airflow-apiserver", "cat", env_password_file()], env, capture=True).stdout
    password = json.loads(cat)["admin"]
    client = AirflowClient(s.airflow_url, "admin", password)
    cfg = pipeline_config.load(None)

    t = time.monotonic()
    unpause_and_settle(client, "retrain", timeout=900)  # the scheduler's own run for the latest interval first
    key = land.land(cfg, ObjectStore(), "good")
    log.info("landed a new batch of %s data at s3://%s/%s", cfg.name, s.data_bucket, key)
    run_dag(client, "retrain", {}, timeout=900)
    times["retrain (REST: trigger -> success)"] = time.monotonic() - t

    t = time.monotonic()
    run_dag(client, "deploy", {"model": "champion", "target": "local", "strategy": "blue_green"}, timeout=900)
    times["deploy (REST: trigger -> success)"] = time.monotonic() - t

    t = time.monotonic()
    version = http_json(f"{s.lb_url}/version")
    log.info("live through the stack's load balancer: %s", json.dumps(version))
    row = generate.good_batch(cfg, 1).drop(columns=[cfg.target]).iloc[0].to_dict()
    prediction = http_json(f"{s.lb_url}/predict", {"rows": [row]})
    log.info("prediction through the stack's load balancer for one row: %s", json.dumps(prediction))
    times["prediction through the LB"] = time.monotonic() - t


def env_password_file() -> str:
    return "/opt/airflow/shared/simple_auth_manager_passwords.json.generated"


def down(env: dict[str, str]) -> None:
    """Stop HAProxy and the model containers the deploy started (they run on the host's engine, outside the
    project), remove them and the serving images pushed to this stack's registry, then `down -v`."""
    sh(
        [*compose_cmd(), "exec", "-T", "deploy-lb", "python", "-m", "flightdeck.deploy.lb_service", "stop"],
        env,
        check=False,
    )
    prefix = f"fd-local-{env['FLIGHTDECK_LB_PORT']}-"
    ids = subprocess.run(
        [
            "docker", "ps", "-aq",
            "--filter", "label=org.flightdeck.lb=/opt/flightdeck/state/deploy/lb",
            "--filter", f"name=^{prefix}",
        ],
        capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    if ids:
        sh(["docker", "rm", "-f", *ids], env, check=False)
    sh([*compose_cmd(), "down", "-v", "--remove-orphans"], env, check=False)
    registry = env["FLIGHTDECK_REGISTRY"]
    images = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference={registry}/*"],
        capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    if images:
        sh(["docker", "rmi", *images], env, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack up at the end (and on failure)")
    parser.add_argument("--no-build", action="store_true", help="use the images already built")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    env = compose_env()
    if not sh([*compose_cmd(), "ps", "-q"], env, capture=True).stdout.split():  # (else: this stack, --keep'ed)
        check_ports_free(env)
    times: dict[str, float] = {}
    total = time.monotonic()
    ok = False
    try:
        t = time.monotonic()
        if not args.no_build:  # the legacy builder: classic Dockerfiles, no BuildKit here
            benv = {**env, "DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "1"}
            for attempt in (1, 2, 3):  # a Docker engine restarted mid-build fails the step (exit 137, EOF):
                if (
                    sh([*compose_cmd(), "build", "postgres", "registry", "airflow-init"], benv, check=False).returncode
                    == 0
                ):
                    break  # the layers built so far are cached, so the next attempt carries on from there
                if attempt == 3:
                    raise SystemExit("docker-compose build failed 3 times")
                log.warning("build failed (attempt %d); retrying in 10 s", attempt)
                time.sleep(10)
        times["build (postgres, registry, airflow images)"] = time.monotonic() - t

        t = time.monotonic()
        sh([*compose_cmd(), "up", "-d", "--no-build"], env)
        states = wait_healthy(env, timeout=600)
        times["up (every service healthy)"] = time.monotonic() - t
        log.info("all healthy: %s", ", ".join(f"{k}={v}" for k, v in states.items()))

        run_flows(env, times)
        ok = True
    finally:
        if args.keep:
            log.info("--keep: the stack stays up (%s down -v to remove it)", " ".join(compose_cmd()))
        else:
            if not ok:
                sh([*compose_cmd(), "ps"], env, check=False)
                sh([*compose_cmd(), "logs", "--tail=60"], env, check=False)
            t = time.monotonic()
            down(env)
            times["down (stack, model containers, volumes)"] = time.monotonic() - t
        times["total"] = time.monotonic() - total
        print(f"\ncompose e2e ({'passed' if ok else 'FAILED'}), project {PROJECT}, phase times:")
        for phase, seconds in times.items():
            print(f"  {phase:<44} {seconds:7.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
