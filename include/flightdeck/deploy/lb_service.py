"""The platform's local load balancer as a service: start, stop and status of its HAProxy.

    python -m flightdeck.deploy.lb_service start|stop|status     (what scripts/lb.sh and compose run)

start brings HAProxy up on settings.lb_url and re-attaches the revisions that were live (their
containers restarted, their slots and weights put back); stop saves each live revision's request
counters (so they carry over the restart), stops HAProxy and then this LB's model containers;
status prints HAProxy's view per revision. The deploy target itself is `flightdeck.deploy.local`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import docker

from flightdeck.deploy.haproxy import HAProxy
from flightdeck.deploy.local import platform_backend, platform_lb

log = logging.getLogger(__name__)


def start() -> int:
    """Start the platform LB (a running one is left alone) and re-attach live revisions.

    Returns the exit code, 0. Raises RuntimeError or subprocess.CalledProcessError when HAProxy
    does not start; a Docker engine that is down is logged, not raised (the LB is useful before it).
    """
    lb = platform_lb()
    proxy = HAProxy(lb)
    if proxy.running():  # `make up` on a running platform: touching live servers would cost requests
        print(f"haproxy already running (pid {proxy.pid()}) on {lb.bind_host}:{lb.bind_port}")
        return 0
    proxy.start()
    try:
        platform_backend().resync()
    except docker.errors.DockerException as e:
        log.warning("could not re-attach running revisions: %s", e)
    return 0


def stop() -> int:
    """Save the live revisions' counters, stop HAProxy (soft), then stop this LB's model containers.

    Returns the exit code, 0. A Docker engine that is down is logged, not raised.
    """
    proxy = HAProxy(platform_lb())
    try:
        backend = platform_backend()
    except docker.errors.DockerException as e:
        backend = None
        log.warning("docker unavailable: %s", e)
    if backend is not None and proxy.running():
        try:
            backend.save_counters()  # what each revision served so far outlives this HAProxy process
        except (OSError, RuntimeError, docker.errors.DockerException) as e:
            log.warning("could not save request counters: %s", e)
    proxy.stop()
    print("haproxy stopped")
    if backend is not None:
        try:
            print(f"model containers stopped: {backend.stop_containers()}")
        except docker.errors.DockerException as e:
            log.warning("could not stop model containers: %s", e)
    return 0


def status() -> int:
    """Print HAProxy's state and, per revision, traffic, health and request counts.

    Returns 0 when HAProxy runs, 1 when it is down.
    """
    lb = platform_lb()
    proxy = HAProxy(lb)
    if not proxy.running():
        print(f"haproxy: down (config {lb.cfg_path})")
        return 1
    print(f"haproxy: up pid {proxy.pid()} on {lb.bind_host}:{lb.bind_port}, runtime API {lb.socket_path}")
    try:
        backend = platform_backend()
        for revision, pct in backend.weights().items():
            h = backend.target_health(revision)
            print(
                f"  {revision}: {pct}% traffic, {h.healthy}/{h.total} healthy {dict(h.states)}, "
                f"requests {h.requests} 5xx {h.errors_5xx} (counted since the revision took its slots)"
            )
    except docker.errors.DockerException as e:
        print(f"  revisions unknown (docker: {e})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m flightdeck.deploy.lb_service start|stop|status`; returns the exit code."""
    parser = argparse.ArgumentParser(prog="lb", description="the platform's local load balancer")
    parser.add_argument("action", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return {"start": start, "stop": stop, "status": status}[args.action]()


if __name__ == "__main__":
    raise SystemExit(main())
