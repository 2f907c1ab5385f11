"""Retrain DAG wall time vs the same steps as a plain script, the no-op run's wall time, and where
each task's time goes.

Both sides do identical work, side by side in one invocation: each gets a fresh namespace (empty
workspace, own registry name) and the same first batch, so each run pulls nothing, trains the same
rows and promotes v1. Then each runs again with no new data (the short-circuit). The script side is
`python -m flightdeck.retrain run` in a fresh process (what one Airflow task process also pays);
the DAG side is trigger -> final state through the REST API of the running Airflow.

The per-task breakdown sets each DAG task's duration (Airflow's start -> end of the task instance)
and its wait before it (the previous task's end, or the run's start, -> its start) against the work
inside it: the same step's time in the plain script, which runs them all in one process
(`python -m flightdeck.retrain run` prints its per-step timings). Task time minus work is what a
task costs as a task: its process, the DAG file parse, imports, XCom.

    make bench-retrain   (or .venv/bin/python bench/retrain/run.py [--repeat 1] [--out bench/retrain/RESULTS.md])
"""

from __future__ import annotations

import argparse
import json
import os
import platform as py_platform
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from flightdeck import pipeline_config, settings
from flightdeck.airflow_client import AirflowClient
from flightdeck.data import land
from flightdeck.data.store import ObjectStore
from flightdeck.provisioning import airflow_password, use_local_aws_default

ROOT = Path(__file__).resolve().parents[2]


TASKS = ("sync_data", "has_changes", "check_data", "train", "register", "threshold_gate", "champion_gate", "promote")
# the plain script's step names for the DAG's tasks
SCRIPT_STEP = {"sync_data": "sync"}


def _script(dataset: str, ns: str, model: str) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flightdeck.retrain",
            "run",
            "--dataset",
            dataset,
            "--namespace",
            ns,
            "--model-name",
            model,
        ],
        check=True,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    wall = time.perf_counter() - start
    # the provider's structlog also writes to stdout: the script's JSON summary is the last thing printed
    return wall, json.loads(proc.stdout[proc.stdout.rindex('{\n  "outcome"') :])["timings"]


def _task_times(client: AirflowClient, run_id: str) -> dict[str, tuple[float, float]]:
    """task_id -> (wait before it, its duration) in seconds, from the task instances' own times; the wait
    is from the latest end among the tasks that ended before it started (or the run's start)."""
    run = client.get(f"/dags/retrain/dagRuns/{run_id}")
    tis = client.get(f"/dags/retrain/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]
    ends = [datetime.fromisoformat(run["start_date"])]
    ran = sorted(
        (ti for ti in tis if ti.get("start_date") and ti.get("end_date")),
        key=lambda ti: ti["start_date"],
    )
    out: dict[str, tuple[float, float]] = {}
    for ti in ran:
        start, end = datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"])
        before = max(e for e in ends if e <= start) if any(e <= start for e in ends) else start
        out[ti["task_id"]] = ((start - before).total_seconds(), (end - start).total_seconds())
        ends.append(end)
    return out


def _dag(client: AirflowClient, dataset: str, ns: str, model: str) -> tuple[float, float, dict, str]:
    conf = {"dataset": dataset, "namespace": ns, "model_name": model, "force": False}
    start = time.perf_counter()
    run_id = client.trigger("retrain", conf)
    state = client.wait("retrain", run_id, timeout=900, poll=1)
    wall = time.perf_counter() - start
    if state != "success":
        raise SystemExit(f"retrain run {run_id} ended {state}: {client.task_states('retrain', run_id)}")
    run = client.get(f"/dags/retrain/dagRuns/{run_id}")
    started = datetime.fromisoformat(run["start_date"])
    ended = datetime.fromisoformat(run["end_date"])
    return wall, (ended - started).total_seconds(), client.task_states("retrain", run_id), run_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="breast_cancer")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "retrain" / "RESULTS.md")
    args = parser.parse_args()
    use_local_aws_default()
    s = settings.load()
    client = AirflowClient(s.airflow_url, "admin", airflow_password())
    store = ObjectStore()
    rows: dict[str, list[float]] = {
        "script": [],
        "dag": [],
        "dag_run": [],
        "script_noop": [],
        "dag_noop": [],
        "dag_noop_run": [],
    }
    # per task: DAG wait / duration, script step time; full and no-op runs
    tasks: dict[str, dict[str, list[float]]] = {
        kind: {t: [] for t in TASKS} for kind in ("wait", "dag", "work", "noop_wait", "noop_dag", "noop_work")
    }
    for i in range(args.repeat):
        tag = uuid.uuid4().hex[:6]
        sides = {"script": f"bench-s-{tag}", "dag": f"bench-d-{tag}"}
        for ns in sides.values():
            land.land(pipeline_config.load(args.dataset, namespace=ns), store, seq=1)
        # Alternate which side goes first so drift in machine load does not favour one side.
        order = ["script", "dag"] if i % 2 == 0 else ["dag", "script"]
        for side in order:
            ns = sides[side]
            if side == "script":
                wall, timings = _script(args.dataset, ns, f"bench-{ns}")
                rows["script"].append(wall)
                _add(tasks["work"], timings, SCRIPT_STEP)
            else:
                wall, run, states, run_id = _dag(client, args.dataset, ns, f"bench-{ns}")
                if states.get("promote") != "success":
                    raise SystemExit(f"DAG run did not promote: {states}")
                rows["dag"].append(wall)
                rows["dag_run"].append(run)
                _add_dag(tasks["wait"], tasks["dag"], _task_times(client, run_id))
        wall, timings = _script(args.dataset, sides["script"], f"bench-{sides['script']}")
        rows["script_noop"].append(wall)
        _add(tasks["noop_work"], timings, SCRIPT_STEP)
        wall, run, states, run_id = _dag(client, args.dataset, sides["dag"], f"bench-{sides['dag']}")
        if states.get("train") != "skipped":
            raise SystemExit(f"no-op DAG run did not short-circuit: {states}")
        rows["dag_noop"].append(wall)
        rows["dag_noop_run"].append(run)
        _add_dag(tasks["noop_wait"], tasks["noop_dag"], _task_times(client, run_id))
        print({k: round(v[-1], 1) for k, v in rows.items()}, flush=True)

    med = {k: statistics.median(v) for k, v in rows.items()}
    ratio = med["dag"] / med["script"]
    lines = [
        "# Retrain benchmark",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `bench/retrain/run.py --repeat {args.repeat}`"
        f" on {os.cpu_count()} cores ({py_platform.machine()}), dataset `{args.dataset}`, shared local platform",
        "(SeaweedFS S3, MLflow server, Airflow 3 standalone with the PreloadingLocalExecutor). Medians of "
        f"{args.repeat} run(s); both sides do identical work (fresh namespace, same first batch, promote v1).",
        "",
        "| what | seconds |",
        "|---|---|",
        f"| plain script, full retrain (`python -m flightdeck.retrain run`) | {med['script']:.1f} |",
        f"| retrain DAG, full retrain, trigger -> final state | {med['dag']:.1f} |",
        f"| retrain DAG, full retrain, dag run start -> end (Airflow's own times) | {med['dag_run']:.1f} |",
        f"| **overhead ratio DAG / script** | **{ratio:.2f}x** |",
        f"| plain script, no new data (short-circuit) | {med['script_noop']:.1f} |",
        f"| **retrain DAG, no new data (short-circuit), trigger -> final state** | **{med['dag_noop']:.1f}** |",
        f"| retrain DAG, no new data, dag run start -> end | {med['dag_noop_run']:.1f} |",
        "",
        "Raw samples (s): " + "; ".join(f"{k}={[round(x, 1) for x in v]}" for k, v in rows.items()),
        "",
        *_breakdown(tasks),
        "",
        "What a task still costs as a task is the overhead column: a fork of a LocalExecutor worker, the DAG",
        "file's parse, XCom and state updates through the API server. The heavy imports (pandas, scikit-learn,",
        "MLflow, DVC, the S3 hook) happen once, in the scheduler, before it forks its workers",
        "(flightdeck.preloading_executor). The wait column is the scheduler's hand-off between tasks (its idle",
        "loop sleeps 0.25 s). The script's work column pays each import the first time a step needs it, so a",
        "task can take less than its work. The no-op run pays sync (S3 + DVC checkout) and one MLflow lookup,",
        "then marks the remaining 6 tasks skipped.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    client.close()
    return 0


def _add(into: dict[str, list[float]], timings: dict[str, float], rename: dict[str, str]) -> None:
    for task in into:
        if rename.get(task, task) in timings:
            into[task].append(timings[rename.get(task, task)])


def _add_dag(waits: dict[str, list[float]], durations: dict[str, list[float]], times: dict) -> None:
    for task, (wait, duration) in times.items():
        if task in durations:
            waits[task].append(wait)
            durations[task].append(duration)


def _breakdown(tasks: dict[str, dict[str, list[float]]]) -> list[str]:
    """The per-task table: medians in seconds; '-' where the task did not run (skipped)."""

    def med(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = [
        "Per task (medians, seconds): the wait before the task starts, the task instance's duration, and the",
        "work inside it (the same step in the one-process script). Overhead = duration - work.",
        "",
        "| task | full: wait | full: task | full: work | full: overhead | no-op: wait | no-op: task | no-op: work |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sums = [0.0] * 7
    for task in TASKS:
        values = [
            med(tasks["wait"][task]),
            med(tasks["dag"][task]),
            med(tasks["work"][task]),
            None,
            med(tasks["noop_wait"][task]),
            med(tasks["noop_dag"][task]),
            med(tasks["noop_work"][task]),
        ]
        if values[1] is not None and values[2] is not None:
            values[3] = values[1] - values[2]
        sums = [a + (b or 0.0) for a, b in zip(sums, values, strict=True)]
        lines.append(f"| {task} | " + " | ".join(cell(v) for v in values) + " |")
    lines.append("| **sum** | " + " | ".join(f"**{v:.1f}**" for v in sums) + " |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
