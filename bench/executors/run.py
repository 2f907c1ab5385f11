"""Retrain throughput by executor: N retrain runs of different namespaces in parallel, on the embedded
platform with Airflow's LocalExecutor (standalone), then Celery with 1 worker, then Celery with 2 workers,
one after the other in one invocation on this machine.

For each mode the platform is started in that mode (`python -m flightdeck.supervisor up`; the other mode's
platform is stopped first: they share the ports), N fresh lineages (namespace + model name) get the same
first batch, and N retrain runs are triggered at once through the REST API. Printed per mode:

- runs per hour: N / (first trigger -> last run's end) x 3600;
- task start latency: each task instance's queued -> start (`queued_when` -> `start_date`, Airflow's own
  times), median and p95 over every task of every run; and the run's wall time, median.

Task slots: the LocalExecutor 4 (parallelism 4); Celery 2 per worker, so 2 with one worker and 4 with two
(the scheduler's parallelism 4 caps both): the 1-worker row has half the slots, as a one-worker deployment
does. Figures depend on the machine's load: run it on an idle machine and read the ratios, which are measured
side by side.

    make bench-executors   (or .venv/bin/python bench/executors/run.py [--runs 4] [--modes local,celery-1,celery-2])

The platform is left stopped at the end (whatever mode ran last is brought down).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODES = {  # name -> the environment that selects it
    "local": {"FLIGHTDECK_EXECUTOR": "local"},
    "celery-1": {"FLIGHTDECK_EXECUTOR": "celery", "FLIGHTDECK_CELERY_WORKERS": "1"},
    "celery-2": {"FLIGHTDECK_EXECUTOR": "celery", "FLIGHTDECK_CELERY_WORKERS": "2"},
}
# what settings derives from the mode: cleared so each mode's defaults apply
DERIVED = ("FLIGHTDECK_STATE_DIR", "FLIGHTDECK_WORKSPACE_DIR", "FLIGHTDECK_CELERY_WORKERS")


@dataclass
class ModeResult:
    mode: str
    runs: int
    wall_s: float  # first trigger -> last run's end
    run_wall_s: list[float]
    start_latency_s: list[float]  # queued -> start, per task instance
    up_s: float

    @property
    def runs_per_hour(self) -> float:
        return self.runs / self.wall_s * 3600

    @staticmethod
    def p95(values: list[float]) -> float:
        return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def _env(mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DERIVED}
    env.update(MODES[mode])
    return env


def _supervisor(action: str, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "flightdeck.supervisor", action], env=env, cwd=ROOT, check=True)
    return time.monotonic() - t0


def _in_mode(mode: str, runs: int) -> ModeResult:
    """Start the platform in `mode`, run the N parallel retrains in a child process with that environment
    (settings are read from the environment), stop it."""
    env = _env(mode)
    for other in MODES:
        if MODES[other]["FLIGHTDECK_EXECUTOR"] != MODES[mode]["FLIGHTDECK_EXECUTOR"]:
            _supervisor("down", _env(other))
    _supervisor("down", env)  # a previous worker count of the same mode
    up = _supervisor("up", env)
    out = subprocess.run(
        [sys.executable, __file__, "--measure", mode, "--runs", str(runs)],
        env=env,
        cwd=ROOT,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    fields = out.stdout.strip().splitlines()[-1].split("|")
    wall, run_walls, latencies = float(fields[0]), fields[1], fields[2]
    return ModeResult(
        mode=mode,
        runs=runs,
        wall_s=wall,
        run_wall_s=[float(x) for x in run_walls.split(",") if x],
        start_latency_s=[float(x) for x in latencies.split(",") if x],
        up_s=up,
    )


def _measure(runs: int) -> str:
    """In the mode's environment: land, trigger N retrains at once, wait; one line `wall|run walls|latencies`."""
    from flightdeck import pipeline_config, settings
    from flightdeck.airflow_client import AirflowClient
    from flightdeck.data import land
    from flightdeck.data.store import ObjectStore
    from flightdeck.provisioning import airflow_password

    s = settings.load()
    client = AirflowClient(s.airflow_url, "admin", airflow_password())
    client.wait_for_dag("retrain")
    confs = []
    for _ in range(runs):
        ns = f"bench-exec-{uuid.uuid4().hex[:8]}"
        conf = {"dataset": "breast_cancer", "namespace": ns, "model_name": f"bench-exec-{ns}"}
        land.land(pipeline_config.load("breast_cancer", model_name=conf["model_name"], namespace=ns), ObjectStore())
        confs.append(conf)
    t0 = time.monotonic()
    run_ids = [client.trigger("retrain", conf) for conf in confs]
    for run_id in run_ids:
        state = client.wait("retrain", run_id, timeout=1800)
        if state != "success":
            raise SystemExit(f"retrain {run_id} ended {state}: {client.task_states('retrain', run_id)}")
    wall = time.monotonic() - t0
    run_walls, latencies = [], []
    for run_id in run_ids:
        run = client.get(f"/dags/retrain/dagRuns/{run_id}")
        run_walls.append(
            (datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])).total_seconds()
        )
        for ti in client.get(f"/dags/retrain/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]:
            if ti.get("queued_when") and ti.get("start_date"):
                queued, started = datetime.fromisoformat(ti["queued_when"]), datetime.fromisoformat(ti["start_date"])
                latencies.append((started - queued).total_seconds())
    client.close()
    return f"{wall:.2f}|{','.join(f'{w:.2f}' for w in run_walls)}|{','.join(f'{x:.3f}' for x in latencies)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="parallel retrain runs per mode (default 4)")
    parser.add_argument("--modes", default="local,celery-1,celery-2", help="comma-separated, of " + ", ".join(MODES))
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: run inside one mode's environment
    args = parser.parse_args()
    if args.measure:
        print(_measure(args.runs))
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}: choose from {list(MODES)}")
    results = []
    try:
        for mode in modes:
            print(f"== {mode}: platform up, {args.runs} retrain runs in parallel", flush=True)
            results.append(_in_mode(mode, args.runs))
    finally:
        if modes:
            _supervisor("down", _env(modes[-1]))
    load = os.getloadavg()
    print(
        f"\n{args.runs} parallel retrain runs per mode; load average at the end {load[0]:.1f} ({os.cpu_count()} cores)"
    )
    header = ("mode", "runs/hour", "wall s", "run wall s (median)", "task start s (median, p95)", "up s")
    print(f"{header[0]:<10} {header[1]:>9} {header[2]:>7} {header[3]:>20} {header[4]:>27} {header[5]:>6}")
    for r in results:
        print(
            f"{r.mode:<10} {r.runs_per_hour:>9.0f} {r.wall_s:>7.0f} {statistics.median(r.run_wall_s):>20.0f} "
            f"{statistics.median(r.start_latency_s):>13.2f}, {ModeResult.p95(r.start_latency_s):>11.2f} {r.up_s:>6.0f}"
        )
    base = next((r for r in results if r.mode == "local"), None)
    if base:
        for r in results:
            if r is not base:
                print(f"{r.mode}: {r.runs_per_hour / base.runs_per_hour:.2f}x the LocalExecutor's runs per hour")
    return 0


if __name__ == "__main__":
    sys.exit(main())
