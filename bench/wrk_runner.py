"""Timing shared by the serving benchmarks: wrk against one server with its CPU per request, and the
CPU time of an in-process call (the floor)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of `pid` and all its descendants (0.0 once it is gone)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_wrk(url: str, body: Path, seconds: int, pid: int, lua: Path, connections: int = 8) -> dict[str, Any]:
    """One `wrk -t1 -c<connections> --latency` run posting `body` (via the lua script's BODY env).

    Returns rps, p50_ms/p99_ms (NaN if wrk printed none), requests, non_2xx, socket_errors and
    cpu_ms_per_req (server process tree CPU per request, ms).
    """
    cpu0 = tree_cpu(pid)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
        env={**os.environ, "BODY": str(body)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu1 = tree_cpu(pid)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def pct(label: str) -> float:
        found = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not found:
            return float("nan")
        value, unit = found.groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "requests": requests,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
        "cpu_ms_per_req": (cpu1 - cpu0) * 1e3 / max(requests, 1),
    }


def cpu_ms(call: Callable[[], Any], repeat: int = 200) -> float:
    """CPU milliseconds per `call()`: the best of 5 rounds of `repeat` calls after 20 warm-up calls."""
    for _ in range(20):
        call()
    samples = []
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(repeat):
            call()
        samples.append((time.process_time() - t0) / repeat * 1e3)
    return min(samples)
