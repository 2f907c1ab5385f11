"""Faults on the embedded platform's real services, through the supervisor's own Service objects.

`kill(key)` SIGKILLs a service's whole process group (as a crash would); `restart(key)` starts it again
with the supervisor's own start-up step (EmbeddedPlatform.s3_up / mlflow_up / airflow_up) and waits until
it answers. `kill_airflow_component` SIGKILLs one child of Airflow standalone (e.g. the scheduler), which
standalone does not restart by itself. Every pid is checked to belong to this platform instance (its
FLIGHTDECK_STATE_DIR, embedded.processes_of) before a signal is sent: a shared machine runs several.
The service's log before the fault is kept beside it as NAME.before-fault.log (start truncates the log).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import requests

from flightdeck.supervisor import embedded, process

RESTARTABLE = ("s3", "mlflow", "airflow")
POLL_TIMEOUT_S = 15.0  # LbPoller: a /version answer slower than this counts as a failure
HEALTH_TIMEOUT_S = {"s3": 60.0, "mlflow": 120.0, "airflow": 300.0}


def instance() -> embedded.EmbeddedPlatform:
    """The platform instance of this environment (FLIGHTDECK_STATE_DIR and ports as the tests see them), with
    the virtualenv's bin folder first on PATH as `python -m flightdeck.supervisor` has it (Airflow standalone
    starts its components as `airflow` from PATH)."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if venv_bin not in path.split(os.pathsep):
        path = venv_bin + os.pathsep + path
    return embedded.EmbeddedPlatform({**os.environ, "PATH": path})


def _ours(platform: embedded.EmbeddedPlatform, pid: int) -> None:
    if pid not in embedded.processes_of(platform.state):
        raise AssertionError(f"pid {pid} is not a process of the platform in {platform.state}: not touching it")


def service_pid(key: str) -> int:
    """The running pid (= process group) of service `key` of this instance; AssertionError if it is down."""
    platform = instance()
    pid = process.running_pid(platform.services[key])
    if pid is None:
        raise AssertionError(f"{key} is not running (pid file {platform.services[key].pid_file})")
    _ours(platform, pid)
    return pid


def kill(key: str, timeout_s: float = 10.0) -> int:
    """SIGKILL the process group of service `key` (s3, mlflow, airflow) and wait until it is gone; the pid."""
    pid = service_pid(key)
    os.killpg(pid, signal.SIGKILL)
    if not process.wait_until(lambda: not process.group_alive(pid), timeout_s, interval_s=0.05):
        raise AssertionError(f"{key} (group {pid}) still alive {timeout_s} s after SIGKILL")
    return pid


def kill_with_tasks(key: str, timeout_s: float = 10.0) -> list[int]:
    """SIGKILL service `key`'s process group and the groups its running tasks moved to (as a crashed machine
    would end them all); returns every group killed once all are gone."""
    pid = service_pid(key)
    groups = [pid, *process.outside_groups(pid)]
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if not process.wait_until(lambda: not any(process.group_alive(g) for g in groups), timeout_s, interval_s=0.05):
        raise AssertionError(f"{key}: groups {groups} still alive {timeout_s} s after SIGKILL")
    return groups


def _children(parent: int) -> dict[int, list[str]]:
    """pid -> argv of the live (not zombie) children of `parent`."""
    children: dict[int, list[str]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            data = stat_file.read_text()
            fields = data[data.rindex(")") + 2 :].split()  # state, ppid, ...
            if int(fields[1]) != parent or fields[0] == "Z":
                continue
            argv = (stat_file.parent / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError, IndexError):
            continue
        children[int(stat_file.parent.name)] = [a for a in argv if a]
    return children


def airflow_component(component: str) -> int:
    """The pid of Airflow standalone's `airflow COMPONENT` child (scheduler, dag-processor, api-server,
    triggerer): standalone starts each as `airflow COMPONENT`, a direct child of its process."""
    platform = instance()
    leader = service_pid("airflow")
    children = _children(leader)
    found = [
        pid
        for pid, argv in children.items()
        if any(Path(a).name == "airflow" and argv[i + 1 : i + 2] == [component] for i, a in enumerate(argv))
    ]
    if len(found) != 1:
        raise AssertionError(f"{len(found)} `airflow {component}` children of standalone {leader}: {children}")
    _ours(platform, found[0])
    return found[0]


def kill_airflow_component(component: str, timeout_s: float = 10.0) -> int:
    """SIGKILL Airflow standalone's `component` child (only that process: its forked workers stay, as on
    a crash of the component's main process) and wait until it is gone; returns its pid. In Celery mode the
    component is a service of its own (`airflow-<component>`): its process group is killed."""
    if instance().celery:
        return kill(f"airflow-{component}", timeout_s)
    pid = airflow_component(component)
    os.kill(pid, signal.SIGKILL)

    def gone() -> bool:
        try:
            data = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        return data[data.rindex(")") + 2] == "Z"

    if not process.wait_until(gone, timeout_s, interval_s=0.05):
        raise AssertionError(f"airflow {component} (pid {pid}) still alive after SIGKILL")
    return pid


def _keep_log(service: process.Service) -> None:
    if service.log_file.exists():
        shutil.copyfile(service.log_file, service.log_file.with_name(f"{service.name}.before-fault.log"))


def restart(key: str, timeout_s: float | None = None) -> float:
    """Start service `key` again as `up` does (a still-running group is stopped first, SIGTERM then SIGKILL)
    and wait until it answers (S3: the buckets; MLflow: /health; Airflow: scheduler and dag processor
    healthy). Returns the seconds it took."""
    if key not in RESTARTABLE:
        raise ValueError(f"restart of {key!r}: one of {RESTARTABLE}")
    t0 = time.monotonic()
    platform = instance()
    # In Celery mode "airflow" is its components and workers: those still running are left alone, and
    # `airflow_up` starts whichever are down. Otherwise a still-running group (standalone) is stopped first.
    keep_running = key == "airflow" and platform.celery
    for service in [platform.services[k] for k in (platform.airflow_keys if key == "airflow" else [key])]:
        pid = process.running_pid(service)
        if pid is not None and keep_running:
            continue
        if pid is not None:
            _ours(platform, pid)
        process.stop(service)  # a dead group: removes the stale pid file
        _keep_log(service)
    service = platform.services[platform.airflow_keys[0] if key == "airflow" else key]
    up: dict[str, Callable[[], None]] = {
        "s3": platform.s3_up,
        "mlflow": platform.mlflow_up,
        "airflow": platform.airflow_up,
    }
    up[key]()  # s3_up returns once the buckets answer
    timeout = timeout_s or HEALTH_TIMEOUT_S[key]
    if key == "mlflow":
        assert service.health is not None
        if not process.wait_until(service.health, timeout, interval_s=0.5):
            raise AssertionError(
                f"MLflow not healthy {timeout} s after its restart: {process.log_tail(service.log_file)}"
            )
    elif key == "airflow":
        from flightdeck.provisioning import wait_airflow

        wait_airflow(timeout)
    return time.monotonic() - t0


class LbPoller:
    """Polls /version through the LB in a thread: versions served, and each failure with its time."""

    def __init__(self, lb: str) -> None:
        self.lb = lb
        self.versions: Counter[str] = Counter()
        self.failures: list[tuple[float, str]] = []
        self.requests = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        s = requests.Session()
        while not self._stop.is_set():
            self.requests += 1
            try:
                # an answer slower than this is a failure; 5 s timed out once in ~6000 requests at load 17
                r = s.get(f"{self.lb}/version", timeout=POLL_TIMEOUT_S)
                if r.status_code == 200:
                    self.versions[str(r.json()["model_version"])] += 1
                else:
                    self.failures.append((time.monotonic(), f"/version {r.status_code}"))
            except requests.RequestException as e:
                self.failures.append((time.monotonic(), type(e).__name__))
            time.sleep(0.02)

    def __enter__(self) -> LbPoller:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def serving_version(lb: str) -> str | None:
    """The model version the LB serves on /version, or None when it does not answer 200."""
    try:
        r = requests.get(f"{lb}/version", timeout=5)
        return str(r.json()["model_version"]) if r.status_code == 200 else None
    except (requests.RequestException, ValueError, KeyError):
        return None
