"""The embedded one-machine platform: `python -m flightdeck.supervisor up|down|status|urls`.

    S3 (SeaweedFS `weed mini`) -> MLflow (SQLite + artifacts in S3) -> Docker engine + image registry + base
    image -> Airflow 3 standalone (API server, scheduler, dag processor, triggerer) -> the local deploy
    target's load balancer (HAProxy, through the deploy code's own CLI, LB_MODULE).

With FLIGHTDECK_EXECUTOR=celery (celery_mode.py) Postgres and Redis start after S3, MLflow keeps its runs in
Postgres, and Airflow runs as separate components with Celery workers instead of standalone.

Every service runs in its own process group (process.py), logs to $FLIGHTDECK_STATE_DIR/logs, keeps its pid
file in $FLIGHTDECK_STATE_DIR/run and its data under $FLIGHTDECK_STATE_DIR. `up` twice is safe: a running
service is left alone; a port held by something else is an error naming the port, the service and the
variable that moves it. `down` stops in reverse order, SIGTERM then SIGKILL after each service's grace,
and leaves alone a Docker engine it did not start. Addresses come from settings.environment() (what
scripts/env.sh exports); the offline base image is built by scripts/build-base-image.sh when missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from flightdeck import settings
from flightdeck.errors import FlightdeckError
from flightdeck.settings import Executor
from flightdeck.supervisor import celery_mode
from flightdeck.supervisor.process import (
    Service,
    SupervisorError,
    http_ok,
    log_tail,
    read_pid,
    running_pid,
    start,
    stop,
    wait_until,
)

ROOT = settings.REPO_ROOT
# The LB daemon's CLI (start|stop|status), owned by the deploy code; scripts/lb.sh runs the same module.
LB_MODULE = "flightdeck.deploy.lb_service"
BASE_IMAGE_DEFAULT = "python:3.11-slim"  # the Dockerfile's FROM, built offline under that name
MANAGED_LABEL = "org.flightdeck.target"  # the local deploy target labels its containers with it (deploy/local.py)

# Timeouts and graces, in seconds (the values of the former scripts/platform.sh).
S3_START_TIMEOUT_S = 60
ENGINE_START_TIMEOUT_S = 30
REGISTRY_START_TIMEOUT_S = 20
MLFLOW_HEALTH_TIMEOUT_S = 300
AIRFLOW_HEALTH_TIMEOUT_S = 300
AIRFLOW_GRACE_S = 30
POSTGRES_START_TIMEOUT_S = 60
REDIS_START_TIMEOUT_S = 20
WORKERS_START_TIMEOUT_S = 120
DOCKERD_GRACE_S = 30
DEFAULT_GRACE_S = 20

# weed mini opens many ports (and gRPC on each +10000): they are pinned next to the S3 port so a second
# platform with another S3 port never collides, and they stay clear of Airflow's log servers.
WEED_PORT_OFFSETS = {"s3": 0, "master": 1, "volume": 2, "filer": 3, "webdav": 4, "admin": 5, "debug": 6}
WEED_GRPC_OFFSET = 10000
WEED_GRPC_PORTS = ("s3", "master", "volume", "filer", "admin")  # the ones that listen on +10000
# Airflow's worker and triggerer log servers sit at the defaults (8793/8794) for API port 8080 and move with it.
AIRFLOW_WORKER_LOG_OFFSET = 713
AIRFLOW_TRIGGER_LOG_OFFSET = 714


def say(line: str = "") -> None:
    """Print one progress line now (child processes write to the same terminal)."""
    print(line, flush=True)


def full_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` (default os.environ) completed with settings' defaults for every platform variable unset."""
    env = dict(os.environ if environ is None else environ)
    env.update(settings.environment(env))
    return env


def program(name: str) -> str:
    """The path of `name`: the virtualenv's bin folder first (weed, mlflow, airflow), then PATH; `name` if
    neither has it (starting it then fails with a SupervisorError naming it)."""
    venv_bin = str(Path(sys.executable).parent)
    return shutil.which(name, path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")])) or name


def _port(value: str, variable: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SupervisorError(f"{variable}={value!r} is not a port number") from None


def registry_port(env: Mapping[str, str]) -> int:
    """The port of FLIGHTDECK_REGISTRY (host:port)."""
    return _port(env["FLIGHTDECK_REGISTRY"].rpartition(":")[2], "FLIGHTDECK_REGISTRY")


def airflow_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables Airflow standalone runs with, on top of `env` (a full_environment()).

    AIRFLOW__CORE__PARALLELISM and the two dag-processor intervals keep a value the caller set."""
    port = _port(env["FLIGHTDECK_AIRFLOW_PORT"], "FLIGHTDECK_AIRFLOW_PORT")
    state = Path(env["FLIGHTDECK_STATE_DIR"])
    return {
        "AIRFLOW_HOME": str(state / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # LocalExecutor that imports the tasks' heavy modules once, before it forks its workers
        "AIRFLOW__CORE__EXECUTOR": "flightdeck.preloading_executor.PreloadingLocalExecutor",
        # A finished task's successor waits for the scheduler's next loop; an idle loop sleeps this long
        # (default 1 s), once or twice per task hand-off.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": env.get("AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME")
        or "0.25",
        # 2 cores: the default parallelism of 32 forks 32 workers.
        "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM") or "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port + AIRFLOW_WORKER_LOG_OFFSET),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port + AIRFLOW_TRIGGER_LOG_OFFSET),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        # New DAG files show up within seconds instead of the default 5 minutes.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": env.get("AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL") or "15",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": (
            env.get("AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL") or "15"
        ),
        # Central task logs: remote logging to the S3 server, read back by the UI and the REST API.
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{env['FLIGHTDECK_LOGS_BUCKET']}/airflow",
        "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": "aws_default",
        # Connections from the environment (no secrets in the metadata DB or the repo); AIRFLOW_CONN_AWS_DEFAULT
        # comes from settings.environment().
        "AIRFLOW_CONN_MLFLOW_DEFAULT": "http://" + env["MLFLOW_TRACKING_URI"].removeprefix("http://"),
    }


def registry_config(env: Mapping[str, str]) -> str:
    """The local registry's config.yml (Debian docker-registry): data under the state folder, deletes on."""
    state = Path(env["FLIGHTDECK_STATE_DIR"])
    return (
        "version: 0.1\n"
        "log: {level: warn}\n"
        "storage:\n"
        f"  filesystem: {{rootdirectory: {state}/registry/data}}\n"
        "  delete: {enabled: true}\n"
        f'http: {{addr: "{env["FLIGHTDECK_REGISTRY"]}"}}\n'
    )


def mlflow_backend_store(env: Mapping[str, str]) -> str:
    """MLflow's backend store: SQLite in the state folder, or the `mlflow` database in Celery mode."""
    if env.get("FLIGHTDECK_EXECUTOR") == Executor.CELERY:
        return celery_mode.database_url(env, "mlflow")
    return f"sqlite:///{Path(env['FLIGHTDECK_STATE_DIR']) / 'mlflow' / 'mlflow.db'}"


def airflow_keys(env: Mapping[str, str]) -> list[str]:
    """The keys of services() that are Airflow: standalone, or the Celery mode's components and workers."""
    if env.get("FLIGHTDECK_EXECUTOR") != Executor.CELERY:
        return ["airflow"]
    return [f"airflow-{c}" for c in celery_mode.AIRFLOW_COMPONENTS] + [
        f"airflow-{w}" for w in celery_mode.worker_names(env)
    ]


def services(env: Mapping[str, str]) -> dict[str, Service]:
    """The platform's long-lived processes, by key, for `env`: s3, mlflow, dockerd, registry and airflow
    (standalone), or in Celery mode postgres, redis and celery_mode.services()'s Airflow components instead."""
    state = Path(env["FLIGHTDECK_STATE_DIR"])
    run, logs = state / "run", state / "logs"
    s3 = _port(env["FLIGHTDECK_S3_PORT"], "FLIGHTDECK_S3_PORT")
    weed = {name: s3 + offset for name, offset in WEED_PORT_OFFSETS.items()}
    mlflow = _port(env["FLIGHTDECK_MLFLOW_PORT"], "FLIGHTDECK_MLFLOW_PORT")
    airflow = _port(env["FLIGHTDECK_AIRFLOW_PORT"], "FLIGHTDECK_AIRFLOW_PORT")
    registry_cfg = state / "registry" / "config.yml"
    out = {
        "s3": Service(
            name="s3",
            label="S3 (SeaweedFS)",
            command=[
                program("weed"),
                "mini",
                f"-dir={state / 's3'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                *(f"-{name}.port={port}" for name, port in weed.items()),
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ],
            ports=[p for n, p in weed.items() if n != "debug"] + [weed[n] + WEED_GRPC_OFFSET for n in WEED_GRPC_PORTS],
            port_variable="FLIGHTDECK_S3_PORT",
            pid_file=run / "s3.pid",
            log_file=logs / "s3.log",
            grace_s=DEFAULT_GRACE_S,
        ),
        "mlflow": Service(
            name="mlflow",
            label="MLflow",
            command=[
                program("mlflow"),
                "server",
                "--backend-store-uri",
                mlflow_backend_store(env),
                "--artifacts-destination",
                f"s3://{env['FLIGHTDECK_MLFLOW_BUCKET']}/artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow),
                "--workers",
                "1",
            ],
            env={"MLFLOW_S3_ENDPOINT_URL": env["FLIGHTDECK_S3_ENDPOINT"]},
            ports=[mlflow],
            port_variable="FLIGHTDECK_MLFLOW_PORT",
            health=lambda: http_ok(f"http://127.0.0.1:{mlflow}/health"),
            pid_file=run / "mlflow.pid",
            log_file=logs / "mlflow.log",
            grace_s=DEFAULT_GRACE_S,
        ),
        "dockerd": Service(
            name="docker engine",
            # containers keep running while the engine restarts (an upgrade, a crash): the LB keeps serving
            command=[program("dockerd"), "--live-restore"],
            pid_file=run / "dockerd.pid",
            log_file=logs / "dockerd.log",
            grace_s=DOCKERD_GRACE_S,
        ),
        "registry": Service(
            name="image registry",
            command=[program("docker-registry"), "serve", str(registry_cfg)],
            ports=[registry_port(env)],
            port_variable="FLIGHTDECK_REGISTRY",
            health=lambda: http_ok(f"http://{env['FLIGHTDECK_REGISTRY']}/v2/"),
            pid_file=run / "registry.pid",
            log_file=logs / "registry.log",
            grace_s=DEFAULT_GRACE_S,
        ),
        "airflow": Service(
            name="airflow",
            label="Airflow API server",
            command=[program("airflow"), "standalone"],
            env=airflow_env(env),
            # standalone writes a few files into its working directory
            cwd=state / "airflow",
            ports=[airflow, airflow + AIRFLOW_WORKER_LOG_OFFSET, airflow + AIRFLOW_TRIGGER_LOG_OFFSET],
            port_variable="FLIGHTDECK_AIRFLOW_PORT",
            health=lambda: http_ok(f"{env['FLIGHTDECK_AIRFLOW_URL']}/api/v2/monitor/health"),
            pid_file=run / "airflow.pid",
            log_file=logs / "airflow.log",
            grace_s=AIRFLOW_GRACE_S,
            stop_descendants=True,  # its tasks run in process groups of their own
        ),
    }
    if env.get("FLIGHTDECK_EXECUTOR") == Executor.CELERY:
        del out["airflow"]
        out.update(
            celery_mode.services(env, program("airflow"), airflow_env(env), airflow + AIRFLOW_TRIGGER_LOG_OFFSET)
        )
    return out


def processes_of(state_dir: str | Path) -> dict[int, str]:
    """Processes (pid -> command line) whose environment has FLIGHTDECK_STATE_DIR=`state_dir`, or whose process
    group is one a pid file of `state_dir`/run names: whatever one platform instance started, by any command
    line (this process excluded; others' processes unreadable). The groups catch processes that renamed
    themselves (Celery workers, Airflow's api-server): setproctitle overwrites the environment /proc shows."""
    marker = f"FLIGHTDECK_STATE_DIR={state_dir}".encode()
    groups = {pid for pid in map(read_pid, Path(state_dir, "run").glob("*.pid")) if pid is not None}
    found: dict[int, str] = {}
    for env_file in Path("/proc").glob("[0-9]*/environ"):
        pid = int(env_file.parent.name)
        try:
            if pid == os.getpid():
                continue
            if marker in env_file.read_bytes().split(b"\0") or os.getpgid(pid) in groups:
                found[pid] = (env_file.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


def _docker_client():  # docker.DockerClient, or None when no engine answers
    import docker

    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except docker.errors.DockerException:
        return None
    return client


def _registry_answers(registry: str) -> bool:
    """True if a Docker registry (API v2) answers 2xx on http://REGISTRY/v2/."""
    try:
        with urllib.request.urlopen(f"http://{registry}/v2/", timeout=5) as resp:
            api = resp.headers.get("Docker-Distribution-Api-Version", "")
            return 200 <= resp.status < 300 and "registry/2.0" in api.lower()
    except (OSError, ValueError):
        return False


def _row(name: str, up: bool, detail: str = "") -> str:
    return f"  {name:<16} {'up  ' if up else 'DOWN'}  {detail}".rstrip()


class EmbeddedPlatform:
    """The platform's actions over the services of one environment (default: os.environ with settings'
    defaults, which the provisioning helpers read too). Each action prints its progress lines."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.env = full_environment(environ)
        self.state = Path(self.env["FLIGHTDECK_STATE_DIR"])
        self.run_dir, self.logs = self.state / "run", self.state / "logs"
        self.airflow_home = self.state / "airflow"
        self.services = services(self.env)
        self.celery = self.env.get("FLIGHTDECK_EXECUTOR") == Executor.CELERY
        self.airflow_keys = airflow_keys(self.env)
        self.base_image = self.env.get("FLIGHTDECK_BASE_IMAGE") or BASE_IMAGE_DEFAULT

    # -- up ---------------------------------------------------------------------------------------------
    def up(self) -> None:
        """Start every service that is not running, wait until MLflow and every Airflow component are
        healthy, print the time taken and the URLs. Raises SupervisorError (PortTaken for a held port)."""
        t0 = time.monotonic()
        if not Path(program("airflow")).is_file():
            raise SupervisorError("no virtualenv with the platform's packages: run 'make install' first")
        for folder in (self.run_dir, self.logs, self.state / "s3", self.state / "mlflow", self.airflow_home):
            folder.mkdir(parents=True, exist_ok=True)
        self.s3_up()
        if self.celery:
            self.postgres_up()
            self.redis_up()
        self.mlflow_up()
        self.engine_up()
        self.registry_up()
        self.base_image_up()
        self.airflow_up()
        if self.lb("start") != 0:
            raise SupervisorError(f"the load balancer did not start (python -m {LB_MODULE} start, see above)")
        mlflow = self.services["mlflow"]
        url = f"http://127.0.0.1:{self.env['FLIGHTDECK_MLFLOW_PORT']}/health"
        if not wait_until(mlflow.health or (lambda: True), MLFLOW_HEALTH_TIMEOUT_S):
            raise SupervisorError(f"mlflow did not become healthy within {MLFLOW_HEALTH_TIMEOUT_S} s ({url})")
        say(f"mlflow: healthy at {url}")
        # the API answers before the scheduler and dag processor are ready: wait for every component
        from flightdeck.provisioning import wait_airflow

        wait_airflow(AIRFLOW_HEALTH_TIMEOUT_S)
        say(f"platform up in {int(time.monotonic() - t0)} s")
        self.urls()

    def _start(self, key: str) -> bool:
        """Start services[key] unless it runs; print "NAME: running" and return False if it did."""
        service = self.services[key]
        if running_pid(service) is not None:
            say(f"{service.name}: running")
            return False
        start(service, self.env)
        return True

    def s3_up(self) -> None:
        """SeaweedFS, then the platform's buckets (created within S3_START_TIMEOUT_S or SupervisorError)."""
        if not self._start("s3"):
            return
        from flightdeck.provisioning import ensure_buckets

        service = self.services["s3"]
        deadline = time.monotonic() + S3_START_TIMEOUT_S
        while True:
            try:
                ensure_buckets()
                break
            except Exception:  # not answering yet (connection refused, 5xx while weed starts)
                pass
            if running_pid(service) is None:
                raise SupervisorError(f"S3 (weed) exited; see {service.log_file}\n{log_tail(service.log_file)}")
            if time.monotonic() >= deadline:
                raise SupervisorError(f"S3 did not come up; see {service.log_file}\n{log_tail(service.log_file)}")
            time.sleep(1)
        say(f"s3: healthy at {self.env['FLIGHTDECK_S3_ENDPOINT']}")

    def postgres_up(self) -> None:
        """Postgres (initdb on first start), then Airflow's and MLflow's databases. Raises SupervisorError
        when it does not accept logins within POSTGRES_START_TIMEOUT_S."""
        if celery_mode.init_postgres(self.state / "postgres", self.logs / "initdb.log"):
            say(f"postgres: database cluster created in {self.state / 'postgres'}")
        service = self.services["postgres"]
        self._start("postgres")
        if not wait_until(service.health or (lambda: True), POSTGRES_START_TIMEOUT_S, interval_s=0.5):
            raise SupervisorError(f"postgres did not start; see {service.log_file}\n{log_tail(service.log_file)}")
        created = celery_mode.ensure_databases(int(self.env["FLIGHTDECK_POSTGRES_PORT"]))
        say(
            f"postgres: healthy on 127.0.0.1:{self.env['FLIGHTDECK_POSTGRES_PORT']}"
            + (f" (created databases: {', '.join(created)})" if created else "")
        )

    def redis_up(self) -> None:
        """Redis, the Celery broker. Raises SupervisorError when it does not answer PING in time."""
        (self.state / "redis").mkdir(parents=True, exist_ok=True)
        service = self.services["redis"]
        self._start("redis")
        if not wait_until(service.health or (lambda: True), REDIS_START_TIMEOUT_S, interval_s=0.5):
            raise SupervisorError(f"redis did not start; see {service.log_file}\n{log_tail(service.log_file)}")
        say(f"redis: healthy on 127.0.0.1:{self.env['FLIGHTDECK_REDIS_PORT']}")

    def mlflow_up(self) -> None:
        """The MLflow server (its health is awaited at the end of `up`, while the rest starts)."""
        self._start("mlflow")

    def engine_up(self) -> None:
        """Use a Docker engine that answers; else start Debian's dockerd (installed by install-system.sh).
        Raises SupervisorError when dockerd cannot be installed or does not answer within
        ENGINE_START_TIMEOUT_S."""
        if _docker_client() is not None:
            say("docker engine: using the running engine")
            return
        if shutil.which("dockerd") is None:
            install = ROOT / "scripts" / "install-system.sh"
            if subprocess.run(["bash", str(install)]).returncode != 0:
                raise SupervisorError(f"no dockerd, and {install} could not install it (see above)")
        say("docker engine: none running; starting dockerd (Debian docker.io) in the background")
        service = self.services["dockerd"]
        start(service, self.env)
        if not wait_until(lambda: _docker_client() is not None, ENGINE_START_TIMEOUT_S, interval_s=0.5):
            raise SupervisorError(f"dockerd did not start; see {service.log_file}\n{log_tail(service.log_file)}")

    def registry_up(self) -> None:
        """Use a registry that answers on FLIGHTDECK_REGISTRY; else start docker-registry with our config.
        Raises PortTaken (a SupervisorError) when another program holds the port, SupervisorError when the
        registry does not answer within REGISTRY_START_TIMEOUT_S."""
        registry = self.env["FLIGHTDECK_REGISTRY"]
        if _registry_answers(registry):
            say(f"registry: answering on {registry}")
            return
        service = self.services["registry"]
        config = self.state / "registry" / "config.yml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(registry_config(self.env))
        start(service, self.env)
        url = f"http://{registry}/v2/"
        if not wait_until(service.health or (lambda: True), REGISTRY_START_TIMEOUT_S):
            raise SupervisorError(f"image registry did not become healthy within {REGISTRY_START_TIMEOUT_S} s ({url})")
        say(f"image registry: healthy at {url}")

    def base_image_up(self) -> None:
        """The Dockerfile's base image, built offline by scripts/build-base-image.sh when the engine lacks it.
        Raises SupervisorError when the build fails (its log: $FLIGHTDECK_STATE_DIR/logs/debootstrap.log)."""
        if self._image_present():
            say(f"base image: {self.base_image} present")
            return
        build = ROOT / "scripts" / "build-base-image.sh"
        result = subprocess.run(["bash", str(build), self.base_image, str(self.state)], env=self.env)
        if result.returncode != 0:
            raise SupervisorError(f"building the base image {self.base_image} failed ({build})")

    def _image_present(self) -> bool:
        import docker

        client = _docker_client()
        if client is None:
            return False
        try:
            client.images.get(self.base_image)
        except docker.errors.DockerException:
            return False
        return True

    def airflow_up(self) -> None:
        """Airflow standalone, in AIRFLOW_HOME, with airflow_env() (health awaited at the end of `up`); in
        Celery mode `airflow db migrate`, then each component and worker, and every worker answering a ping
        through the broker within WORKERS_START_TIMEOUT_S (else SupervisorError)."""
        if not self.celery:
            self._start("airflow")
            return
        if all(running_pid(self.services[k]) is None for k in self.airflow_keys):
            say("airflow: migrating the metadata database (Postgres)")
            scheduler = self.services["airflow-scheduler"]
            celery_mode.migrate_airflow_db(program("airflow"), self.env, scheduler.env, self.logs / "airflow-db.log")
        for key in self.airflow_keys:
            for folder in ("FLIGHTDECK_WORKSPACE_DIR", "TMPDIR"):  # a worker's scratch root
                if folder in self.services[key].env:
                    Path(self.services[key].env[folder]).mkdir(parents=True, exist_ok=True)
            self._start(key)
        names = set(celery_mode.worker_names(self.env))
        if not wait_until(lambda: names <= celery_mode.workers_answering(self.env), WORKERS_START_TIMEOUT_S):
            missing = names - celery_mode.workers_answering(self.env)
            raise SupervisorError(f"celery workers not answering: {', '.join(sorted(missing))} (see {self.logs})")
        say(f"airflow: celery workers answering: {', '.join(sorted(names))}")

    def lb(self, action: str) -> int:
        """Run the LB daemon's CLI (`python -m LB_MODULE start|stop|status`); returns its exit code."""
        return subprocess.run([sys.executable, "-m", LB_MODULE, action], env=self.env).returncode

    # -- down -------------------------------------------------------------------------------------------
    def down(self) -> None:
        """Stop the LB, Airflow, MLflow, the registry, the Docker engine if we started it (our containers
        first), then S3. Each service gets SIGTERM, then SIGKILL after its grace. Data stays."""
        if self.lb("stop") != 0:
            say("load balancer: stop failed (see above); stopping the rest")
        for key in self._airflow_stop_order():
            say(stop(self.services[key]))
        self._stop_strays()
        say(stop(self.services["mlflow"]))
        say(stop(self.services["registry"]))
        dockerd = self.services["dockerd"]
        if dockerd.pid_file.exists():
            client = _docker_client()
            if client is not None:  # containers of ours first, so nothing is left running
                import docker

                for container in client.containers.list(filters={"label": MANAGED_LABEL}):
                    try:
                        container.remove(force=True)
                    except docker.errors.DockerException:
                        pass
            say(stop(dockerd))
        else:
            say("docker engine: not started by us, left running")
        if self.celery:
            say(stop(self.services["redis"]))
            say(stop(self.services["postgres"]))
        say(stop(self.services["s3"]))

    def _airflow_stop_order(self) -> list[str]:
        """Airflow's keys in celery_mode.STOP_ORDER (standalone: its one key)."""
        rank = {part: i for i, part in enumerate(celery_mode.STOP_ORDER)}
        return sorted(self.airflow_keys, key=lambda k: next((r for p, r in rank.items() if p in k), len(rank)))

    def _stop_strays(self) -> None:
        """Stop what a pid file names but no service of this environment is (e.g. worker-3 of an `up` with more
        FLIGHTDECK_CELERY_WORKERS): its process group and the tasks it started."""
        known = {s.pid_file for s in self.services.values()}
        for pid_file in sorted(self.run_dir.glob("*.pid")):
            if pid_file in known or pid_file.parent != self.run_dir:
                continue
            pid = read_pid(pid_file)
            stray = Service(
                name=pid_file.stem,
                command=["?"],
                pid_file=pid_file,
                log_file=self.logs / f"{pid_file.stem}.log",
                grace_s=AIRFLOW_GRACE_S,
                stop_descendants=True,
                match=" ",  # any command line: the pid file is ours, the group it leads is ours
            )
            say(stop(stray) if pid is not None else f"{pid_file.stem}: not running (stale pid file)")
            pid_file.unlink(missing_ok=True)

    # -- status / urls ----------------------------------------------------------------------------------
    def status(self) -> bool:
        """Print one line per service (up/DOWN and its address) and the LB's own status; True if all are up."""
        say(f"Flightdeck platform (state: {self.state})")
        checks: list[tuple[str, Callable[[], bool], str]] = [
            ("s3", self._s3_ready, self.env["FLIGHTDECK_S3_ENDPOINT"]),
            ("mlflow", self.services["mlflow"].health or (lambda: False), self.env["MLFLOW_TRACKING_URI"]),
            (
                "airflow",
                self.services[self.airflow_keys[0]].health or (lambda: False),
                self.env["FLIGHTDECK_AIRFLOW_URL"],
            ),
        ]
        if self.celery:
            pg, rd = self.env["FLIGHTDECK_POSTGRES_PORT"], self.env["FLIGHTDECK_REDIS_PORT"]
            checks += [
                ("postgres", self.services["postgres"].health or (lambda: False), f"127.0.0.1:{pg}"),
                ("redis", self.services["redis"].health or (lambda: False), f"127.0.0.1:{rd}"),
            ]
            checks += [
                (self.services[k].name, lambda k=k: running_pid(self.services[k]) is not None, "process")
                for k in self.airflow_keys
                if "worker" not in k
            ]
            answering = celery_mode.workers_answering(self.env)
            checks += [(f"celery {w}", lambda w=w: w in answering, "") for w in celery_mode.worker_names(self.env)]
        all_up = True
        for name, check, detail in checks:
            ok = check()
            all_up &= ok
            say(_row(name, ok, detail))
        client = _docker_client()
        say(_row("docker engine", client is not None, client.version().get("Version", "") if client else ""))
        registry = self.env["FLIGHTDECK_REGISTRY"]
        registry_ok = http_ok(f"http://{registry}/v2/")
        say(_row("image registry", registry_ok, f"http://{registry}" if registry_ok else ""))
        image_ok = self._image_present()
        say(_row("base image", image_ok, self.base_image if image_ok else ""))
        all_up &= client is not None and registry_ok and image_ok
        return self.lb("status") == 0 and all_up

    def _s3_ready(self) -> bool:
        if running_pid(self.services["s3"]) is None:
            return False
        from flightdeck.provisioning import ensure_buckets

        try:
            ensure_buckets(check_only=True)
        except Exception:  # ProvisioningError (missing buckets) or botocore's (S3 not answering)
            return False
        return True

    def urls(self) -> None:
        """Print the UI links and the local credentials (the Airflow admin password once Airflow made it)."""
        from flightdeck.provisioning import airflow_password

        pw_file = self.airflow_home / "simple_auth_manager_passwords.json.generated"
        try:
            password = airflow_password(self.airflow_home)
        except (OSError, ValueError, KeyError):
            password = f"see {pw_file}"
        e = self.env
        say()
        say(f"  Airflow UI   {e['FLIGHTDECK_AIRFLOW_URL']}   user admin, password: {password}")
        say(f"  MLflow UI    {e['MLFLOW_TRACKING_URI']}")
        key = e.get("AWS_ACCESS_KEY_ID", "")
        say(f"  S3 (Seaweed) {e['FLIGHTDECK_S3_ENDPOINT']}   key {key} (local-only credentials)")
        say(f"  Registry     http://{e['FLIGHTDECK_REGISTRY']}/v2/_catalog")
        say(f"  Model (LB)   {e['FLIGHTDECK_LB_URL']}   (after a deploy)")
        say(f"  State        {self.state}   logs in {self.logs}")


def other_mode(platform: EmbeddedPlatform) -> EmbeddedPlatform | None:
    """The platform of the other executor mode in its default state folder, when `platform` is in its own
    default folder and the other one has pid files (`make down` without FLIGHTDECK_EXECUTOR stops it too)."""
    mode = Executor(platform.env["FLIGHTDECK_EXECUTOR"])
    if platform.state != settings.REPO_ROOT / settings.STATE_FOLDER[mode]:
        return None
    other_mode = Executor.CELERY if mode == Executor.LOCAL else Executor.LOCAL
    if not any((settings.REPO_ROOT / settings.STATE_FOLDER[other_mode] / "run").glob("*.pid")):
        return None
    derived = ("FLIGHTDECK_STATE_DIR", "FLIGHTDECK_WORKSPACE_DIR")
    env = {k: v for k, v in platform.env.items() if k not in derived}
    return EmbeddedPlatform({**env, "FLIGHTDECK_EXECUTOR": other_mode.value})


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m flightdeck.supervisor up|down|status|urls` (default status). Exit 0 on success; 1 when a
    service fails to start or stop, or `status` finds one down; 2 for a wrong action."""
    parser = argparse.ArgumentParser(prog="python -m flightdeck.supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("action", nargs="?", default="status", choices=["up", "down", "status", "urls"])
    args = parser.parse_args(argv)
    # as `source scripts/env.sh` would: .env, then settings' defaults, for whatever the caller left unset
    settings.apply_defaults()
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    try:
        platform = EmbeddedPlatform()  # copies the environment its services get
        # In this process only: the S3 checks go through the Amazon provider's hook, which logs every
        # connection lookup at INFO on stdout (Airflow's structlog filter, read when Airflow is imported).
        os.environ.setdefault("AIRFLOW__LOGGING__NAMESPACE_LEVELS", "airflow.providers.amazon=warning")
        if args.action == "up":
            platform.up()
        elif args.action == "down":
            platform.down()
            other = other_mode(platform)
            if other is not None:
                say(f"the other mode's platform runs ({other.state}): stopping it too")
                other.down()
        elif args.action == "urls":
            platform.urls()
        else:
            return 0 if platform.status() else 1
    except FlightdeckError as e:  # SupervisorError, provisioning's errors
        print(f"{args.action}: {e}", file=sys.stderr)
        return 1
    return 0
