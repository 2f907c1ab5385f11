"""A local HAProxy: config, process lifecycle and its runtime API over a unix socket.

The load balancer has one public frontend and one backend with a fixed set of server slots; slot i
forwards to 127.0.0.1:(port_base + i). Slots start disabled and are assigned to revisions at run
time through the runtime API (state, weight), so the public port never changes and HAProxy never
reloads during a deploy. Active health checks hit /readyz on every enabled slot's health port,
127.0.0.1:(port_base + 100 + i), where the model server answers them off its serving path.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from flightdeck.errors import FlightdeckError

log = logging.getLogger(__name__)

BACKEND = "serving"


class HAProxyError(FlightdeckError, RuntimeError):
    """HAProxy did not start, or its runtime API refused a command or has no such server."""


HEALTH_PORT_OFFSET = 100  # slot i: traffic on port_base + i, health checks on port_base + 100 + i
# Per-server `show stat` counters a revision's request counts are made of (LocalBackend.target_health).
# They are the slot's, from this HAProxy process's start: HAProxy 2.6 cannot reset one server's counters.
COUNTERS: tuple[str, ...] = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "wretr")


@dataclass(frozen=True)
class HealthCheck:
    """HAProxy health-check knobs for every slot: active checks (`inter`, `fall`, `rise`) on /readyz,
    and a passive check on live traffic: `error_limit` consecutive 5xx answers mark a server down at
    once, so a model that passes /readyz but fails /predict stops getting traffic within a few
    requests instead of a polling interval."""

    interval_ms: int = 1000
    unhealthy_threshold: int = 2
    healthy_threshold: int = 2
    error_limit: int = 5


@dataclass(frozen=True)
class S3Relay:
    """A TCP relay in the LB's HAProxy: serving containers on Docker's bridge reach an S3 endpoint that listens on
    this machine's loopback only (the embedded SeaweedFS) at bind_host:bind_port, the bridge's gateway address.

    The model server's inference capture writes through it (serving/capture.py); see `local.s3_relay_for`."""

    bind_host: str  # the Docker bridge network's gateway IP, e.g. 172.17.0.1
    bind_port: int
    target_host: str  # the S3 endpoint's host and port on this machine
    target_port: int

    @property
    def url(self) -> str:
        """The endpoint URL a container uses (AWS_ENDPOINT_URL_S3)."""
        return f"http://{self.bind_host}:{self.bind_port}"


@dataclass(frozen=True)
class LbConfig:
    """Where one load balancer lives: its public address, slot ports and state files."""

    state_dir: Path
    bind_host: str = "127.0.0.1"
    bind_port: int = 8090
    port_base: int = 8400
    slots: int = 16
    check: HealthCheck = field(default_factory=HealthCheck)
    # The whole request (headers and body) must arrive within this; HAProxy holds it until then
    # (`option http-buffer-request`), so a client trickling its body never holds a model worker.
    request_timeout_s: int = 10
    # HAProxy buffer size: a request body up to this size is buffered whole, and can be retried on
    # another server (L7 retries need the request in the buffer). ~400 rows of 30 features as JSON.
    buffer_bytes: int = 256 * 1024
    # S3 for the containers when it listens on loopback only (None: no relay; on AWS the task role reaches S3)
    s3_relay: S3Relay | None = None

    @property
    def socket_path(self) -> Path:
        """The runtime API's Unix socket, in the state dir."""
        return self.state_dir / "haproxy.sock"

    @property
    def pid_path(self) -> Path:
        """The daemon's pid file, in the state dir."""
        return self.state_dir / "haproxy.pid"

    @property
    def cfg_path(self) -> Path:
        """The rendered haproxy.cfg, in the state dir."""
        return self.state_dir / "haproxy.cfg"

    def slot_port(self, slot: int) -> int:
        """The host port slot `slot`'s serving container is published on (port_base + slot)."""
        return self.port_base + slot

    def health_port(self, slot: int) -> int:
        """Where slot `slot`'s health checks go: the container's SERVING_HEALTH_PORT (8081) is published
        here, so a probe never waits behind scoring on the serving port (serving/health_port.py)."""
        return self.port_base + HEALTH_PORT_OFFSET + slot


def render_config(cfg: LbConfig) -> str:
    """The whole haproxy.cfg.

    Retries with redispatch make a stopping server, and a server answering 5xx, cost no client
    request while another server can answer: the request (buffered whole) is sent once more to a
    different server. A 5xx that HAProxy retried is counted in the failing server's `wretr`, not in
    its `hrsp_5xx` (see `LocalBackend.target_health`, which adds them back for the deploy watcher).
    No per-server `maxconn`: with one, HAProxy queues requests past it, and a queued request goes to
    whichever server frees a slot first, which is the failing one (it answers fastest), so retries
    would land back on it. Health checks go to each slot's health port, where a thread answers
    them however busy the serving port is (serving/health_port.py): a busy server is not marked down.
    Sources: HAProxy 2.6 configuration manual, `retry-on`, `option redispatch`,
    `option http-buffer-request`, `timeout http-request`, `port` (server).
    """
    c = cfg.check
    # sN carries traffic by weight; bN is the same container as a backup server, enabled for a
    # revision that still runs with 0% (blue/green until finalize): HAProxy sends traffic there only
    # if every weighted server is down, so a new revision flapping never leaves the LB with nothing.
    servers = (
        "\n".join(
            f"    server s{i} 127.0.0.1:{cfg.slot_port(i)} port {cfg.health_port(i)} disabled weight 0"
            for i in range(1, cfg.slots + 1)
        )
        + "\n"
        + "\n".join(
            f"    server b{i} 127.0.0.1:{cfg.slot_port(i)} port {cfg.health_port(i)} disabled backup"
            for i in range(1, cfg.slots + 1)
        )
    )
    return f"""# generated by flightdeck.deploy.haproxy; runtime state is set through the stats socket
global
    stats socket {cfg.socket_path} mode 600 level admin
    stats timeout 10s
    pidfile {cfg.pid_path}
    maxconn 4096
    tune.bufsize {cfg.buffer_bytes}
    # without this a second HAProxy (another checkout's platform) silently shares the port via
    # SO_REUSEPORT and the kernel splits clients between two LBs with different weights
    noreuseport

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 5s
    timeout check 2s
    timeout http-request {cfg.request_timeout_s}s
    option http-buffer-request
    retries 3
    option redispatch 1
    # every retry goes to another server (redispatch); a 5xx retried this way stays visible to the
    # deploy watcher through the server's `wretr` counter
    retry-on conn-failure empty-response response-timeout 500 502 503 504
    default-server check inter {c.interval_ms}ms fastinter {c.interval_ms}ms downinter {c.interval_ms}ms \
fall {c.unhealthy_threshold} rise {c.healthy_threshold} observe layer7 error-limit {c.error_limit} on-error mark-down

frontend public
    bind {cfg.bind_host}:{cfg.bind_port}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{servers}
{_relay_section(cfg.s3_relay)}"""


def _relay_section(relay: S3Relay | None) -> str:
    """The `listen` section of the S3 relay: plain TCP (S3's own HTTP, signatures untouched), no checks, no retries."""
    if relay is None:
        return ""
    return f"""
listen s3_relay
    mode tcp
    bind {relay.bind_host}:{relay.bind_port}
    timeout client 60s
    timeout server 60s
    no option http-buffer-request
    server s3 {relay.target_host}:{relay.target_port} no-check
"""


class HAProxy:
    """Start/stop one HAProxy process and talk to its runtime API (HAProxy 2.6 management guide, section 9.3).

    Runtime-API methods raise OSError when the socket does not answer, HAProxyError when a command is refused.
    """

    def __init__(self, cfg: LbConfig) -> None:
        self.cfg = cfg

    # -- lifecycle -------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The daemon's pid from its pid file, or None when there is none or that process is gone."""
        try:
            pid = int(self.cfg.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid

    def running(self) -> bool:
        """True when the daemon is alive and its runtime API answers `show info`."""
        if self.pid() is None:
            return False
        try:
            self.command("show info")
        except OSError:
            return False
        return True

    def start(self, timeout: float = 10.0) -> None:
        """Write the config and start HAProxy as a daemon; a running instance is left alone.

        Raises subprocess.CalledProcessError when the config check or the start fails (a port in use),
        HAProxyError when its runtime API does not answer within `timeout` seconds.
        """
        if self.running():
            log.info("haproxy already running (pid %s) on %s:%s", self.pid(), self.cfg.bind_host, self.cfg.bind_port)
            return
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.cfg_path.write_text(render_config(self.cfg))
        subprocess.run(["haproxy", "-c", "-q", "-f", str(self.cfg.cfg_path)], check=True)
        self.cfg.socket_path.unlink(missing_ok=True)
        subprocess.run(["haproxy", "-D", "-f", str(self.cfg.cfg_path)], check=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running():
                log.info(
                    "haproxy started (pid %s) on %s:%s, socket %s",
                    self.pid(),
                    self.cfg.bind_host,
                    self.cfg.bind_port,
                    self.cfg.socket_path,
                )
                return
            time.sleep(0.1)
        raise HAProxyError(f"haproxy did not come up within {timeout}s ({self.cfg.cfg_path})")

    def stop(self, timeout: float = 10.0) -> None:
        """Soft-stop (SIGUSR1: in-flight requests finish), then SIGTERM after `timeout` seconds."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGUSR1)  # soft stop: finish in-flight requests
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.1)
        if self.pid() is not None:
            os.kill(pid, signal.SIGTERM)
        self.cfg.socket_path.unlink(missing_ok=True)

    # -- runtime API -----------------------------------------------------------------------------
    def command(self, cmd: str) -> str:
        """Send one runtime API command and return its whole answer (5 s socket timeout).

        Raises OSError when the socket is missing or does not answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.cfg.socket_path))
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        out = b"".join(chunks).decode()
        return out

    def _checked(self, cmd: str) -> None:
        out = self.command(cmd).strip()
        # successful set commands answer with an empty line
        if out and not out.startswith("Health check"):
            raise HAProxyError(f"haproxy runtime API refused {cmd!r}: {out}")

    def _in_maint(self, name: str) -> bool:
        for row in self._rows():
            if row.get("svname") == name:
                return "MAINT" in (row.get("status") or "")
        raise HAProxyError(f"haproxy has no server {BACKEND}/{name}")

    def set_backup(self, slot: int, on: bool) -> None:
        """Put slot `slot`'s backup server bN in service (`on`: DOWN until `rise` checks pass) or in maintenance.

        Raises HAProxyError when the runtime API refuses."""
        if on:
            if self._in_maint(f"b{slot}"):  # already serving as backup: leave its health alone
                self._checked(f"set server {BACKEND}/b{slot} state ready")
                self._checked(f"set server {BACKEND}/b{slot} health down")  # usable after `rise` checks
        else:
            self._checked(f"set server {BACKEND}/b{slot} state maint")

    def enable(self, slot: int) -> None:
        """Out of maintenance as DOWN with weight 0: leaving MAINT would otherwise count the server UP
        before any check ran, so it must now pass `rise` real checks first, and gets traffic only
        once a weight is set."""
        if not self._in_maint(f"s{slot}"):
            return  # already enabled (a re-run adopting a live revision): keep its health and weight
        self.set_weight(slot, 0)
        self._checked(f"set server {BACKEND}/s{slot} state ready")
        self._checked(f"set server {BACKEND}/s{slot} health down")  # only after ready: MAINT ignores it

    def disable(self, slot: int) -> None:
        """Put slot `slot` (sN and its backup bN) in maintenance. Raises HAProxyError when refused."""
        self._checked(f"set server {BACKEND}/s{slot} state maint")
        self._checked(f"set server {BACKEND}/b{slot} state maint")

    def drain(self, slot: int) -> None:
        """No new requests to slot `slot`'s server, in-flight ones finish. Raises HAProxyError when refused."""
        self._checked(f"set server {BACKEND}/s{slot} state drain")

    def set_weight(self, slot: int, weight: int) -> None:
        """Set slot `slot`'s server weight (0-256; 0 = no traffic). Raises HAProxyError when refused."""
        self._checked(f"set server {BACKEND}/s{slot} weight {int(weight)}")

    def _rows(self) -> list[dict[str, str]]:
        raw = self.command("show stat").lstrip("# ")
        return [r for r in csv.DictReader(io.StringIO(raw)) if r.get("pxname") == BACKEND]

    def backend_stats(self) -> dict[str, str]:
        """The `show stat` row of the serving backend as a whole (queue, retries, totals)."""
        return next(row for row in self._rows() if row.get("svname") == "BACKEND")

    def instance(self) -> str:
        """This HAProxy process's identity, "PID@START_TIME_SEC" from `show info`.

        It changes on every (re)start, which is when every counter begins again at 0 (HAProxy 2.6
        `show info` has both fields; a field missing reads as ""). Raises OSError when the runtime
        API does not answer.
        """
        info = dict(line.split(": ", 1) for line in self.command("show info").splitlines() if ": " in line)
        return f"{info.get('Pid', '').strip()}@{info.get('Start_time_sec', '').strip()}"

    def counters(self) -> dict[int, dict[str, int]]:
        """Request counters (COUNTERS) by slot: its weighted server sN and its backup twin bN added up.

        Cumulative since this process started (see `instance`), whoever held the slot; raises OSError
        when the runtime API does not answer.
        """
        out: dict[int, dict[str, int]] = {}
        for row in self._rows():
            name = row.get("svname") or ""
            if name[:1] in ("s", "b") and name[1:].isdigit():
                slot = out.setdefault(int(name[1:]), dict.fromkeys(COUNTERS, 0))
                for k in COUNTERS:
                    slot[k] += int(row.get(k) or 0)
        return out

    def stats(self) -> dict[int, dict[str, str]]:
        """`show stat` rows of the serving backend's weighted servers (sN), by slot number."""
        rows: dict[int, dict[str, str]] = {}
        for row in self._rows():
            name = row.get("svname") or ""
            if name.startswith("s") and name[1:].isdigit():
                rows[int(name[1:])] = row
        return rows
