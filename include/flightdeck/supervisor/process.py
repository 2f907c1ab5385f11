"""One supervised process: a typed spec and start / alive / stop, each in its own process group.

Generic (no Flightdeck service is named here): `embedded.py` declares the platform's services with it.
A service starts in a new session (`start_new_session`, as `setsid`), so its pid is its process group id
and `stop` reaches every process it forked (Airflow standalone forks a dozen). The pid file holds the pid
only (the format of the former scripts/platform.sh, so a platform it started still stops).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flightdeck.errors import FlightdeckError

KILL_WAIT_S = 5.0  # seconds `stop` waits for a SIGKILLed group to disappear
EXEC_WAIT_S = 5.0  # seconds `start` waits for a new process's command line to show in /proc
SETTLE_S = 2.0  # seconds the rest of a group gets to exit on SIGTERM once its leader has exited


class SupervisorError(FlightdeckError):
    """A platform service could not be started, checked or stopped; the message says which and why."""


class PortTaken(SupervisorError):
    """A port a service needs is held by a process that is not that service."""

    def __init__(self, port: int, service: str, variable: str) -> None:
        self.port, self.service, self.variable = port, service, variable
        super().__init__(
            f"port {port} is taken (needed by {service}); free it or set {variable} to another port"
            if variable
            else f"port {port} is taken (needed by {service}); free it"
        )


@dataclass(frozen=True)
class Service:
    """How to run one long-lived process of the platform.

    name: short name printed in `up`/`down` lines and used for the pid and log files.
    command: argv, started with stdin from /dev/null and stdout+stderr to `log_file` (truncated at start).
    ports: TCP ports on 127.0.0.1 the service listens on; each must be free before it starts.
    port_variable: the environment variable that moves those ports (named in the port-taken error).
    env: variables added to the caller's environment for this process only.
    cwd: working directory (default: the caller's).
    health: returns True once the service answers (None: no check of its own).
    grace_s: seconds `stop` waits after SIGTERM before SIGKILL.
    stop_signal: what `stop` sends first (SIGTERM; Postgres takes SIGINT, its fast shutdown, as SIGTERM would
        wait for every client to disconnect).
    stop_descendants: `stop` also signals the groups its descendants moved to (outside_groups): Airflow's
        running tasks. Off for the Docker engine, whose containers live on (--live-restore) or are removed.
    match: a substring of /proc/PID/cmdline that proves a pid is this service and not a reused pid
        (default: the program's file name).
    label: the name in messages (default: `name`).
    """

    name: str
    command: Sequence[str]
    pid_file: Path
    log_file: Path
    ports: Sequence[int] = ()
    port_variable: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    health: Callable[[], bool] | None = None
    grace_s: float = 20.0
    stop_signal: int = signal.SIGTERM
    stop_descendants: bool = False
    match: str = ""
    label: str = ""

    @property
    def title(self) -> str:
        """The name in messages: `label`, else `name`."""
        return self.label or self.name

    @property
    def cmdline_token(self) -> str:
        """What /proc/PID/cmdline must contain for a pid to be this service: `match`, else the program's name."""
        return self.match or Path(self.command[0]).name


def port_answers(port: int, host: str = "127.0.0.1", timeout_s: float = 1.0) -> bool:
    """True if something accepts TCP connections on host:port (timeout in seconds)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout_s: float = 5.0) -> bool:
    """True if a GET of `url` answers 2xx (as `curl -sf`; redirects are followed); never raises."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return 200 <= resp.status < 300
    except (OSError, ValueError):  # URLError/HTTPError are OSErrors
        return False


def read_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file`, or None if the file is missing, empty or not a number."""
    try:
        text = pid_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def write_pid(pid_file: Path, pid: int) -> None:
    """Write `pid` to `pid_file` atomically (a reader never sees a half-written file)."""
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = pid_file.with_name(pid_file.name + ".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pid_file)


def pid_is(pid: int, token: str) -> bool:
    """True if `pid` runs, leads its own process group (we started it with setsid) and its command line
    contains `token` (so a pid reused by an unrelated process is not taken for ours)."""
    try:
        os.kill(pid, 0)
        if os.getpgid(pid) != pid:
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (ProcessLookupError, PermissionError, FileNotFoundError):
        return False
    except OSError:
        return False
    return token in cmdline


def running_pid(service: Service) -> int | None:
    """The pid of the running service per its pid file, or None (no file, stale pid, or a reused pid)."""
    pid = read_pid(service.pid_file)
    return pid if pid is not None and pid_is(pid, service.cmdline_token) else None


def check_ports(service: Service) -> None:
    """Raise PortTaken for the first of the service's ports that something already answers on."""
    for port in service.ports:
        if port_answers(port):
            raise PortTaken(port, service.title, service.port_variable)


def start(service: Service, environ: Mapping[str, str] | None = None) -> int:
    """Start the service in a new session (its own process group) and write its pid file; returns the pid.

    The ports are checked first (PortTaken). Raises SupervisorError if the program cannot be executed."""
    check_ports(service)
    service.log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**(os.environ if environ is None else environ), **service.env}
    with open(service.log_file, "wb") as log, open(os.devnull, "rb") as devnull:
        try:
            proc = subprocess.Popen(
                list(service.command),
                stdin=devnull,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=service.cwd,
                start_new_session=True,
            )
        except OSError as e:
            raise SupervisorError(f"{service.title}: could not start {service.command[0]}: {e}") from e
    write_pid(service.pid_file, proc.pid)
    # Popen returns once exec began; /proc/PID/cmdline is empty until the kernel has set up the new program,
    # and a check in that window would take the service for gone.
    deadline = time.monotonic() + EXEC_WAIT_S
    while proc.poll() is None and not pid_is(proc.pid, service.cmdline_token) and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc.pid


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of `pid` from /proc/PID/stat, or None if there is no such process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, ...
    return fields[0], int(fields[2])


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live (not zombie) process."""
    out: dict[int, int] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            data = stat_file.read_text()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()  # state, ppid, ...
        if fields[0] != "Z":
            out[int(stat_file.parent.name)] = int(fields[1])
    return out


def outside_groups(pgid: int) -> set[int]:
    """The process groups, other than `pgid`, of the descendants of group `pgid`'s processes: what a signal to
    the group misses. Airflow's task supervisor moves each task into a group of its own (a Celery worker's,
    the LocalExecutor's), so stopping the component alone would orphan its running tasks."""
    parents = _parents()
    members = {pid for pid in parents if (_stat(pid) or ("Z", -1))[1] == pgid}
    found: set[int] = set()
    frontier = set(members)
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in found | members}
        found |= frontier
    return {g for g in ((_stat(pid) or ("Z", pgid))[1] for pid in found) if g != pgid}


def group_alive(pgid: int) -> bool:
    """True while a process of the process group `pgid` runs. Zombies do not count: an exited service
    re-parented to a PID 1 that reaps late (as on this machine) would otherwise look alive until then."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        stat = _stat(int(stat_file.parent.name))
        if stat is not None and stat[1] == pgid and stat[0] != "Z":
            return True
    return False


def _alive(pid: int) -> bool:
    """True while `pid` runs: not gone and not a zombie (collected first if it is our own exited child)."""
    _reap(pid)
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _reap(pid: int) -> None:
    """Collect `pid` if it is our own exited child (a service started by this process), else nothing."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(service: Service, poll_s: float = 0.5) -> str:
    """SIGTERM (or `service.stop_signal`) the service's process group and the groups of its descendants that
    left it (outside_groups: running tasks); once its leader has exited (or
    `service.grace_s` seconds have passed) the rest of the group gets up to SETTLE_S seconds more, then
    SIGKILL; remove the pid file.

    Waiting on the leader is what the former platform.sh did: Airflow standalone's leader dies on SIGTERM at once
    while a component of its group may take the whole grace, so waiting on every member would make each
    `down` 30 s longer. Returns the line to print: "NAME: stopped", "NAME: not running" or
    "NAME: not running (stale pid file)"."""
    pid = read_pid(service.pid_file)
    if pid is None and not service.pid_file.exists():
        return f"{service.name}: not running"
    if pid is None or not pid_is(pid, service.cmdline_token):
        service.pid_file.unlink(missing_ok=True)
        return f"{service.name}: not running (stale pid file)"
    # found now: once their parents are gone they are re-parented to init
    tasks = outside_groups(pid) if service.stop_descendants else set()
    for pgid in [pid, *tasks]:
        try:
            os.killpg(pgid, service.stop_signal)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + service.grace_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(poll_s)
    settle = min(deadline, time.monotonic() + SETTLE_S)
    while time.monotonic() < settle and group_alive(pid):
        _reap(pid)
        time.sleep(0.1)
    for pgid in [pid, *tasks]:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    kill_deadline = time.monotonic() + KILL_WAIT_S  # SIGKILL is not instant: wait until the groups are gone
    while time.monotonic() < kill_deadline:
        _reap(pid)
        if not any(group_alive(g) for g in [pid, *tasks]):
            break
        time.sleep(0.05)
    service.pid_file.unlink(missing_ok=True)
    return f"{service.name}: stopped"


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 1.0) -> bool:
    """Call `check` every `interval_s` seconds until it returns True (-> True) or `timeout_s` passes (-> False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def log_tail(path: Path, lines: int = 5) -> str:
    """The last `lines` lines of a log file ("" if it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
