"""Prove the platform's lifecycle on a throw-away instance: up -> work -> down (nothing left) -> up -> data still there.

Runs a second platform beside the main one (own state folder and ports), so it is safe while `make up` runs:
    .venv/bin/python scripts/lifecycle_check.py [--state /tmp/flightdeck-lifecycle]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PORTS = {
    "FLIGHTDECK_S3_PORT": "8533",
    "FLIGHTDECK_MLFLOW_PORT": "5101",
    "FLIGHTDECK_AIRFLOW_PORT": "8580",
    "FLIGHTDECK_REGISTRY": "127.0.0.1:5150",
    "FLIGHTDECK_LB_URL": "http://127.0.0.1:8590",
}


def platform(cmd: str, env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "flightdeck.supervisor", cmd], env=env, check=True)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state", default="/tmp/flightdeck-lifecycle")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLIGHTDECK_", "MLFLOW_TRACKING_URI", "AIRFLOW"))}
    env.update(PORTS, FLIGHTDECK_STATE_DIR=args.state)
    env.update(  # derived addresses must follow the ports
        FLIGHTDECK_S3_ENDPOINT=f"http://127.0.0.1:{PORTS['FLIGHTDECK_S3_PORT']}",
        FLIGHTDECK_AIRFLOW_URL=f"http://127.0.0.1:{PORTS['FLIGHTDECK_AIRFLOW_PORT']}",
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{PORTS['FLIGHTDECK_MLFLOW_PORT']}",
    )
    os.environ.clear()
    os.environ.update(env)

    from mlflow.tracking import MlflowClient

    from flightdeck import s3 as s3_mod
    from flightdeck import settings
    from flightdeck.airflow_client import AirflowClient
    from flightdeck.platform_check import PROBE_EXPERIMENT
    from flightdeck.provisioning import airflow_password, use_local_aws_default
    from flightdeck.supervisor.embedded import processes_of

    print(f"first up: {platform('up', env):.0f} s")
    s = settings.load()
    client = AirflowClient(s.airflow_url, "admin", airflow_password())
    run_id = client.trigger("platform_check")
    assert client.wait("platform_check", run_id, timeout=300) == "success", client.task_states("platform_check", run_id)
    client.close()

    print(f"down: {platform('down', env):.0f} s")
    time.sleep(2)
    left = processes_of(args.state)
    assert not left, f"processes left after down: {left}"
    print("down left no process of ours")

    try:
        print(f"second up: {platform('up', env):.0f} s")
        client = AirflowClient(s.airflow_url, "admin", airflow_password())
        assert client.run_state("platform_check", run_id) == "success"
        assert "wrote probe object" in client.task_log("platform_check", run_id, "write_probe")
        use_local_aws_default()  # aws_default -> this throw-away platform's S3 (AIRFLOW_* were dropped above)
        s3 = s3_mod.client()
        s3.head_object(Bucket=s.data_bucket, Key=f"platform-check/{run_id}.json")
        mlflow = MlflowClient(s.mlflow_uri)
        exp = mlflow.get_experiment_by_name(PROBE_EXPERIMENT)
        assert len(mlflow.search_runs([exp.experiment_id], f"tags.airflow_run_id = '{run_id}'")) == 1
        print(f"after restart: Airflow run {run_id} success with its log, S3 object and MLflow run present")
    finally:
        platform("down", env)
    assert not processes_of(args.state), "processes left after the final down"
    print("lifecycle check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
