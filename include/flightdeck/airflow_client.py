"""A small client of Airflow 3's REST API (/api/v2), used by the e2e tests, the benchmarks and the CLI.

It does what a user does in the UI: trigger a DAG with conf, watch the run, read task states and
task logs, clear a task. Auth is the API's own: POST /auth/token, then a Bearer token.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from flightdeck.errors import FlightdeckError

log = logging.getLogger(__name__)

FINAL_RUN_STATES = frozenset({"success", "failed"})


class AirflowError(FlightdeckError, RuntimeError):
    """The API answered with an error, or a run did not finish in time."""


class AirflowClient:
    """Airflow 3's REST API (/api/v2) with a JWT from /auth/token; every call retried 5 times with backoff.

    Raises AirflowError at construction when the login is refused, and from every call that answers 4xx/5xx.
    """

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        # Airflow's embedded SQLite answers 500 "Database error" while another process holds its write lock
        # (the transaction is rolled back), so every call, writes included, is retried with backoff.
        retry = Retry(
            total=5,
            backoff_factor=1,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=None,
            raise_on_status=False,
        )
        self.session.mount(self.base_url, HTTPAdapter(max_retries=retry))
        resp = self.session.post(
            f"{self.base_url}/auth/token", json={"username": username, "password": password}, timeout=timeout
        )
        if resp.status_code >= 400:
            raise AirflowError(f"Airflow login failed at {self.base_url}: {resp.status_code} {resp.text[:200]}")
        self.session.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"

    def close(self) -> None:
        """Close the HTTP session (its pooled connections)."""
        self.session.close()

    # ---- raw REST --------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.session.request(method, f"{self.base_url}/api/v2{path}", timeout=self.timeout, **kwargs)
        if resp.status_code >= 400:
            raise AirflowError(f"{method} /api/v2{path} -> {resp.status_code}: {resp.text[:500]}")
        return resp.json() if resp.content else None

    def get(self, path: str, **params: Any) -> Any:
        """GET /api/v2`path` with query `params`; the decoded JSON (None for an empty body).

        Raises AirflowError on a 4xx/5xx answer."""
        return self._call("GET", path, params=params or None)

    def post(self, path: str, json: Any) -> Any:  # mirrors requests' keyword
        """POST `json` to /api/v2`path`; the decoded JSON answer. Raises AirflowError on a 4xx/5xx answer."""
        return self._call("POST", path, json=json)

    def patch(self, path: str, json: Any) -> Any:
        """PATCH /api/v2`path` with `json`; the decoded JSON answer. Raises AirflowError on a 4xx/5xx answer."""
        return self._call("PATCH", path, json=json)

    # ---- what users do ---------------------------------------------------------------------------------
    def delete(self, path: str) -> Any:
        """DELETE /api/v2`path`; the decoded JSON answer (None for an empty body). Raises AirflowError on 4xx/5xx."""
        return self._call("DELETE", path)

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        """Wait until the dag processor has parsed the DAG (new files take one refresh interval); the DAG's
        JSON. Polls every 2 s; raises AirflowError, with the import errors, after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.get(f"/dags/{dag_id}")
            except AirflowError:
                if time.monotonic() > deadline:
                    errors = self.get("/importErrors").get("import_errors", [])
                    msg = f"DAG {dag_id} not parsed after {timeout:.0f} s; import errors: {errors}"
                    raise AirflowError(msg) from None
                time.sleep(2)

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """Unpause the DAG and start a manual run with `conf`; return its run id."""
        self.wait_for_dag(dag_id)
        self.patch(f"/dags/{dag_id}", {"is_paused": False})
        run = self.post(f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        log.info("triggered %s run %s", dag_id, run["dag_run_id"])
        return run["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        """The run's state ("queued", "running", "success", "failed"). Raises AirflowError if it is unknown."""
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait(self, dag_id: str, run_id: str, timeout: float = 600, poll: float = 2) -> str:
        """Wait for the run to end, logging each task's state changes; return the final run state.

        Polls every `poll` seconds; raises AirflowError, with the task states, after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str | None] = {}
        while True:
            state = self.run_state(dag_id, run_id)
            for task_id, task_state in self.task_states(dag_id, run_id).items():
                if task_state != seen.get(task_id) and task_state not in (None, "scheduled", "queued"):
                    log.info("  %-16s %s", task_id, task_state)
                seen[task_id] = task_state
            if state in FINAL_RUN_STATES:
                return state
            if time.monotonic() > deadline:
                raise AirflowError(
                    f"{dag_id} run {run_id} still {state} after {timeout:.0f} s; tasks: "
                    f"{self.task_states(dag_id, run_id)}"
                )
            time.sleep(poll)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """task_id -> state; mapped task instances appear as task_id[map_index]."""
        tis = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=1000)["task_instances"]
        return {
            (ti["task_id"] if ti.get("map_index", -1) < 0 else f"{ti['task_id']}[{ti['map_index']}]"): ti["state"]
            for ti in tis
        }

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """The task's log as text (served from S3 remote logging once the local copy is gone).

        Raises AirflowError when the API answers 4xx/5xx (no such try, task or run)."""
        resp = self.session.get(
            f"{self.base_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"map_index": map_index, "full_content": True},
            headers={"Accept": "application/json"},
            timeout=self.timeout,
        )
        if resp.status_code >= 400:
            raise AirflowError(f"log of {dag_id}/{run_id}/{task_id}#{try_number}: {resp.status_code} {resp.text[:300]}")
        return _log_text(resp.json().get("content", []))

    def clear_task(
        self, dag_id: str, run_id: str, task_id: str, only_failed: bool = False, include_downstream: bool = False
    ) -> None:
        """Clear one task of a run (the UI's "Clear"), which puts the run back to queued."""
        self.post(
            f"/dags/{dag_id}/clearTaskInstances",
            {
                "dry_run": False,
                "dag_run_id": run_id,
                "task_ids": [task_id],
                "only_failed": only_failed,
                "reset_dag_runs": True,
                "include_downstream": include_downstream,
            },
        )


def _log_text(content: Any) -> str:
    """Structured log events -> readable lines (the API returns a list of JSON events or raw strings)."""
    if isinstance(content, str):
        return content
    lines = []
    for event in content:
        if isinstance(event, dict):
            text = event.get("event", "")
            extra = {k: v for k, v in event.items() if k not in {"event", "timestamp", "level", "logger"}}
            lines.append(f"{event.get('level', '')} {text} {json.dumps(extra) if extra else ''}".strip())
        else:
            lines.append(str(event))
    return "\n".join(lines)
