"""The platform's Celery mode (FLIGHTDECK_EXECUTOR=celery): the services it adds and the Airflow it runs.

    Postgres (Debian's postgresql): Airflow's metadata database and MLflow's backend store, one database each
    Redis (Debian's redis-server): the Celery broker, append-only file on, so queued tasks survive a restart
    Airflow as separate components: api-server, scheduler, dag-processor, triggerer and
    FLIGHTDECK_CELERY_WORKERS Celery workers

Every worker gets its own name (FLIGHTDECK_WORKER_NAME, recorded as the task instance's hostname through
`[core] hostname_callable`) and its own scratch root (FLIGHTDECK_WORKSPACE_DIR): no task may read what
another worker wrote on disk, the DVC workspace is a cache rebuilt from S3 (data/sync.py).

The database is local-only: it listens on 127.0.0.1 with `trust` authentication (as the local S3 keys are
local-only credentials). Postgres refuses to run as root, so as root it runs as Debian's `postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from flightdeck.settings import CELERY_WORKERS_DEFAULT
from flightdeck.supervisor.process import Service, SupervisorError, http_ok

DATABASES = ("airflow", "mlflow")  # one role and one database of the same name each
POSTGRES_GRACE_S = 30
REDIS_GRACE_S = 10
WORKER_GRACE_S = 30  # seconds from SIGTERM (to the worker and its running tasks) to SIGKILL
WORKER_CONCURRENCY = 2  # task slots per worker (2 cores: 2 workers x 2 = the LocalExecutor's parallelism 4)
# Stop order: nothing new scheduled, then the workers (their tasks still reach the execution API), the rest,
# and the api-server last.
STOP_ORDER = ("scheduler", "worker", "triggerer", "dag-processor", "api-server")
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def postgres_program(name: str) -> str:
    """A PostgreSQL server program (postgres, initdb) of the newest version Debian installed, else PATH's."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    return found[-1] if found else shutil.which(name) or name


def _as_postgres_user(command: Sequence[str]) -> list[str]:
    """`command` run as Debian's `postgres` user when we are root (the server refuses root), else as is."""
    if os.geteuid() != 0:
        return list(command)
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *command]


def worker_names(env: Mapping[str, str]) -> list[str]:
    """worker-1 .. worker-N for FLIGHTDECK_CELERY_WORKERS=N (N >= 1, else SupervisorError)."""
    raw = env.get("FLIGHTDECK_CELERY_WORKERS", CELERY_WORKERS_DEFAULT)
    if not raw.isdigit() or int(raw) < 1:
        raise SupervisorError(f"FLIGHTDECK_CELERY_WORKERS={raw!r}: give a number of workers, 1 or more")
    return [f"worker-{i}" for i in range(1, int(raw) + 1)]


def database_url(env: Mapping[str, str], database: str) -> str:
    """The SQLAlchemy URL of one of DATABASES on the platform's Postgres, through psycopg2 (in the lock;
    Celery's result backend would pick psycopg 3 for a bare postgresql://)."""
    return f"postgresql+psycopg2://{database}@127.0.0.1:{env['FLIGHTDECK_POSTGRES_PORT']}/{database}"


def broker_url(env: Mapping[str, str]) -> str:
    """The Celery broker: the platform's Redis, database 0."""
    return f"redis://127.0.0.1:{env['FLIGHTDECK_REDIS_PORT']}/0"


def airflow_env(env: Mapping[str, str]) -> dict[str, str]:
    """What the Airflow components add in Celery mode, on top of the standalone's variables."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(env, "airflow"),
        "AIRFLOW__CELERY__BROKER_URL": broker_url(env),
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database_url(env, "airflow"),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        # Airflow's default Celery config + the tasks' heavy modules imported before the pool forks
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "flightdeck.celery_config.CELERY_CONFIG",
        # A task whose worker died (its heartbeats stop) is failed and retried after this many seconds, not 300:
        # on one machine a lost worker is a crash, not a network pause.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        # the worker's name, not the machine's, on each task instance (several workers share this machine)
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "flightdeck.settings.worker_hostname",
    }


def postgres_ready(port: int) -> bool:
    """True once the server accepts a login to its `postgres` database."""
    import psycopg2

    try:
        psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2).close()
    except psycopg2.OperationalError:
        return False
    return True


def init_postgres(data_dir: Path, log_file: Path) -> bool:
    """Create the database cluster in `data_dir` unless it exists (PG_VERSION present); True if created.
    Raises SupervisorError with initdb's output when it fails."""
    if (data_dir / "PG_VERSION").is_file():
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(data_dir, "postgres", "postgres")
    data_dir.chmod(0o700)
    command = [postgres_program("initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
    result = subprocess.run(
        _as_postgres_user([*command, "--locale=C"]), capture_output=True, text=True, cwd="/", check=False
    )
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SupervisorError(f"initdb failed ({log_file}):\n{result.stderr.strip()[-800:]}")
    return True


def ensure_databases(port: int) -> list[str]:
    """Create each of DATABASES (role and database of that name) that is missing; returns the ones created."""
    import psycopg2

    created = []
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=5)
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            for name in DATABASES:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE ROLE "{name}" LOGIN')
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
                    created.append(name)
    finally:
        conn.close()
    return created


def redis_ready(port: int) -> bool:
    """True once Redis answers PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def workers_answering(env: Mapping[str, str], timeout_s: float = 2.0) -> set[str]:
    """The Celery workers that answer a broadcast ping through the broker now: their FLIGHTDECK_WORKER_NAME."""
    from celery import Celery

    app = Celery(broker=broker_url(env))
    try:
        replies = app.control.ping(timeout=timeout_s) or []
    except Exception:  # kombu's connection errors while Redis starts or restarts
        return set()
    finally:
        app.close()
    return {name.split("@", 1)[0] for reply in replies for name in reply}


def services(
    env: Mapping[str, str], airflow: str, airflow_base_env: Mapping[str, str], triggerer_log_port: int
) -> dict[str, Service]:
    """The Celery mode's services by key: postgres, redis, airflow-<component>, airflow-worker-<i>.

    airflow: the `airflow` program; airflow_base_env: the standalone's Airflow variables (embedded.airflow_env),
    which every component keeps; triggerer_log_port: where the triggerer serves its logs."""
    state = Path(env["FLIGHTDECK_STATE_DIR"])
    run, logs = state / "run", state / "logs"
    pg_port = int(env["FLIGHTDECK_POSTGRES_PORT"])
    redis_port = int(env["FLIGHTDECK_REDIS_PORT"])
    api_port = int(env["FLIGHTDECK_AIRFLOW_PORT"])
    common = {**airflow_base_env, **airflow_env(env)}
    out: dict[str, Service] = {
        "postgres": Service(
            name="postgres",
            label="Postgres",
            command=_as_postgres_user(
                [
                    postgres_program("postgres"),
                    "-D",
                    str(state / "postgres"),
                    "-p",
                    str(pg_port),
                    "-h",
                    "127.0.0.1",
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "max_connections=200",
                ]
            ),
            cwd=Path("/"),
            ports=[pg_port],
            port_variable="FLIGHTDECK_POSTGRES_PORT",
            health=lambda: postgres_ready(pg_port),
            pid_file=run / "postgres.pid",
            log_file=logs / "postgres.log",
            grace_s=POSTGRES_GRACE_S,
            stop_signal=signal.SIGINT,  # fast shutdown: SIGTERM's smart shutdown waits for every client
            match=str(state / "postgres"),
        ),
        "redis": Service(
            name="redis",
            label="Redis",
            command=[
                shutil.which("redis-server") or "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(redis_port),
                "--dir",
                str(state / "redis"),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "no",
            ],
            ports=[redis_port],
            port_variable="FLIGHTDECK_REDIS_PORT",
            health=lambda: redis_ready(redis_port),
            pid_file=run / "redis.pid",
            log_file=logs / "redis.log",
            grace_s=REDIS_GRACE_S,
        ),
    }
    for component in AIRFLOW_COMPONENTS:
        ports = {"api-server": [api_port], "triggerer": [triggerer_log_port]}.get(component, [])
        out[f"airflow-{component}"] = Service(
            name=f"airflow {component}",
            command=[airflow, component],
            env=common,
            cwd=state / "airflow",
            ports=ports,
            port_variable="FLIGHTDECK_AIRFLOW_PORT" if ports else "",
            health=(lambda: http_ok(f"{env['FLIGHTDECK_AIRFLOW_URL']}/api/v2/monitor/health"))
            if component == "api-server"
            else None,
            pid_file=run / f"airflow-{component}.pid",
            log_file=logs / f"airflow-{component}.log",
            grace_s=WORKER_GRACE_S,
            stop_descendants=True,  # its tasks run in process groups of their own
            match="airflow api"
            if component == "api-server"
            else f"airflow {component}",  # it renames itself "airflow api_server ..."
        )
    for name in worker_names(env):
        scratch = state / "workers" / name
        out[f"airflow-{name}"] = Service(
            name=f"airflow {name}",
            # --skip-serve-logs: Airflow would fetch a running task's log from http://worker-N:<its own port>,
            # a name that does not resolve here; the log is read from S3 once the task ends.
            command=[
                airflow,
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--without-gossip",
                "--skip-serve-logs",
            ],
            env={
                **common,
                "FLIGHTDECK_WORKER_NAME": name,
                "FLIGHTDECK_WORKSPACE_DIR": str(scratch / "workspace"),
                "TMPDIR": str(scratch / "tmp"),
            },
            cwd=state / "airflow",
            pid_file=run / f"airflow-{name}.pid",
            log_file=logs / f"airflow-{name}.log",
            grace_s=WORKER_GRACE_S,
            stop_descendants=True,  # its tasks run in process groups of their own
            match="celery worker",
        )
    return out


def migrate_airflow_db(airflow: str, env: Mapping[str, str], service_env: Mapping[str, str], log_file: Path) -> None:
    """`airflow db migrate` against Postgres (idempotent). Raises SupervisorError with its tail on failure."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "wb") as log:
        result = subprocess.run(
            [airflow, "db", "migrate"],
            env={**env, **service_env},
            cwd=Path(env["FLIGHTDECK_STATE_DIR"]) / "airflow",
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-10:])
        raise SupervisorError(f"airflow db migrate failed ({log_file}):\n{tail}")
