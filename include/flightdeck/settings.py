"""Where the platform's services live, read from the environment.

Every default is the embedded one-machine platform that `make up` starts; production overrides
the same variables (or, for credentials, the Airflow connection). Nothing here imports Airflow.

This module is the one source of those defaults: `load()` reads them, the CLI applies them to its own
process (`apply_defaults`, so it works from a plain shell), and scripts/env.sh exports them by running
`python -I include/flightdeck/settings.py shell`. Only the standard library is imported here, so that
command runs before the package is installed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parents[2]

# The embedded S3 server's (SeaweedFS) keys: local-only credentials, used only when S3 is on this machine.
LOCAL_S3_ACCESS_KEY = "flightdeck"
LOCAL_S3_SECRET_KEY = "flightdeck-secret"
_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


class Executor(StrEnum):
    """How the embedded platform runs Airflow (FLIGHTDECK_EXECUTOR).

    LOCAL: `airflow standalone`, LocalExecutor, SQLite; MLflow on SQLite.
    CELERY: api-server, scheduler, dag-processor, triggerer and FLIGHTDECK_CELERY_WORKERS Celery workers, on
    Debian's postgresql (Airflow's metadata and MLflow's backend store) and redis-server (the broker)."""

    LOCAL = "local"
    CELERY = "celery"


# Each mode keeps its own state folder: MLflow's store differs (SQLite or Postgres), and S3 data or deployment
# records that name runs of one store must not meet the other.
STATE_FOLDER = {Executor.LOCAL: ".flightdeck", Executor.CELERY: ".flightdeck-celery"}
CELERY_WORKERS_DEFAULT = "2"  # FLIGHTDECK_CELERY_WORKERS


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value else default


def is_local_endpoint(url: str) -> bool:
    """True for an address on this machine (the embedded platform's services)."""
    host = urlparse(url).hostname or ""
    return host.startswith(_LOOPBACK)


def aws_connection_json(key: str, secret: str, endpoint_url: str, region: str) -> str:
    """The Amazon provider's aws_default connection as Airflow JSON, pointing every AWS client at `endpoint_url`."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": key,
            "password": secret,
            "extra": {"endpoint_url": endpoint_url, "region_name": region},
        }
    )


def environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every variable the platform's processes read: its value in `environ` (default os.environ) when set,
    else the embedded platform's default (derived values follow what is set, e.g. the S3 port).

    The local S3 keys are defaults only while S3 is on this machine and no AWS_PROFILE is chosen, so a
    shell aimed at real AWS keeps its own credential chain (profile, SSO, instance role)."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}

    def put(name: str, default: str) -> str:
        out[name] = env.get(name) or default
        return out[name]

    executor = put("FLIGHTDECK_EXECUTOR", Executor.LOCAL.value)
    if executor not in {e.value for e in Executor}:
        raise ValueError(f"FLIGHTDECK_EXECUTOR={executor!r}: choose one of {', '.join(e.value for e in Executor)}")
    state = put("FLIGHTDECK_STATE_DIR", str(REPO_ROOT / STATE_FOLDER[Executor(executor)]))
    # The DVC workspaces: a cache rebuilt from S3 (data/sync.py); each Celery worker gets its own.
    put("FLIGHTDECK_WORKSPACE_DIR", str(Path(state) / "workspace"))
    s3_port = put("FLIGHTDECK_S3_PORT", "8333")
    mlflow_port = put("FLIGHTDECK_MLFLOW_PORT", "5001")
    airflow_port = put("FLIGHTDECK_AIRFLOW_PORT", "8080")
    s3 = put("FLIGHTDECK_S3_ENDPOINT", f"http://127.0.0.1:{s3_port}")
    put("FLIGHTDECK_AIRFLOW_URL", f"http://127.0.0.1:{airflow_port}")
    put("FLIGHTDECK_REGISTRY", "127.0.0.1:5050")
    put("FLIGHTDECK_LB_URL", "http://127.0.0.1:8090")
    put("FLIGHTDECK_DATA_BUCKET", "flightdeck-data")
    put("FLIGHTDECK_MLFLOW_BUCKET", "flightdeck-mlflow")
    put("FLIGHTDECK_LOGS_BUCKET", "flightdeck-logs")
    put("FLIGHTDECK_DEPLOY_BUCKET", "flightdeck-deployments")
    put("FLIGHTDECK_MODEL_NAME", "flightdeck-model")
    region = put("AWS_DEFAULT_REGION", "us-east-1")
    local_keys = is_local_endpoint(s3) and not env.get("AWS_PROFILE")
    key = put("AWS_ACCESS_KEY_ID", LOCAL_S3_ACCESS_KEY if local_keys else "")
    secret = put("AWS_SECRET_ACCESS_KEY", LOCAL_S3_SECRET_KEY if local_keys else "")
    if key and secret:
        # Airflow, tasks, scripts and tests alike: the provider's aws_default goes to this S3 unless set.
        put("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_json(key, secret, s3, region))
    put("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{mlflow_port}")
    # A missing bucket or a down server makes the MLflow client retry for minutes; fail fast, let Airflow retry.
    put("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    put("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    put("FLIGHTDECK_SERVING_API_KEYS_FILE", "")  # off: the model endpoint needs no key (README, serving)
    put("FLIGHTDECK_SERVING_API_KEYS_SECRET_ARN", "")
    if executor == Executor.CELERY:
        put("FLIGHTDECK_POSTGRES_PORT", "5432")
        put("FLIGHTDECK_REDIS_PORT", "6379")
        put("FLIGHTDECK_CELERY_WORKERS", CELERY_WORKERS_DEFAULT)
    return {k: v for k, v in out.items() if v}


def dotenv(path: Path | None = None) -> dict[str, str]:
    """KEY=VALUE lines of the project's .env (what scripts/env.sh sources); quotes stripped, comments skipped."""
    path = path or REPO_ROOT / ".env"
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def apply_defaults() -> None:
    """For entry points started from a plain shell (the CLI): the .env file, then the embedded platform's
    defaults, for every variable the caller has not set, as `source scripts/env.sh` would."""
    for name, value in dotenv().items():
        if not os.environ.get(name):
            os.environ[name] = value
    for name, value in environment().items():
        if not os.environ.get(name):
            os.environ[name] = value


@dataclass(frozen=True)
class Settings:
    """A snapshot of the platform's addresses; build one with `load()`."""

    state_dir: Path
    workspace_dir: Path  # DVC workspaces (scratch: rebuilt from S3 when missing)
    s3_endpoint: str
    aws_region: str
    data_bucket: str
    mlflow_bucket: str
    logs_bucket: str
    deploy_bucket: str
    mlflow_uri: str
    airflow_url: str
    registry: str
    lb_url: str
    model_name: str
    serving_api_keys_file: str = ""  # host file of model-endpoint keys the local target mounts ("" = no auth)
    serving_api_keys_secret_arn: str = ""  # Secrets Manager secret the ECS target injects ("" = no auth)

    @property
    def buckets(self) -> tuple[str, ...]:
        """Every bucket the platform uses: data, MLflow artifacts, logs, deployment records."""
        return (self.data_bucket, self.mlflow_bucket, self.logs_bucket, self.deploy_bucket)


def load() -> Settings:
    """Read the settings now (tests and tasks may change the environment between calls)."""
    e = environment()
    return Settings(
        state_dir=Path(e["FLIGHTDECK_STATE_DIR"]),
        workspace_dir=Path(e["FLIGHTDECK_WORKSPACE_DIR"]),
        s3_endpoint=e["FLIGHTDECK_S3_ENDPOINT"],
        aws_region=e["AWS_DEFAULT_REGION"],
        data_bucket=e["FLIGHTDECK_DATA_BUCKET"],
        mlflow_bucket=e["FLIGHTDECK_MLFLOW_BUCKET"],
        logs_bucket=e["FLIGHTDECK_LOGS_BUCKET"],
        deploy_bucket=e["FLIGHTDECK_DEPLOY_BUCKET"],
        mlflow_uri=e["MLFLOW_TRACKING_URI"],
        airflow_url=e["FLIGHTDECK_AIRFLOW_URL"],
        registry=e["FLIGHTDECK_REGISTRY"],
        lb_url=e["FLIGHTDECK_LB_URL"],
        model_name=e["FLIGHTDECK_MODEL_NAME"],
        serving_api_keys_file=e.get("FLIGHTDECK_SERVING_API_KEYS_FILE", ""),
        serving_api_keys_secret_arn=e.get("FLIGHTDECK_SERVING_API_KEYS_SECRET_ARN", ""),
    )


def serving_client_headers(s: Settings | None = None) -> dict[str, str]:
    """The header that calls the model endpoint when API keys are on (the key file's first key), else none."""
    path = (s or load()).serving_api_keys_file
    if not path:
        return {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.strip().startswith("#"):
            return {"Authorization": f"Bearer {line.strip()}"}
    return {}


def worker_hostname() -> str:
    """The host name Airflow records for a task instance (`[core] hostname_callable`): FLIGHTDECK_WORKER_NAME,
    which each Celery worker of the embedded platform gets (several share this machine), else the FQDN as
    Airflow's default callable gives it."""
    import socket

    return os.environ.get("FLIGHTDECK_WORKER_NAME") or socket.getfqdn()


def git_sha() -> str:
    """The project's commit (FLIGHTDECK_GIT_SHA wins, e.g. inside an image without .git)."""
    if os.environ.get("FLIGHTDECK_GIT_SHA"):
        return os.environ["FLIGHTDECK_GIT_SHA"]
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -I include/flightdeck/settings.py shell`: the environment as `export NAME=value` lines."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["shell"]:
        print("usage: python -I include/flightdeck/settings.py shell", file=sys.stderr)
        return 2
    for name, value in environment().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
