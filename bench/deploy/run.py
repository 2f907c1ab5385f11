"""Deploys under constant load through the load balancer: failed requests and restore times.

Runs on a private HAProxy (127.0.0.1:8440, slots 8441-8448) with real containers, so it never
touches the platform's LB. Load: `wrk` (2 threads, 16 connections, POST /predict) for the counts,
plus a Python sampler (~100 req/s) that timestamps every answer for the timeline. Scenarios:
  blue_green        good v1 -> good v2, all at once
  rollback_never    v2 -> an image that never becomes ready (rolled back before any traffic)
  rollback_breaks   v2 -> v3 that goes bad (/readyz 503, /predict 500) seconds after taking 100%
  canary_rollback   v2 -> v4 failing every /predict, canary 10%
Writes bench/deploy/RESULTS.md.   Usage: make bench-deploy, or .venv/bin/python bench/deploy/run.py [--image IMG]
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import requests

from flightdeck.deploy import controller as ctl
from flightdeck.deploy.backend import RevisionSpec
from flightdeck.deploy.haproxy import HealthCheck, LbConfig
from flightdeck.deploy.local import LocalBackend

HERE = Path(__file__).resolve().parent
PORT = 8440
URL = f"http://127.0.0.1:{PORT}"
CHECK = HealthCheck(interval_ms=1000, unhealthy_threshold=2, healthy_threshold=1)
TH = ctl.Thresholds(healthy_timeout_s=8, poll_s=0.25, min_requests=20, max_5xx_rate=0.05)
LUA = 'wrk.method = "POST"\nwrk.body = \'{"rows": []}\'\nwrk.headers["Content-Type"] = "application/json"\n'


@dataclass
class Wrk:
    requests: int = 0
    non2xx: int = 0
    socket_errors: int = 0
    seconds: float = 0.0
    raw: str = ""

    @property
    def failed(self) -> int:
        return self.non2xx + self.socket_errors


class Sampler:
    """One client, one request at a time, every answer timestamped."""

    def __init__(self) -> None:
        self.events: list[tuple[float, int, str]] = []  # (t, status, version)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        s = requests.Session()
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                r = s.post(f"{URL}/predict", json={"rows": []}, timeout=3)
                version = r.json().get("model_version", "") if r.status_code == 200 else ""
                self.events.append((t, r.status_code, version))
            except requests.RequestException:
                self.events.append((t, 0, ""))
            time.sleep(0.01)

    def start(self) -> None:
        self._t.start()

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


@dataclass
class Result:
    name: str
    ok: bool
    reason: str
    wrk: Wrk
    sampler_total: int
    sampler_failed: int
    retried: int = 0  # requests HAProxy retried on another server after a failure (`wretr`)
    redispatched: int = 0  # of those, sent to a different server (`wredis`)
    extra: dict = field(default_factory=dict)


def start_wrk(seconds: int) -> subprocess.Popen:
    script = Path("/tmp/deploy/bench-post.lua")
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(LUA)
    cmd = ["wrk", "-t2", "-c16", f"-d{seconds}s", "-s", str(script), "--timeout", "5s", f"{URL}/predict"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_wrk(proc: subprocess.Popen) -> Wrk:
    proc.send_signal(signal.SIGINT)  # wrk stops and prints its summary
    out, _ = proc.communicate(timeout=30)
    w = Wrk(raw=out)
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if m:
        w.requests = int(m.group(1))
        w.seconds = float(m.group(2)) * {"ms": 0.001, "s": 1, "m": 60}.get(m.group(3), 1)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    w.non2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    w.socket_errors = sum(int(x) for x in m.groups()) if m else 0
    return w


def run(
    name: str, backend: LocalBackend, spec: RevisionSpec, strategy: str, min_requests: int, **kw: object
) -> tuple[Result, Sampler, list[dict]]:
    sampler = Sampler()
    lb0 = backend.haproxy.backend_stats()
    proc = start_wrk(600)
    sampler.start()
    time.sleep(1.0)
    steps: list[dict] = []
    out = ctl.deploy(
        backend, spec, strategy, TH, on_step=lambda s, e: steps.append({**e, "mono": time.monotonic()}), **kw
    )
    time.sleep(2.0)  # keep loading a little after the deploy ends: late failures count too
    w = stop_wrk(proc)
    while w.requests < min_requests:  # top up with a second wrk window if the deploy was short
        proc = start_wrk(600)
        time.sleep(max(1.0, (min_requests - w.requests) / max(w.requests / max(w.seconds, 1), 1) + 1))
        extra = stop_wrk(proc)
        w.requests += extra.requests
        w.non2xx += extra.non2xx
        w.socket_errors += extra.socket_errors
        w.seconds += extra.seconds
    sampler.stop()
    failed = sum(1 for _, st, _ in sampler.events if st != 200)
    lb1 = backend.haproxy.backend_stats()
    retried = int(lb1["wretr"]) - int(lb0["wretr"])
    redispatched = int(lb1["wredis"]) - int(lb0["wredis"])
    result = Result(name, out.ok, out.reason, w, len(sampler.events), failed, retried, redispatched)
    return result, sampler, steps


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", default="", help="image to deploy (default: build the stub server)")
    parser.add_argument("--min-requests", type=int, default=10_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    image = args.image
    if not image:
        docker.from_env().images.build(path=str(HERE / "stub_server"), tag="fd-stub:bench", rm=True)
        image = "fd-stub:bench"
    state = Path("/tmp/deploy/bench-lb")
    shutil.rmtree(state, ignore_errors=True)
    backend = LocalBackend(
        LbConfig(state_dir=state, bind_port=PORT, port_base=PORT, slots=8, check=CHECK), name="bench"
    )
    backend.haproxy.start()
    for r in list(backend.weights()):
        backend.stop_revision(r)

    def spec(v: str, **env: str) -> RevisionSpec:
        return RevisionSpec(revision=f"v{v}-bench", image=image, model_version=v, env={"MODEL_VERSION": v, **env})

    results: list[Result] = []
    try:
        assert ctl.deploy(backend, spec("1"), "blue_green", TH, bake_s=0.5).ok
        r, _, _ = run("blue_green", backend, spec("2"), "blue_green", args.min_requests, bake_s=5)
        results.append(r)
        r, _, _ = run("rollback_never", backend, spec("3", NEVER_READY="1"), "blue_green", args.min_requests, bake_s=5)
        results.append(r)
        # v5 passes /readyz, takes 100%, then breaks 6 s after its container started
        r, s, steps = run(
            "rollback_breaks", backend, spec("5", BREAK_AFTER_S="6"), "blue_green", args.min_requests, bake_s=15
        )
        bad = [t for t, st, v in s.events if st != 200 or v == "5"]
        exposed = next(e["mono"] for e in steps if e["step"] == "shifting_1")
        first_bad = next((t for t, st, _ in s.events if st != 200), None)
        last_bad = max((t for t, st, _ in s.events if st != 200), default=None)
        r.extra = {
            "exposed_s_before_break": round((first_bad or exposed) - exposed, 2),
            "first_500_to_last_500_s": round(last_bad - first_bad, 2) if first_bad else 0.0,
            "sampler_answers_from_bad": len(bad),
        }
        results.append(r)
        r, s, steps = run(
            "canary_rollback",
            backend,
            spec("4", FAIL_PREDICT="1"),
            "canary",
            args.min_requests,
            canary_percent=10,
            canary_steps=3,
            step_hold_s=10,
        )
        exposed = next(e["mono"] for e in steps if e["step"] == "shifting_1")
        failed_at = next(e["mono"] for e in steps if e["step"] == "failed")
        last_bad = max((t for t, st, _ in s.events if st != 200), default=exposed)
        rps = r.wrk.requests / max(r.wrk.seconds, 0.001)
        window = failed_at - exposed
        r.extra = {
            "detection_window_s": round(window, 2),
            "restored_after_exposure_s": round(last_bad - exposed, 2),
            "bound_10pct_x_window_requests": int(0.10 * rps * window + 0.5),
            "wrk_rps": round(rps),
        }
        results.append(r)
    finally:
        for rev in list(backend.weights()):
            backend.stop_revision(rev)
        backend.haproxy.stop()
    write_results(results, image)
    return 0


def write_results(results: list[Result], image: str) -> None:
    goal = CHECK.interval_ms / 1000 * CHECK.unhealthy_threshold + 5
    lines = [
        "# Deploy benchmark (local target: Docker containers behind HAProxy)",
        "",
        f"Generated by `bench/deploy/run.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"image `{image}`; HAProxy checks every {CHECK.interval_ms} ms, fall {CHECK.unhealthy_threshold}, "
        f"rise {CHECK.healthy_threshold}, passive check on live traffic: {CHECK.error_limit} consecutive 5xx mark a "
        f"server down; watcher polls every {TH.poll_s} s (5xx rate > {TH.max_5xx_rate:.0%} "
        f"over >= {TH.min_requests} answers, or a target down while answering 5xx, or down twice in a row).",
        "Load: wrk 2 threads x 16 connections POST /predict through the LB for the whole scenario, plus a "
        "1-connection sampler timestamping every answer.",
        "LB: requests buffered whole, retried on another server after a connection failure or a 500/502/503/504 "
        "(`retry-on`, `option redispatch`), the previous revision a weight-1 standby while the new one is "
        "watched; health checks on each container's health port (8081), off the serving path.",
        "",
        "| scenario | deploy outcome | wrk requests | wrk failed (non-2xx + socket) | sampler answers | "
        "sampler failed | retried by the LB (redispatched) | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        outcome = "succeeded" if r.ok else f"rolled back ({r.reason[:60]}...)"
        notes = ", ".join(f"{k}={v}" for k, v in r.extra.items())
        lines.append(
            f"| {r.name} | {outcome} | {r.wrk.requests} | {r.wrk.failed} | {r.sampler_total} | "
            f"{r.sampler_failed} | {r.retried} ({r.redispatched}) | {notes} |"
        )
    lines += ["", f"Goal for restore time: health-check interval x unhealthy threshold + 5 s = {goal:.1f} s.", ""]
    for r in results:
        lines += [
            f"<details><summary>wrk output: {r.name}</summary>",
            "",
            "```",
            r.wrk.raw.strip(),
            "```",
            "",
            "</details>",
            "",
        ]
    (HERE / "RESULTS.md").write_text("\n".join(lines))
    print("\n".join(lines[: len(results) + 12]))


if __name__ == "__main__":
    raise SystemExit(main())
