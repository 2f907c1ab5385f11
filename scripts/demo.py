"""The main job on the embedded platform (`make demo` runs it after `make up`):

land a batch of new data -> retrain (DVC + MLflow + gates + promotion) -> deploy the champion
(blue/green behind the load balancer) -> a live prediction through the load balancer -> UI links.

Every step runs as an Airflow DAG through the real scheduler; this script only does what a user does
in the UI (trigger, watch) through the REST API, printing progress as it goes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import urllib.request

from flightdeck import pipeline_config, settings
from flightdeck.airflow_client import AirflowClient
from flightdeck.data import generate, land
from flightdeck.data.store import ObjectStore
from flightdeck.provisioning import airflow_password

log = logging.getLogger("demo")


def run_dag(client: AirflowClient, dag_id: str, conf: dict, timeout: float) -> str:
    start = time.monotonic()
    run_id = client.trigger(dag_id, conf)
    log.info("%s: triggered run %s with conf %s", dag_id, run_id, json.dumps(conf))
    state = client.wait(dag_id, run_id, timeout=timeout, poll=3)  # logs each task as it moves
    log.info("%s: run %s ended %s in %.0f s", dag_id, run_id, state, time.monotonic() - start)
    if state != "success":
        failed = [t for t, s in client.task_states(dag_id, run_id).items() if s == "failed"]
        for task_id in failed:
            log.error("---- log of %s ----\n%s", task_id, client.task_log(dag_id, run_id, task_id)[-3000:])
        raise SystemExit(f"{dag_id} run {run_id} failed at {failed}")
    return run_id


def unpause_and_settle(client: AirflowClient, dag_id: str, timeout: float) -> None:
    """Unpause a scheduled DAG and let the run the scheduler starts for its latest interval finish first:
    otherwise that run, not ours, would take the batch we land and ours would find nothing new."""
    client.wait_for_dag(dag_id)
    client.patch(f"/dags/{dag_id}", {"is_paused": False})
    for _ in range(10):  # the scheduler creates the interval's run within a loop or two
        runs = client.get(f"/dags/{dag_id}/dagRuns", state=["queued", "running"])["dag_runs"]
        if runs:
            for run in runs:
                log.info("%s: waiting for the scheduler's run %s to finish first", dag_id, run["dag_run_id"])
                client.wait(dag_id, run["dag_run_id"], timeout=timeout)
            return
        time.sleep(1)


def http_json(url: str, payload: dict | None = None) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    s = settings.load()
    client = AirflowClient(s.airflow_url, "admin", airflow_password())
    cfg = pipeline_config.load(None)
    unpause_and_settle(client, "retrain", timeout=900)

    key = land.land(cfg, ObjectStore(), "good")
    log.info("landed a new batch of %s data at s3://%s/%s", cfg.name, s.data_bucket, key)

    run_dag(client, "retrain", {}, timeout=900)
    run_dag(client, "deploy", {"model": "champion", "target": "local", "strategy": "blue_green"}, timeout=900)

    version = http_json(f"{s.lb_url}/version")
    log.info("live through the load balancer: %s", json.dumps(version))
    # one fresh row of the same dataset, without its label, as a client would send it
    row = generate.good_batch(cfg, 1).drop(columns=[cfg.target]).iloc[0].to_dict()
    prediction = http_json(f"{s.lb_url}/predict", {"rows": [row]})
    log.info("prediction through the load balancer for one row: %s", json.dumps(prediction))

    print(
        f"\nDone. Open:\n  Airflow UI  {s.airflow_url}  (user admin, password {airflow_password()})\n"
        f"  MLflow UI   {s.mlflow_uri}\n  Model API   {s.lb_url}/version  {s.lb_url}/openapi.json\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
