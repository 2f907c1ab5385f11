"""Benchmark: our Flask/gunicorn server vs `mlflow models serve`, side by side in one run.

Same model directory, same machine, equal workers (1 each, ours with 1 thread), the same load
generator (wrk, -t1 -c8) posting the same MLflow `dataframe_split` payload to `/invocations` on
both. The floors are the estimator's own `predict` and the evaluator our server calls (for
forests serving/fast_trees.py, for logistic regression serving/fast_linear.py, both giving sklearn's
exact answers), both timed in this process. For each server the CPU time of its
whole process tree is divided by the requests it served. Then the serving image: its size and the
time from `docker run` to the first 200 from /readyz.

    .venv/bin/python bench/serving/run.py            # ~6 min; writes bench/serving/RESULTS.md

Numbers are printed, never asserted: this machine is shared and noisy, so every pair is measured
back to back and the run is repeated (--rounds); the median round is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.wrk_runner import cpu_ms, run_wrk  # noqa: E402
from tests.support.model_examples import save_breast_cancer_model  # noqa: E402

VENV_BIN = Path(sys.executable).parent
OURS_PORT, MLFLOW_PORT, IMAGE_PORT = 8110, 8111, 8112
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY"), "r"); wrk.body = f:read("*a"); f:close()
"""


def _wait_ready(url: str, timeout: float, proc: subprocess.Popen | None = None) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # started with start_new_session: its own group
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def _require_free(port: int) -> None:
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise SystemExit(f"port {port} is already in use: stop whatever listens there first")


def start_ours(model_dir: Path, logdir: Path, procs: list[subprocess.Popen]) -> subprocess.Popen:
    env = {
        **os.environ,
        "SERVING_MODEL_DIR": str(model_dir),
        "PORT": str(OURS_PORT),
        "SERVING_HOST": "127.0.0.1",
        "SERVING_WORKERS": "1",
        "SERVING_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [
        str(VENV_BIN / "gunicorn"),
        "-c",
        "serving/gunicorn.conf.py",
        "--no-control-socket",
        "serving.app:create_app()",
    ]
    log = (logdir / "ours.log").open("ab")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True)
    procs.append(proc)
    _wait_ready(f"http://127.0.0.1:{OURS_PORT}/readyz", 180, proc)
    return proc


def start_mlflow(model_dir: Path, logdir: Path, procs: list[subprocess.Popen]) -> subprocess.Popen:
    # mlflow execs `uvicorn` by name: the venv's bin must be on PATH.
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    cmd = [
        str(VENV_BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        str(model_dir),
        "-h",
        "127.0.0.1",
        "-p",
        str(MLFLOW_PORT),
        "-w",
        "1",
        "--env-manager",
        "local",
    ]
    log = (logdir / "mlflow.log").open("ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    procs.append(proc)
    _wait_ready(f"http://127.0.0.1:{MLFLOW_PORT}/ping", 240, proc)
    return proc


def wrk(url: str, body: Path, seconds: int, server_pid: int, lua: Path) -> dict[str, Any]:
    """bench/wrk_runner.run_wrk with 8 connections; any non-2xx answer ends the benchmark."""
    result = run_wrk(url, body, seconds, server_pid, lua)
    if result["non_2xx"]:
        raise SystemExit(f"{url}: {result['non_2xx']} of {result['requests']} responses were not 2xx")
    return result


def floor(model: Any, rows: int, repeat: int = 300) -> dict[str, Any]:
    """In-process predict: the estimator on a DataFrame (as users call it) and on an ndarray, and the
    evaluator our server actually calls (serving/fast_trees.py, serving/fast_linear.py, else the estimator)."""
    from serving.model import load_model_dir

    # Same filter the server installs: an ndarray for a DataFrame-fitted estimator warns each call.
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    frame = model.X.iloc[:rows]
    matrix = frame.to_numpy()
    loaded = load_model_dir(model.path)
    split = json.loads(frame.to_json(orient="split"))
    split.pop("index", None)
    batch = loaded.validator.split(split)  # the matrix in the order the server feeds it
    calls = (
        ("dataframe", lambda: model.estimator.predict(frame)),
        ("ndarray", lambda: model.estimator.predict(matrix)),
        ("server", lambda: loaded.predict_batch(batch)),
    )
    out: dict[str, Any] = {"server_evaluator": loaded.extra.get("evaluator")}
    for name, call in calls:
        out[f"{name}_ms"] = cpu_ms(call, repeat)
    return out


def bodies(model: Any, workdir: Path) -> dict[int, Path]:
    paths = {}
    for rows in (1, 100):
        split = json.loads(model.X.iloc[:rows].to_json(orient="split"))
        split.pop("index", None)
        path = workdir / f"{model.kind}-{rows}.json"
        path.write_text(json.dumps({"dataframe_split": split}))
        paths[rows] = path
    return paths


def check_same_answers(model: Any, body: Path) -> None:
    answers = []
    for port in (OURS_PORT, MLFLOW_PORT):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body.read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            answers.append(json.loads(resp.read())["predictions"])
    if answers[0] != answers[1]:
        raise SystemExit(f"servers disagree on {body.name}: {answers[0][:5]} vs {answers[1][:5]}")


def bench_model(kind: str, workdir: Path, seconds: int, rounds: int) -> dict[str, Any]:
    n_estimators = 100
    model = save_breast_cancer_model(workdir / f"model-{kind}", kind, n_estimators=n_estimators)
    lua = workdir / "post.lua"
    lua.write_text(LUA)
    paths = bodies(model, workdir)
    result: dict[str, Any] = {"floor": {rows: floor(model, rows) for rows in paths}}
    for port in (OURS_PORT, MLFLOW_PORT):
        _require_free(port)
    procs: list[subprocess.Popen] = []
    try:
        ours = start_ours(model.path, workdir, procs)
        theirs = start_mlflow(model.path, workdir, procs)
        for rows, body in paths.items():
            check_same_answers(model, body)
            runs: dict[str, list[dict[str, Any]]] = {"ours": [], "mlflow": []}
            for _ in range(rounds):  # alternate so drifting background load hits both
                runs["ours"].append(wrk(f"http://127.0.0.1:{OURS_PORT}/invocations", body, seconds, ours.pid, lua))
                runs["mlflow"].append(
                    wrk(f"http://127.0.0.1:{MLFLOW_PORT}/invocations", body, seconds, theirs.pid, lua)
                )
            result[rows] = {
                name: {
                    key: statistics.median(r[key] for r in rs) for key in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req")
                }
                | {"non_2xx": sum(r["non_2xx"] for r in rs), "rounds": rs}
                for name, rs in runs.items()
            }
    finally:
        for proc in procs:
            _stop(proc)
    return result


def bench_image(workdir: Path, starts: int) -> dict[str, Any]:
    """Build the serving image with the LR model baked in; size and docker-run-to-ready time."""
    import docker

    model = save_breast_cancer_model(workdir / "image-model", "lr")
    ctx_model = REPO / "build" / "bench-serving-model"
    shutil.rmtree(ctx_model, ignore_errors=True)
    shutil.copytree(model.path, ctx_model)
    client = docker.from_env()
    tag = "flightdeck-serving-bench:latest"
    t0 = time.perf_counter()
    try:
        image, _ = client.images.build(
            path=str(REPO),
            target="serving",
            tag=tag,
            buildargs={"MODEL_DIR": "build/bench-serving-model", "MODEL_NAME": "bench-lr", "MODEL_VERSION": "1"},
            rm=True,
        )
    finally:
        shutil.rmtree(ctx_model, ignore_errors=True)
    build_s = time.perf_counter() - t0
    times = []
    for _ in range(starts):
        t0 = time.perf_counter()
        container = client.containers.run(tag, detach=True, ports={"8080/tcp": ("127.0.0.1", IMAGE_PORT)})
        try:
            _wait_ready(f"http://127.0.0.1:{IMAGE_PORT}/readyz", 120)
            times.append(time.perf_counter() - t0)
        finally:
            container.remove(force=True)
    return {
        "size_mb": image.attrs["Size"] / 1e6,
        "build_s": build_s,
        "start_to_ready_s": times,
        "start_to_ready_median_s": statistics.median(times),
    }


def _goals(results: dict[str, Any]) -> list[str]:
    """The issue's goals, each with the figure measured in this run and whether it is met."""
    models = results["models"]
    lines = ["| goal | measured | met? |", "|---|---|---|"]

    def ratio(kind: str, target: float, label: str) -> None:
        if kind not in models:
            return
        r = models[kind][1]
        rps = r["ours"]["rps"] / r["mlflow"]["rps"]
        cpu = r["mlflow"]["cpu_ms_per_req"] / r["ours"]["cpu_ms_per_req"]
        lines.append(
            f"| {label}, 1 row: >= {target:g}x `mlflow models serve` (req/s) | {rps:.1f}x (CPU ratio {cpu:.1f}x) "
            f"| {'yes' if rps >= target else 'no'} |"
        )

    ratio("lr", 10, "LR")
    ratio("rf", 3, "RF (100 trees)")
    for kind in models:
        ours = models[kind][1]["ours"]["cpu_ms_per_req"]
        fl = models[kind]["floor"][1]
        gap_nd, gap_server = ours - fl["ndarray_ms"], ours - fl["server_ms"]
        # Judged against what the server itself calls: its overhead, not a slower sklearn path it skips.
        lines.append(
            f"| {kind}, 1 row: server CPU/request within 0.5 ms of the in-process evaluator it calls | "
            f"{gap_server:+.3f} ms over the server's evaluator ({gap_nd:+.3f} ms over sklearn predict(ndarray)) | "
            f"{'yes' if gap_server <= 0.5 else 'no'} |"
        )
    img = results.get("image")
    if img:
        lines.append(f"| image <= 400 MB | {img['size_mb']:.0f} MB | {'yes' if img['size_mb'] <= 400 else 'no'} |")
        med = img["start_to_ready_median_s"]
        lines.append(f"| container start to ready <= 5 s | {med:.2f} s median | {'yes' if med <= 5 else 'no'} |")
    return lines


def render(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# Serving benchmark results",
        "",
        f"Measured {meta['when']} on {meta['machine']} by `{meta['command']}`.",
        f"Load average at start: {meta['loadavg']} (the machine is shared with other jobs; pairs are measured",
        "back to back, the median of the rounds is shown).",
        "",
        "## Against the issue's goals (computed from this run's figures)",
        "",
        *_goals(results),
        "",
        "## Figures",
        "",
        "Both servers: 1 worker (ours: gunicorn, 1 thread; MLflow: uvicorn), the same model directory,",
        "wrk -t1 -c8, the same `dataframe_split` body to `/invocations`; full signature validation on in both.",
        "CPU/req = CPU seconds of the server's whole process tree / requests served. Floors, in-process: the",
        "estimator's own `predict` on a DataFrame / on an ndarray (sklearn's cost, what MLflow also pays), and",
        "the evaluator our server actually calls on the validated matrix: for forests the vectorized",
        "serving/fast_trees.py, for logistic regression serving/fast_linear.py (both exactly sklearn's",
        "predictions), otherwise the estimator's `predict` itself.",
        "",
        "`req/s ratio` = our throughput / MLflow's; `CPU ratio` = MLflow's CPU per request / ours (less",
        "sensitive to other jobs on the machine, which also slow wrk down).",
        "",
        "| model | rows | server | req/s | p50 ms | p99 ms | CPU ms/req | req/s ratio | CPU ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, res in results["models"].items():
        for rows in (1, 100):
            r = res[rows]
            ratio = r["ours"]["rps"] / r["mlflow"]["rps"]
            cpu_ratio = r["mlflow"]["cpu_ms_per_req"] / r["ours"]["cpu_ms_per_req"]
            for name in ("ours", "mlflow"):
                s = r[name]
                ratios = f"{ratio:.1f}x | {cpu_ratio:.1f}x" if name == "ours" else "1x | 1x"
                lines.append(
                    f"| {kind} | {rows} | {name} | {s['rps']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} "
                    f"| {s['cpu_ms_per_req']:.3f} | {ratios} |"
                )
            fl = res["floor"][rows]
            lines.append(
                f"| {kind} | {rows} | in-process sklearn predict | - | {fl['dataframe_ms']:.3f} (df) "
                f"/ {fl['ndarray_ms']:.3f} (nd) | - | - | floor | |"
            )
            lines.append(
                f"| {kind} | {rows} | in-process, server's evaluator | - | {fl['server_ms']:.3f} | - | - | floor | |"
            )
    lines += ["", "Server CPU per request minus the in-process floor (goal: within 0.5 ms):", ""]
    for kind, res in results["models"].items():
        for rows in (1, 100):
            ours = res[rows]["ours"]["cpu_ms_per_req"]
            fl = res["floor"][rows]
            lines.append(
                f"- {kind}, {rows} row(s): {ours:.3f} ms - {fl['dataframe_ms']:.3f} ms (DataFrame predict) = "
                f"{ours - fl['dataframe_ms']:+.3f} ms; vs ndarray predict {ours - fl['ndarray_ms']:+.3f} ms; "
                f"vs the server's evaluator {ours - fl['server_ms']:+.3f} ms"
            )
    lines += ["", "The server's evaluator per model:", ""]
    for kind, res in results["models"].items():
        lines.append(f"- {kind}: {res['floor'][1].get('server_evaluator')}")
    img = results.get("image")
    if img:
        lines += [
            "",
            "Serving image (`docker build --target serving`, logistic regression baked in):",
            "",
            f"- size: {img['size_mb']:.0f} MB (goal <= 400 MB)",
            f"- docker run -> first 200 from /readyz: median {img['start_to_ready_median_s']:.2f} s over "
            f"{len(img['start_to_ready_s'])} starts ({', '.join(f'{t:.2f}' for t in img['start_to_ready_s'])} s; "
            "goal <= 5 s)",
            f"- build time (warm layer cache for the dependencies): {img['build_s']:.0f} s",
        ]
    lines += ["", "Raw numbers: bench/serving/results.json", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per configuration")
    parser.add_argument("--models", default="lr,rf")
    parser.add_argument("--no-image", action="store_true", help="skip the Docker image part")
    parser.add_argument("--starts", type=int, default=5, help="container starts to time")
    parser.add_argument("--out", default=str(Path(__file__).parent))
    parser.add_argument("--render", metavar="RESULTS_JSON", help="only re-render RESULTS.md from a results.json")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        for res in saved["models"].values():  # JSON turned the row-count keys into strings
            for key in [k for k in res if k.isdigit()]:
                res[int(key)] = res.pop(key)
            res["floor"] = {int(k): v for k, v in res["floor"].items()}
        (Path(args.out) / "RESULTS.md").write_text(render(saved, saved["meta"]))
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
        "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "command": "python bench/serving/run.py " + " ".join(sys.argv[1:]),
    }
    results: dict[str, Any] = {"meta": meta, "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        workdir = Path(tmp)
        for kind in args.models.split(","):
            print(f"== {kind}", flush=True)
            results["models"][kind] = bench_model(kind, workdir, args.seconds, args.rounds)
            for rows in (1, 100):
                r = results["models"][kind][rows]
                print(
                    f"{kind} rows={rows}: ours {r['ours']['rps']:.0f} req/s, mlflow {r['mlflow']['rps']:.0f} req/s "
                    f"({r['ours']['rps'] / r['mlflow']['rps']:.1f}x); ours CPU {r['ours']['cpu_ms_per_req']:.3f} "
                    f"ms/req, floor {results['models'][kind]['floor'][rows]}",
                    flush=True,
                )
        if not args.no_image:
            results["image"] = bench_image(workdir, args.starts)
            print(f"image: {results['image']}", flush=True)
    text = render(results, meta)
    print(text)
    out = Path(args.out)
    (out / "RESULTS.md").write_text(text)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
