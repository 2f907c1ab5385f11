"""Where the platform's services live, read from the environment.

Every default is the embedded one-machine platform that `make up` starts; production overrides
the same variables (or, for credentials, the Airflow connection). Nothing here imports Airflow.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value else default


@dataclass(frozen=True)
class Settings:
    """A snapshot of the platform's addresses; build one with `load()`."""

    state_dir: Path
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

    @property
    def buckets(self) -> tuple[str, ...]:
        return (self.data_bucket, self.mlflow_bucket, self.logs_bucket, self.deploy_bucket)


def load() -> Settings:
    """Read the settings now (tests and tasks may change the environment between calls)."""
    return Settings(
        state_dir=Path(_env("FLIGHTDECK_STATE_DIR", str(REPO_ROOT / ".flightdeck"))),
        s3_endpoint=_env("FLIGHTDECK_S3_ENDPOINT", "http://127.0.0.1:8333"),
        aws_region=_env("AWS_DEFAULT_REGION", "us-east-1"),
        data_bucket=_env("FLIGHTDECK_DATA_BUCKET", "flightdeck-data"),
        mlflow_bucket=_env("FLIGHTDECK_MLFLOW_BUCKET", "flightdeck-mlflow"),
        logs_bucket=_env("FLIGHTDECK_LOGS_BUCKET", "flightdeck-logs"),
        deploy_bucket=_env("FLIGHTDECK_DEPLOY_BUCKET", "flightdeck-deployments"),
        mlflow_uri=_env("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001"),
        airflow_url=_env("FLIGHTDECK_AIRFLOW_URL", "http://127.0.0.1:8080"),
        registry=_env("FLIGHTDECK_REGISTRY", "127.0.0.1:5050"),
        lb_url=_env("FLIGHTDECK_LB_URL", "http://127.0.0.1:8090"),
        model_name=_env("FLIGHTDECK_MODEL_NAME", "flightdeck-model"),
    )


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
