"""Benchmark: the model server with inference capture off vs on, side by side in one run, 1 row per request.

Two gunicorn servers from the same model directory (logistic regression on breast cancer, 30 columns),
1 worker and 1 thread each (so capture's writer thread competes with the request thread for the GIL, the
worst case), the same load (wrk -t1 -c8) posting the same 1-row body. Capture on = CAPTURE_PERCENT=100
writing to the platform's S3 (bucket flightdeck-data, prefix bench-capture/<run id>, removed at the end)
with the default batching (5 s / 1000 records, queue 10000). Rounds alternate off/on so drifting
background load hits both; the median round is reported. Each route is measured: /predict (the
server's own API) and /invocations (MLflow's `dataframe_split`).

    source scripts/env.sh && .venv/bin/python bench/serving_capture/run.py    # ~4 min; writes RESULTS.md, results.json

Cost = 1 - on/off throughput, in percent (goal: at most 10 % at 1 row); also the CPU per request of each
server's process tree (the writer thread's serialization and PUTs included; SeaweedFS's own CPU is not).
After the load, the capturing server's /metrics is read: records written to S3, records dropped (a queue
that overflowed would show here, and would make capture look cheaper than it is). Numbers are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.serving.run import LUA, _require_free, _stop, _wait_ready  # noqa: E402
from bench.wrk_runner import run_wrk, tree_cpu  # noqa: E402
from tests.support.model_examples import save_breast_cancer_model  # noqa: E402

VENV_BIN = Path(sys.executable).parent
PORTS = {"off": 8620, "on": 8621}
BUCKET = "flightdeck-data"


def start(name: str, model_dir: Path, workdir: Path, procs: list, capture_env: dict[str, str]) -> Any:
    """gunicorn with the real config, 1 worker x 1 thread, on PORTS[name]; capture settings from `capture_env`."""
    import subprocess

    env = {
        **os.environ,
        "SERVING_MODEL_DIR": str(model_dir),
        "PORT": str(PORTS[name]),
        "SERVING_HOST": "127.0.0.1",
        "SERVING_WORKERS": "1",
        "SERVING_THREADS": "1",
        "SERVING_ACCESS_LOG": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MODEL_NAME": "bench-capture",
        "MODEL_VERSION": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"prom-{name}"),
        **capture_env,
    }
    log = (workdir / f"{name}.log").open("ab")
    cmd = [
        str(VENV_BIN / "gunicorn"),
        "-c",
        "serving/gunicorn.conf.py",
        "--no-control-socket",
        "serving.app:create_app()",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True)
    procs.append(proc)
    _wait_ready(f"http://127.0.0.1:{PORTS[name]}/readyz", 180, proc)
    return proc


def s3_server_pids() -> list[int]:
    """The embedded S3 server's processes (SeaweedFS `weed`), whose CPU is read, never touched; [] on real S3."""
    import psutil

    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "weed"]


def measured(url: str, body: Path, seconds: int, pid: int, lua: Path, s3_pids: list[int]) -> dict[str, Any]:
    """run_wrk, plus `s3_cpu_ms_per_req`: the CPU the embedded S3 server spent meanwhile, per request (it shares
    this machine's cores with wrk and the server; real S3 would not)."""
    before = sum(tree_cpu(p) for p in s3_pids)
    result = run_wrk(url, body, seconds, pid, lua)
    spent = sum(tree_cpu(p) for p in s3_pids) - before
    result["s3_cpu_ms_per_req"] = 1000 * spent / max(result["requests"], 1)
    return result


def metric(port: int, name: str, label: str = "") -> float:
    """The sum of a counter's samples on the server's /metrics whose labels contain `label`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    pattern = re.compile(rf"^{name}\{{([^}}]*)\}} (\S+)$", re.M)
    return sum(float(v) for labels, v in pattern.findall(text) if label in labels)


def bodies(model: Any, workdir: Path) -> dict[str, Path]:
    """One 1-row body per route: /predict's {"rows": [...]} and /invocations' dataframe_split."""
    frame = model.X.iloc[:1]
    split = json.loads(frame.to_json(orient="split"))
    split.pop("index", None)
    out = {"/predict": workdir / "predict.json", "/invocations": workdir / "invocations.json"}
    out["/predict"].write_text(json.dumps({"rows": json.loads(frame.to_json(orient="records"))}))
    out["/invocations"].write_text(json.dumps({"dataframe_split": split}))
    return out


def run(seconds: int, rounds: int, workdir: Path) -> dict[str, Any]:
    model = save_breast_cancer_model(workdir / "model", "lr")
    lua = workdir / "post.lua"
    lua.write_text(LUA)
    paths = bodies(model, workdir)
    for port in PORTS.values():
        _require_free(port)
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-capture/{run_id}"
    on_env = {"CAPTURE_PERCENT": "100", "CAPTURE_S3_URI": f"s3://{BUCKET}/{prefix}"}
    from flightdeck import settings

    env = settings.environment()
    if settings.is_local_endpoint(env["FLIGHTDECK_S3_ENDPOINT"]):  # the embedded S3; on AWS boto3's own chain
        on_env |= {
            "AWS_ENDPOINT_URL_S3": env["FLIGHTDECK_S3_ENDPOINT"],
            "AWS_ACCESS_KEY_ID": env.get("AWS_ACCESS_KEY_ID", ""),
            "AWS_SECRET_ACCESS_KEY": env.get("AWS_SECRET_ACCESS_KEY", ""),
            "AWS_DEFAULT_REGION": env.get("AWS_DEFAULT_REGION", "us-east-1"),
        }
    procs: list = []
    s3_pids = s3_server_pids()
    result: dict[str, Any] = {"prefix": prefix, "routes": {}}
    try:
        servers = {
            "off": start("off", model.path, workdir, procs, {}),
            "on": start("on", model.path, workdir, procs, on_env),
        }
        for name in ("off", "on"):  # warm-up, not measured: the capture writer's boto3 import and first PUTs
            run_wrk(f"http://127.0.0.1:{PORTS[name]}/predict", paths["/predict"], 3, servers[name].pid, lua)
        time.sleep(6)  # the warm-up's records are written (CAPTURE_FLUSH_SECONDS 5) before measuring
        for route, body in paths.items():
            runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
            for _ in range(rounds):
                for name in ("off", "on"):
                    url = f"http://127.0.0.1:{PORTS[name]}{route}"
                    r = measured(url, body, seconds, servers[name].pid, lua, s3_pids)
                    if r["non_2xx"]:
                        raise SystemExit(f"{name} {route}: {r['non_2xx']} of {r['requests']} answers were not 2xx")
                    runs[name].append(r)
            summary = {
                name: {
                    k: statistics.median(r[k] for r in rs)
                    for k in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req", "s3_cpu_ms_per_req")
                }
                | {"requests": sum(r["requests"] for r in rs), "rounds": rs}
                for name, rs in runs.items()
            }
            summary["cost_pct"] = 100 * (1 - summary["on"]["rps"] / summary["off"]["rps"])
            summary["cpu_cost_pct"] = 100 * (summary["on"]["cpu_ms_per_req"] / summary["off"]["cpu_ms_per_req"] - 1)
            result["routes"][route] = summary
            print(
                f"{route}: off {summary['off']['rps']:.0f} req/s, on {summary['on']['rps']:.0f} req/s, "
                f"cost {summary['cost_pct']:+.1f} % throughput, {summary['cpu_cost_pct']:+.1f} % CPU/req",
                flush=True,
            )
        time.sleep(6)  # past CAPTURE_FLUSH_SECONDS: the last partial batch is written
        port = PORTS["on"]
        result["captured"] = {
            "served": sum(result["routes"][r]["on"]["requests"] for r in paths),  # measured runs (not the warm-up)
            "written": metric(port, "capture_records_total"),
            "dropped_queue_full": metric(port, "capture_dropped_total", 'reason="queue_full"'),
            "dropped_write_failed": metric(port, "capture_dropped_total", 'reason="write_failed"'),
        }
        print(f"capture: {result['captured']}", flush=True)
        result["in_process"] = in_process(model, on_env, prefix)
        print(f"in process, CPU us per record: {result['in_process']}", flush=True)
    finally:
        for proc in procs:
            _stop(proc)
        _remove_prefix(prefix)
        _remove_prefix(prefix + "-inproc")
    return result


def in_process(model: Any, on_env: dict[str, str], prefix: str, records: int = 5000) -> dict[str, float]:
    """Capture's own CPU per record, timed in this process (steadier than wrk on a shared machine): the request
    thread's `offer` (sampling draw, length check, deque append), the writer's serialization, and the S3 PUT
    amortized over batches of 1000, written for real to the run's prefix. CPU microseconds per record."""
    from serving.capture import Capture, CaptureConfig
    from serving.model import load_model_dir

    class Nothing:
        def capture_written(self, n: int) -> None:
            return None

        def capture_dropped(self, reason: str, n: int) -> None:
            return None

    saved = {k: os.environ.get(k) for k in on_env}
    os.environ.update(on_env)  # boto3 reads its endpoint and keys from the environment, as in the server
    try:
        loaded = load_model_dir(model.path)
        frame = model.X.iloc[:1]
        split = json.loads(frame.to_json(orient="split"))
        split.pop("index", None)
        batch = loaded.validator.split(split)
        predictions = loaded.predict(batch)
        config = CaptureConfig(percent=100, s3_uri=f"s3://{BUCKET}/{prefix}-inproc", queue_records=records)
        specs = [(c.name, c.type) for c in loaded.validator.specs]
        capture = Capture(config, Nothing(), "bench-capture", "1", specs)
        t0 = time.process_time()
        for _ in range(records):
            capture.offer("0" * 32, "/predict", batch.columns, batch.matrix, predictions)
        offer = time.process_time() - t0
        items = list(capture.pending)
        capture.pending.clear()
        t0 = time.process_time()
        capture.serialize(items)
        serialize = time.process_time() - t0
        capture._get_client()  # client set-up is once per worker, not per record
        capture._write(items[:1000])  # the first PUT opens the connection
        t0 = time.process_time()
        for i in range(0, records, 1000):
            capture._write(items[i : i + 1000])
        write = time.process_time() - t0 - serialize  # _write serializes too
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {
        "offer_us": offer / records * 1e6,
        "serialize_us": serialize / records * 1e6,
        "put_us": max(write, 0.0) / records * 1e6,
    }


def _remove_prefix(prefix: str) -> None:
    """Delete what the run captured (through flightdeck.s3, the one way to S3)."""
    from flightdeck import s3

    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    cap = results["captured"]
    lines = [
        "# Capture benchmark results",
        "",
        f"Measured {meta['when']} on {meta['machine']} by `{meta['command']}`.",
        f"Load average at start: {meta['loadavg']} (shared machine; off/on alternate, median of the rounds).",
        "",
        "One gunicorn worker, one thread, wrk -t1 -c8, a 1-row body, logistic regression (30 columns).",
        "Capture on: CAPTURE_PERCENT=100 to the platform's S3, default batching (5 s / 1000 records).",
        "S3 CPU: what the embedded SeaweedFS spent per request meanwhile, on the same 2 cores as wrk and the",
        "server (not in the server's CPU column; real S3 is elsewhere).",
        "",
        "| route | capture | req/s | p50 ms | p99 ms | CPU ms/req | S3 CPU ms/req | throughput cost | CPU cost |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for route, r in results["routes"].items():
        for name in ("off", "on"):
            s = r[name]
            costs = f"{r['cost_pct']:+.1f} % | {r['cpu_cost_pct']:+.1f} %" if name == "on" else "- | -"
            lines.append(
                f"| {route} | {name} | {s['rps']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} "
                f"| {s['cpu_ms_per_req']:.3f} | {s.get('s3_cpu_ms_per_req', float('nan')):.3f} | {costs} |"
            )
    worst = max(r["cost_pct"] for r in results["routes"].values())
    ip = results["in_process"]
    total = ip["offer_us"] + ip["serialize_us"] + ip["put_us"]
    off_cpu = results["routes"]["/predict"]["off"]["cpu_ms_per_req"] * 1000
    lines += [
        "",
        "Capture's own CPU per record, timed in process (steadier than the servers' figures on a shared machine):",
        f"{ip['offer_us']:.1f} us on the request thread (sampling draw, deque append), "
        f"{ip['serialize_us']:.1f} us serializing in the writer, {ip['put_us']:.1f} us of S3 PUT (batches of 1000): "
        f"{total:.1f} us in all, {100 * total / off_cpu:.1f} % of the {off_cpu:.0f} us a 1-row /predict costs "
        "without capture.",
    ]
    lines += [
        "",
        f"Goal: at most 10 % throughput cost at 1 row. Worst route here: {worst:+.1f} % "
        f"({'met' if worst <= 10 else 'not met'}).",
        "",
        f"The capturing server answered {cap['served']:.0f} requests in the measured runs (and more in a 3 s "
        f"warm-up); its /metrics afterwards: {cap['written']:.0f} records written to S3 (warm-up included), "
        f"{cap['dropped_queue_full']:.0f} dropped (queue full), "
        f"{cap['dropped_write_failed']:.0f} dropped (write failed).",
        "",
        "Raw numbers: bench/serving_capture/results.json",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating off/on rounds per route")
    parser.add_argument("--out", default=str(Path(__file__).parent))
    parser.add_argument("--render", metavar="RESULTS_JSON", help="only re-render RESULTS.md from a results.json")
    args = parser.parse_args()
    if args.render:
        (Path(args.out) / "RESULTS.md").write_text(render(json.loads(Path(args.render).read_text())))
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
        "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "command": "python bench/serving_capture/run.py " + " ".join(sys.argv[1:]),
    }
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        results = {"meta": meta, **run(args.seconds, args.rounds, Path(tmp))}
    text = render(results)
    print(text)
    out = Path(args.out)
    (out / "RESULTS.md").write_text(text)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
