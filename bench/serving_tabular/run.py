"""Benchmark: a tabular pipeline with categoricals on our server vs the servers users would pick instead.

One model, four servers, one run: a scikit-learn Pipeline (median imputation of numbers; constant
imputation + ordinal encoding of string categoricals; HistGradientBoostingClassifier with those
categoricals native) trained on generated data (20 columns: doubles, integers, string categoricals,
nulls in some, string class labels), saved with `mlflow.sklearn.save_model` and a signature that keeps
strings as "string" and marks the nullable columns optional. Served, 1 worker each, by:

1. ours: gunicorn + `serving.app:create_app()` on the MLflow model directory (project venv);
2. `mlflow models serve --env-manager local` on the same directory (project venv);
3. MLServer with its scikit-learn runtime on the same pipeline as a joblib file, V2 inference protocol
   with the pandas codec (own virtualenv: build/bench-venvs/mlserver);
4. BentoML, bench/serving_tabular/bentoml_service.py: the same joblib file, a pydantic model of the
   columns validating each row (own virtualenv: build/bench-venvs/bentoml).

Before any timing every server is asked a few sample requests (nulls in number and string columns
included) and its answers are compared with the pipeline's own `predict` in this process; a server
that fails to start or answers wrongly is reported, not timed. Then wrk (-t1 -c8) posts the same rows
(1 and 100 per request, in each server's own protocol) to each server in turn, alternating servers
over --rounds rounds; medians are reported.

    .venv/bin/python bench/serving_tabular/run.py     # ~8 min the first time (builds the two venvs)

Numbers are printed, never asserted: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from bench.wrk_runner import cpu_ms as _cpu_ms  # noqa: E402
from bench.wrk_runner import run_wrk as wrk  # noqa: E402

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
VENVS = REPO / "build" / "bench-venvs"
SKLEARN_PIN = "scikit-learn==1.9.1"  # the lock's version: the pickle must load the same everywhere
# Extra packages each server's venv needs beside the server itself; pandas/numpy as in our lock.
VENV_PACKAGES = {
    "mlserver": ["mlserver", "mlserver-sklearn", SKLEARN_PIN, "pandas==3.1.1", "numpy==2.4.6"],
    "bentoml": ["bentoml", SKLEARN_PIN, "pandas==3.1.1", "numpy==2.4.6"],
}
PORTS = {"ours": 19100, "mlflow": 19101, "mlserver": 19102, "bentoml": 19105}
MLSERVER_GRPC_PORT, MLSERVER_METRICS_PORT = 19103, 19104
SERVERS = ("ours", "mlflow", "mlserver", "bentoml")
ROW_COUNTS = (1, 100)
# One thread for numeric libraries everywhere: HistGradientBoosting predicts with OpenMP otherwise.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY"), "r"); wrk.body = f:read("*a"); f:close()
"""

NUMERIC = [f"num_{i}" for i in range(10)]
INTEGER = [f"int_{i}" for i in range(4)]
CATEGORICAL = [f"cat_{i}" for i in range(6)]
NULLABLE = {"num_0", "num_1", "num_2", "cat_0", "cat_1", "cat_2"}
CARDINALITY = {"cat_0": 3, "cat_1": 5, "cat_2": 8, "cat_3": 12, "cat_4": 20, "cat_5": 40}
CLASSES = np.array(["bronze", "silver", "gold"])


# --------------------------------------------------------------------------------------- model


def make_data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """n rows x 20 columns (10 doubles, 4 integers, 6 string categoricals; nulls in 6) and string labels."""
    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {}
    for i, name in enumerate(NUMERIC):
        cols[name] = rng.normal(i, 1 + i / 4, n)
    for i, name in enumerate(INTEGER):
        cols[name] = rng.integers(0, 10 ** (i + 1), n).astype("int64")
    for name, k in CARDINALITY.items():
        cols[name] = rng.choice([f"{name}_v{j:02d}" for j in range(k)], n)
    score = (
        cols["num_0"]
        - 0.5 * cols["num_3"]
        + 0.3 * np.log1p(cols["int_1"])
        + np.array([len(v) % 3 for v in cols["cat_0"]])
        + (cols["cat_3"] < "cat_3_v04") * 1.5
        + rng.normal(0, 0.8, n)
    )
    y = CLASSES[np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))]
    for name in sorted(NULLABLE):
        missing = rng.random(n) < 0.1
        if name in CARDINALITY:
            cols[name] = np.where(missing, None, cols[name])
        else:
            cols[name] = np.where(missing, np.nan, cols[name])
    frame = pd.DataFrame(
        {name: pd.Series(values, dtype="str" if name in CARDINALITY else None) for name, values in cols.items()}
    )
    return frame, y


def build_pipeline() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
            (
                "encode",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1),
            ),
        ]
    )
    preprocess = ColumnTransformer(
        [("numeric", SimpleImputer(strategy="median"), NUMERIC + INTEGER), ("categorical", categorical, CATEGORICAL)]
    )
    n_num = len(NUMERIC) + len(INTEGER)
    # A fixed size (no early stopping): 100 iterations x 3 classes = 300 trees of up to 31 leaves.
    model = HistGradientBoostingClassifier(
        categorical_features=list(range(n_num, n_num + len(CATEGORICAL))),
        max_iter=100,
        early_stopping=False,
        random_state=0,
    )
    return Pipeline([("preprocess", preprocess), ("model", model)])


def signature_for(X: pd.DataFrame, y: np.ndarray) -> Any:
    """MLflow's inferred signature with every nullable column optional, whatever the sample held."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, Schema

    inferred = infer_signature(X, y)
    inputs = Schema([ColSpec(c.type, c.name, required=c.name not in NULLABLE) for c in inferred.inputs.inputs])
    return ModelSignature(inputs=inputs, outputs=inferred.outputs)


@dataclass
class Model:
    pipeline: Any
    mlflow_dir: Path
    joblib_path: Path
    columns: list[dict[str, Any]]  # the signature's inputs, as in MLmodel
    test: pd.DataFrame  # rows the requests are made of (never seen in training)
    fit_seconds: float = 0.0


def save_model(workdir: Path, n_train: int) -> Model:
    import joblib
    import mlflow.sklearn
    import skops.io

    X, y = make_data(n_train, seed=0)
    test, _ = make_data(2000, seed=1)
    pipeline = build_pipeline()
    t0 = time.perf_counter()
    pipeline.fit(X, y)
    fit_seconds = time.perf_counter() - t0
    signature = signature_for(X, pipeline.predict(X.head(200)))
    mlflow_dir = workdir / "model"
    shutil.rmtree(mlflow_dir, ignore_errors=True)
    mlflow.sklearn.save_model(
        pipeline,
        str(mlflow_dir),
        signature=signature,
        input_example=X.head(2),
        pip_requirements=[SKLEARN_PIN, "pandas==3.1.1", "numpy==2.4.6"],  # no 12 s requirement inference
        serialization_format="skops",
        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)),
    )
    joblib_path = workdir / "model.joblib"
    joblib.dump(pipeline, joblib_path)
    columns = [spec.to_dict() for spec in signature.inputs.inputs]
    for spec in columns:
        spec["required"] = spec.get("required", True)
    return Model(pipeline, mlflow_dir, joblib_path, columns, test, fit_seconds)


# ------------------------------------------------------------------------------------ requests


def _cell(value: Any) -> Any:
    """A frame cell as JSON: NaN/None -> null, numpy scalars -> Python."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _rows(frame: pd.DataFrame) -> list[list[Any]]:
    return [[_cell(v) for v in row] for row in frame.itertuples(index=False)]


def body_for(server: str, frame: pd.DataFrame, columns: list[dict[str, Any]]) -> dict[str, Any]:
    """The same rows in each server's own request format."""
    names = list(frame.columns)
    rows = _rows(frame)
    if server in ("ours", "mlflow"):  # MLflow's scoring protocol, as `mlflow models serve` documents it
        return {"dataframe_split": {"columns": names, "data": rows}}
    if server == "bentoml":  # the service's `rows: list[Row]` argument, one object per row
        return {"rows": [dict(zip(names, row, strict=True)) for row in rows]}
    if server == "mlserver":  # V2 inference protocol, one input per column, decoded by the pandas codec
        v2_types = {"double": "FP64", "float": "FP64", "long": "INT64", "integer": "INT64", "string": "BYTES"}
        types = {c["name"]: c["type"] for c in columns}
        inputs = []
        for i, name in enumerate(names):
            inp: dict[str, Any] = {
                "name": name,
                "shape": [len(rows)],
                "datatype": v2_types[types[name]],
                "data": [row[i] for row in rows],
            }
            if types[name] == "string":
                inp["parameters"] = {"content_type": "str"}
            inputs.append(inp)
        return {"parameters": {"content_type": "pd"}, "inputs": inputs}
    raise ValueError(server)


def answers_of(server: str, payload: Any) -> list[Any]:
    if server in ("ours", "mlflow"):
        return list(payload["predictions"])
    if server == "mlserver":
        return list(payload["outputs"][0]["data"])
    return list(payload)


def url_of(server: str) -> str:
    path = {"ours": "/invocations", "mlflow": "/invocations", "mlserver": "/v2/models/tabular/infer"}
    return f"http://127.0.0.1:{PORTS[server]}{path.get(server, '/predict')}"


def post(url: str, body: bytes, timeout: float = 60) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, text


TIMED = "timed body,"


def sample_frames(test: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The timed bodies' rows plus single rows with a null in a string and in a number column."""
    null_str = test.index[test["cat_0"].isna()][:2]
    null_num = test.index[test["num_0"].isna() & test["cat_1"].notna()][:2]
    samples = {f"{TIMED} {n} row(s)": test.iloc[:n] for n in ROW_COUNTS}
    samples["500 more rows"] = test.iloc[100:600]
    for i in [*null_str, *null_num]:
        nulls = [c for c in test.columns if pd.isna(test.at[i, c])]
        samples[f"row {i} (null {', '.join(nulls)})"] = test.loc[[i]]
    return samples


# ------------------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    cmd: list[str]
    ready_url: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    proc: subprocess.Popen | None = None
    error: str | None = None
    log: Path | None = None
    start_seconds: float = 0.0
    version: str = ""


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def start(server: Server, logdir: Path, timeout: float) -> None:
    """Start in its own session; wait for a 200 from its readiness URL, or record why not."""
    server.log = logdir / f"{server.name}.log"
    with server.log.open("ab") as log:
        server.proc = subprocess.Popen(
            server.cmd,
            cwd=server.cwd or REPO,
            env={**os.environ, **THREAD_ENV, **server.env},
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    t0 = time.perf_counter()
    last = ""
    while time.perf_counter() - t0 < timeout:
        if server.proc.poll() is not None:
            server.error = f"exited with {server.proc.returncode} before ready:\n{_tail(server.log)}"
            return
        try:
            with urllib.request.urlopen(server.ready_url, timeout=2) as resp:
                if resp.status == 200:
                    server.start_seconds = time.perf_counter() - t0
                    return
        except urllib.error.HTTPError as exc:
            last = f"{exc.code} {exc.read()[:300].decode(errors='replace')}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    server.error = f"not ready after {timeout:.0f}s (last: {last}):\n{_tail(server.log)}"


def stop(server: Server) -> None:
    proc = server.proc
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session and process group
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def ensure_venv(name: str) -> tuple[Path | None, str]:
    """build/bench-venvs/NAME with the server and the lock's scikit-learn; (python, '') or (None, error)."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".bench-installed"
    wanted = " ".join(VENV_PACKAGES[name])
    if stamp.is_file() and stamp.read_text() == wanted:
        return python, ""
    if not shutil.which("uv"):
        return None, "uv is not installed (python3 -m pip install uv)"
    VENVS.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        made = subprocess.run(["uv", "venv", "-q", "--python", "3.11", str(venv)], capture_output=True, text=True)
        if made.returncode:
            return None, f"uv venv failed: {made.stderr.strip()}"
    print(f"installing {wanted} into {venv} ...", flush=True)
    done = subprocess.run(
        ["uv", "pip", "install", "-q", "--python", str(python), *VENV_PACKAGES[name]], capture_output=True, text=True
    )
    if done.returncode:
        return None, f"`uv pip install {wanted}` failed:\n{done.stderr.strip()[-3000:]}"
    stamp.write_text(wanted)
    return python, ""


def _version(python: Path, module: str) -> str:
    out = subprocess.run(
        [str(python), "-c", f"import {module}, sklearn; print({module}.__version__, sklearn.__version__)"],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        return "?"
    mod, sk = out.stdout.split()
    return f"{module} {mod}, scikit-learn {sk}"


def make_servers(model: Model, workdir: Path, mlserver_workers: int = 0) -> dict[str, Server]:
    servers: dict[str, Server] = {}
    ours_env = {
        "SERVING_MODEL_DIR": str(model.mlflow_dir),
        "PORT": str(PORTS["ours"]),
        "SERVING_HOST": "127.0.0.1",
        "SERVING_WORKERS": "1",
        "SERVING_THREADS": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "ours-metrics"),
    }
    servers["ours"] = Server(
        "ours",
        [
            str(VENV_BIN / "gunicorn"),
            "-c",
            "serving/gunicorn.conf.py",
            "--no-control-socket",
            "serving.app:create_app()",
        ],
        f"http://127.0.0.1:{PORTS['ours']}/readyz",
        env=ours_env,
        cwd=REPO,
        version="gunicorn + serving.app (this repo)",
    )
    import mlflow

    servers["mlflow"] = Server(
        "mlflow",
        [
            str(VENV_BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            str(model.mlflow_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(PORTS["mlflow"]),
            "-w",
            "1",
            "--env-manager",
            "local",
        ],
        f"http://127.0.0.1:{PORTS['mlflow']}/ping",
        env={"PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"},  # it execs `uvicorn` by name
        version=f"mlflow {mlflow.__version__} (uvicorn, 1 worker)",
    )

    python, error = ensure_venv("mlserver")
    repo = workdir / "mlserver-repo"
    (repo / "tabular").mkdir(parents=True, exist_ok=True)
    # parallel_workers=0 (default here): inference in the one server process, as ours and BentoML do with
    # one worker; MLServer's own default (1) adds an inference process behind the HTTP one.
    settings = {
        "host": "127.0.0.1",
        "http_port": PORTS["mlserver"],
        "grpc_port": MLSERVER_GRPC_PORT,
        "metrics_port": MLSERVER_METRICS_PORT,
        "parallel_workers": mlserver_workers,
        "load_models_at_startup": True,
    }
    (repo / "settings.json").write_text(json.dumps(settings, indent=1))
    v2_types = {"double": "FP64", "float": "FP64", "long": "INT64", "integer": "INT64", "string": "BYTES"}
    model_settings = {
        "name": "tabular",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(model.joblib_path), "version": "v1", "content_type": "pd"},
        "inputs": [
            {
                "name": c["name"],
                "datatype": v2_types[c["type"]],
                "shape": [-1],
                **({"parameters": {"content_type": "str"}} if c["type"] == "string" else {}),
            }
            for c in model.columns
        ],
    }
    (repo / "tabular" / "model-settings.json").write_text(json.dumps(model_settings, indent=1))
    servers["mlserver"] = Server(
        "mlserver",
        [str(VENVS / "mlserver" / "bin" / "mlserver"), "start", str(repo)],
        f"http://127.0.0.1:{PORTS['mlserver']}/v2/models/tabular/ready",
        env={"PATH": f"{VENVS / 'mlserver' / 'bin'}:{os.environ.get('PATH', '')}"},
        cwd=repo,
        error=error or None,
        version=_version(python, "mlserver") + f" (parallel_workers {mlserver_workers})" if python else "",
    )

    python, error = ensure_venv("bentoml")
    bento_home = workdir / "bentoml-home"
    bento_home.mkdir(exist_ok=True)
    servers["bentoml"] = Server(
        "bentoml",
        [
            str(VENVS / "bentoml" / "bin" / "bentoml"),
            "serve",
            "bentoml_service:TabularService",
            "--host",
            "127.0.0.1",
            "--port",
            str(PORTS["bentoml"]),
        ],
        f"http://127.0.0.1:{PORTS['bentoml']}/readyz",
        env={
            "BENCH_MODEL_JOBLIB": str(model.joblib_path),
            "BENCH_COLUMNS_JSON": json.dumps(model.columns),
            "BENTOML_HOME": str(bento_home),
            "BENTOML_DO_NOT_TRACK": "True",
            "PATH": f"{VENVS / 'bentoml' / 'bin'}:{os.environ.get('PATH', '')}",
        },
        cwd=HERE,
        error=error or None,
        version=_version(python, "bentoml") + " (1 worker)" if python else "",
    )
    return servers


# ------------------------------------------------------------------------------------- checking


def check_answers(server: Server, model: Model, samples: dict[str, pd.DataFrame]) -> list[str]:
    """Each sample through the server vs the pipeline's own predict; the problems found (none = correct)."""
    problems = []
    for label, frame in samples.items():
        expected = [str(v) for v in model.pipeline.predict(frame)]
        body = json.dumps(body_for(server.name, frame, model.columns)).encode()
        status, payload = post(url_of(server.name), body)
        if status != 200:
            problems.append(f"{label}: HTTP {status}: {str(payload)[:400]}")
            continue
        try:
            got = [str(v) for v in answers_of(server.name, payload)]
        except (KeyError, TypeError, IndexError) as exc:
            problems.append(f"{label}: unexpected answer {str(payload)[:300]} ({exc})")
            continue
        if got != expected:
            wrong = [i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b]
            problems.append(
                f"{label}: {len(wrong) + abs(len(got) - len(expected))} of {len(expected)} predictions differ "
                f"from sklearn's (first: row {wrong[0] if wrong else len(expected)}: "
                f"{got[wrong[0]] if wrong else got[len(expected) :][:1]} vs "
                f"{expected[wrong[0]] if wrong else expected[len(got) :][:1]})"
            )
    return problems


def check_rejects(server: Server, model: Model) -> dict[str, int]:
    """Validation spot checks: HTTP status for a wrong type, a null in a required column, a missing column."""
    row = model.test.iloc[:1].copy()
    cases: dict[str, Callable[[dict[str, Any]], None]] = {}

    def mutate(column: str, value: Any) -> Callable[[dict[str, Any]], None]:
        def apply(body: dict[str, Any]) -> None:
            if server.name in ("ours", "mlflow"):
                split = body["dataframe_split"]
                split["data"][0][split["columns"].index(column)] = value
            elif server.name == "bentoml":
                body["rows"][0][column] = value
            else:
                next(i for i in body["inputs"] if i["name"] == column)["data"][0] = value

        return apply

    cases["string in a double column"] = mutate("num_5", "abc")
    cases["null in a required integer column"] = mutate("int_0", None)
    cases["number in a string column"] = mutate("cat_4", 7)
    out = {}
    for label, apply in cases.items():
        body = body_for(server.name, row, model.columns)
        apply(body)
        status, _ = post(url_of(server.name), json.dumps(body).encode())
        out[label] = status
    return out


# -------------------------------------------------------------------------------------- timing


def floors(model: Model, rows: int) -> dict[str, float]:
    """In this process, CPU ms per call on the request's rows: the pipeline's own predict on a DataFrame,
    and its two halves (the ColumnTransformer; the HistGradientBoosting predict on the encoded matrix)."""
    frame = model.test.iloc[:rows]
    preprocess, estimator = model.pipeline[0], model.pipeline[-1]
    matrix = preprocess.transform(frame)
    return {
        "pipeline_ms": _cpu_ms(lambda: model.pipeline.predict(frame)),
        "preprocess_ms": _cpu_ms(lambda: preprocess.transform(frame)),
        "model_ms": _cpu_ms(lambda: estimator.predict(matrix)),
    }


def ours_evaluator(server: Server) -> str:
    """What our server says it loaded: its /version `evaluator` and the load log's path."""
    parts = []
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['ours']}/version", timeout=5) as resp:
            info = json.loads(resp.read())
        parts.append(f"evaluator: {info.get('evaluator')}")
    except (OSError, ValueError):
        pass
    text = server.log.read_text(errors="replace") if server.log and server.log.is_file() else ""
    found = re.search(r"model loaded: flavor=(\S+) path=(\S+)", text)
    if found:
        parts.append(f"path: {found.group(2)}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------ reporting


def _fmt_ratio(ours: dict[str, Any] | None, other: dict[str, Any] | None) -> str:
    if not ours or not other or not other.get("rps"):
        return "-"
    return f"{ours['rps'] / other['rps']:.1f}x"


def _fmt_cpu_ratio(ours: dict[str, Any] | None, other: dict[str, Any] | None) -> str:
    if not ours or not other or not ours.get("cpu_ms_per_req"):
        return "-"
    return f"{other['cpu_ms_per_req'] / ours['cpu_ms_per_req']:.1f}x"


def goals(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    timed = results["timed"]

    def rps(name: str, rows: int = 1) -> float | None:
        r = timed.get(name, {}).get(str(rows), {})
        if r.get("non_2xx") or not (results["servers"].get(name, {}).get("timed_correct") or {}).get(str(rows)):
            return None  # failed or wrong answers are no throughput
        return r.get("rps")

    def cpu_note(name: str) -> str:
        ours_r, other = timed.get("ours", {}).get("1"), timed.get(name, {}).get("1")
        return f" (CPU ratio {_fmt_cpu_ratio(ours_r, other)})"

    def wrong_note(name: str) -> str:
        n = len(results["servers"].get(name, {}).get("problems") or [])
        return f"; {name} answers {n} other sample(s) wrongly" if n else ""

    def why(name: str) -> str:
        info = results["servers"].get(name)
        if info is None:
            return f"{name} not in this run"
        if info.get("error"):
            return f"{name} failed to start"
        if not (info.get("timed_correct") or {}).get("1"):
            return f"{name} answered the timed 1-row request wrongly"
        if timed.get(name, {}).get("1", {}).get("non_2xx"):
            return f"{name} failed requests under load"
        return f"{name} not timed"

    out = []
    ours, mlflow = rps("ours"), rps("mlflow")
    # Ours must answer every sample right for a goal to be met; a rival's wrong answers on the extra
    # samples never help ours (its speed still counts).
    ours_right = bool(results["servers"].get("ours", {}).get("correct"))
    if ours and mlflow:
        ratio = ours / mlflow
        ok = "yes" if ratio >= 10 and ours_right else "no"
        measured = f"{ours:.0f} vs {mlflow:.0f} req/s: {ratio:.1f}x{cpu_note('mlflow')}"
        measured += wrong_note("ours") + wrong_note("mlflow")
        out.append(("ours >= 10x `mlflow models serve`, 1 row (req/s)", measured, ok))
    else:
        verdict = "no" if not ours else "unknown"  # ours unusable is a miss; mlflow missing leaves it open
        out.append(
            (
                "ours >= 10x `mlflow models serve`, 1 row (req/s)",
                f"not measured ({why('ours' if not ours else 'mlflow')})",
                verdict,
            )
        )
    rivals = {n: rps(n) for n in ("mlserver", "bentoml") if rps(n)}
    if ours and rivals:
        best = max(rivals, key=lambda n: rivals[n])
        ratio = ours / rivals[best]
        missing = [why(n) for n in ("mlserver", "bentoml") if n not in rivals]
        note = f" ({'; '.join(missing)})" if missing else ""
        notes = "".join(wrong_note(n) for n in ("ours", "mlserver", "bentoml"))
        out.append(
            (
                "ours ahead of the best of MLServer and BentoML, 1 row (req/s)",
                f"{ours:.0f} vs {best} {rivals[best]:.0f} req/s: {ratio:.2f}x{cpu_note(best)}{note}{notes}",
                "yes" if ratio > 1 and ours_right else "no",
            )
        )
    else:
        reasons = "; ".join(why(n) for n in ("ours", "mlserver", "bentoml") if not rps(n))
        out.append(
            (
                "ours ahead of the best of MLServer and BentoML, 1 row (req/s)",
                f"not measured ({reasons})",
                "no" if not ours else "unknown",
            )
        )
    return out


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# Tabular serving benchmark results",
        "",
        f"Measured {meta['when']} on {meta['machine']} by `{meta['command']}`",
        f"at commit {meta.get('code', 'unknown')}.",
        f"Load average at start: {meta['loadavg']}; at the end: {meta.get('loadavg_end', '?')} (the machine is",
        "shared with other jobs; servers are measured in turn, alternating over the rounds, medians shown).",
        "",
        "## Against the issue's goals (computed from this run's figures)",
        "",
        "| goal | measured | met? |",
        "|---|---|---|",
        *[f"| {g} | {m} | {ok} |" for g, m, ok in goals(results)],
        "",
        "## The model",
        "",
        f"{meta['model']}",
        "",
        "## Servers",
        "",
        "| server | version / setup | started in | correct answers | validation spot checks (HTTP status) |",
        "|---|---|---|---|---|",
    ]
    for name, s in results["servers"].items():
        if s.get("error"):
            status = "-"
        elif s.get("correct"):
            status = "yes, every sample"
        elif any((s.get("timed_correct") or {}).values()):
            right = [f"{n}-row" for n, ok in s["timed_correct"].items() if ok]
            status = f"timed {'/'.join(right)} request right; {len(s['problems'])} sample(s) wrong (below)"
        else:
            status = "no (below)"
        checks = ", ".join(f"{k}: {v}" for k, v in (s.get("rejects") or {}).items()) or "-"
        started = f"{s['start_seconds']:.1f} s" if s.get("start_seconds") else "-"
        lines.append(f"| {name} | {s.get('version') or '-'} | {started} | {status} | {checks} |")
    problems = [(n, s) for n, s in results["servers"].items() if s.get("error") or s.get("problems")]
    if problems:
        lines += [
            "",
            "Failures and wrong answers (vs the pipeline's own `predict` in-process). A server that fails to start",
            "is not timed, nor at a row count whose timed request it answers wrongly; wrong answers on other",
            "samples are flagged. Ours must answer every sample right for a goal to be met.",
            "",
        ]
        for name, s in problems:
            if s.get("error"):
                lines += [
                    f"- **{name}** did not start:",
                    "",
                    "  ```",
                    *[f"  {x}" for x in s["error"].splitlines()[-20:]],
                ]
                lines += ["  ```"]
            else:
                lines += [f"- **{name}**: {problem}" for problem in s["problems"]]
    lines += [
        "",
        "## Figures",
        "",
        f"wrk -t1 -c{meta['connections']}, {meta['seconds']} s per measurement, {meta['rounds']} rounds; each server",
        "gets the same rows in its own protocol (body sizes below). CPU ms/req = CPU time of the server's",
        "whole process tree / requests served. `ours vs` = our req/s / that server's req/s; `CPU ratio` = its",
        "CPU per request / ours (less sensitive to other jobs on the machine, which also slow wrk down).",
        "",
        "| rows | server | req/s | p50 ms | p99 ms | CPU ms/req | body bytes | ours vs | CPU ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rows in ROW_COUNTS:
        ours = results["timed"].get("ours", {}).get(str(rows))
        for name in SERVERS:
            r = results["timed"].get(name, {}).get(str(rows))
            if not r:
                info = results["servers"].get(name)
                why = (
                    "not in this run"
                    if info is None
                    else "did not start"
                    if info.get("error")
                    else "answered this request wrongly"
                )
                lines.append(f"| {rows} | {name} | not timed ({why}) | | | | | | |")
                continue
            ratio = "1x" if name == "ours" else _fmt_ratio(ours, r)
            cpu_ratio = "1x" if name == "ours" else _fmt_cpu_ratio(ours, r)
            flag = f" ({r['non_2xx']} non-2xx answers: not counted)" if r.get("non_2xx") else ""
            if not (results["servers"][name].get("timed_correct") or {}).get(str(rows)):
                flag += " (wrong answers: not counted)"
            lines.append(
                f"| {rows} | {name} | {r['rps']:.0f}{flag} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{r['cpu_ms_per_req']:.3f} | {results['body_bytes'][name][str(rows)]} | {ratio} | {cpu_ratio} |"
            )
        fl = results["floor_ms"][str(rows)]
        lines.append(
            f"| {rows} | in-process `pipeline.predict(DataFrame)` | - | {fl['pipeline_ms']:.3f} CPU "
            f"(preprocess {fl['preprocess_ms']:.3f} + HGB predict {fl['model_ms']:.3f}) | - | - | - | floor | |"
        )
    lines += ["", "Raw numbers: bench/serving_tabular/results.json", ""]
    return "\n".join(lines)


def print_table(results: dict[str, Any]) -> None:
    print(
        f"\n{'rows':>4} {'server':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>10} "
        f"{'ours vs':>8} {'CPU ratio':>9}"
    )
    for rows in ROW_COUNTS:
        ours = results["timed"].get("ours", {}).get(str(rows))
        for name in SERVERS:
            r = results["timed"].get(name, {}).get(str(rows))
            if not r:
                print(f"{rows:>4} {name:<10} {'not timed':>8}")
                continue
            ratio = "1x" if name == "ours" else _fmt_ratio(ours, r)
            cpu_ratio = "1x" if name == "ours" else _fmt_cpu_ratio(ours, r)
            print(
                f"{rows:>4} {name:<10} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{r['cpu_ms_per_req']:>10.3f} {ratio:>8} {cpu_ratio:>9}"
            )
        fl = results["floor_ms"][str(rows)]
        print(
            f"{rows:>4} {'floor':<10} in-process pipeline.predict: {fl['pipeline_ms']:.3f} ms CPU "
            f"(preprocess {fl['preprocess_ms']:.3f} + HGB predict {fl['model_ms']:.3f})"
        )
    print()
    for goal, measured, ok in goals(results):
        print(f"goal: {goal}: {measured} -> {ok}")


# ----------------------------------------------------------------------------------------- main


def _code_revision() -> str:
    """The commit measured, and whether serving/ had uncommitted changes (figures belong to that code)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "serving"], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return "unknown"
    if sha.returncode:
        return "unknown"
    return sha.stdout.strip() + (" with uncommitted changes in serving/" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, servers alternating within each")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of " + ",".join(SERVERS))
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--mlserver-workers", type=int, default=0, help="MLServer's parallel_workers")
    parser.add_argument(
        "--time-incorrect",
        action="store_true",
        help="time servers whose answers differ from sklearn's too (flagged, never counted for the goals)",
    )
    parser.add_argument("--start-timeout", type=float, default=180)
    parser.add_argument("--out", default=str(HERE), help="where RESULTS.md and results.json go")
    parser.add_argument("--render", metavar="RESULTS_JSON", help="only re-render RESULTS.md from a results.json")
    args = parser.parse_args()
    out = Path(args.out)
    if args.render:
        out.mkdir(parents=True, exist_ok=True)
        (out / "RESULTS.md").write_text(render(json.loads(Path(args.render).read_text())))
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    wanted = [s for s in args.servers.split(",") if s]
    for name in wanted:
        if name not in PORTS:
            raise SystemExit(f"unknown server {name!r}; pick from {', '.join(SERVERS)}")
    busy = [p for p in [*(PORTS[n] for n in wanted), MLSERVER_GRPC_PORT, MLSERVER_METRICS_PORT] if not _free(p)]
    if busy:
        raise SystemExit(f"ports {busy} are in use: stop whatever listens there first")

    meta: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
        "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "command": "python bench/serving_tabular/run.py " + " ".join(sys.argv[1:]),
        "code": _code_revision(),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "connections": args.connections,
    }
    os.environ.update(THREAD_ENV)
    workroot = REPO / "build"
    workroot.mkdir(exist_ok=True)
    results: dict[str, Any] = {"meta": meta, "servers": {}, "timed": {}, "body_bytes": {}, "floor_ms": {}}
    with tempfile.TemporaryDirectory(prefix="bench-serving-tabular-", dir=workroot) as tmp:
        workdir = Path(tmp)
        print("== training the pipeline", flush=True)
        model = save_model(workdir, args.train_rows)
        meta["model"] = (
            f"Pipeline(ColumnTransformer(median imputer on {len(NUMERIC)} doubles + {len(INTEGER)} integers; "
            f"constant imputer + OrdinalEncoder on {len(CATEGORICAL)} string categoricals with "
            f"{'/'.join(str(k) for k in CARDINALITY.values())} levels), HistGradientBoostingClassifier("
            f"{len(CATEGORICAL)} categorical features, {model.pipeline[-1].n_iter_} iterations x "
            f"{len(CLASSES)} classes)); trained on {args.train_rows} generated rows in {model.fit_seconds:.1f} s; "
            f"{len(NULLABLE)} nullable columns ({', '.join(sorted(NULLABLE))}) optional in the signature; "
            f"labels {', '.join(CLASSES)}. Requests: rows of a separate generated test set (nulls included)."
        )
        for rows in ROW_COUNTS:
            results["floor_ms"][str(rows)] = floors(model, rows)
        samples = sample_frames(model.test)
        lua = workdir / "post.lua"
        lua.write_text(LUA)
        bodies: dict[str, dict[int, Path]] = {}
        for name in wanted:
            bodies[name] = {}
            results["body_bytes"][name] = {}
            for rows in ROW_COUNTS:
                path = workdir / f"{name}-{rows}.json"
                path.write_text(json.dumps(body_for(name, model.test.iloc[:rows], model.columns)))
                bodies[name][rows] = path
                results["body_bytes"][name][str(rows)] = path.stat().st_size

        servers = {n: s for n, s in make_servers(model, workdir, args.mlserver_workers).items() if n in wanted}
        try:
            for name, server in servers.items():
                if server.error is None:
                    print(f"== starting {name}", flush=True)
                    start(server, workdir, args.start_timeout)
                info: dict[str, Any] = {"version": server.version, "start_seconds": server.start_seconds}
                if server.error is None:
                    info["problems"] = check_answers(server, model, samples)
                    info["correct"] = not info["problems"]
                    info["timed_correct"] = {
                        str(n): not any(p.startswith(f"{TIMED} {n} row(s)") for p in info["problems"])
                        for n in ROW_COUNTS
                    }
                    info["rejects"] = check_rejects(server, model)
                    if name == "ours":
                        info["version"] = f"{server.version}; {ours_evaluator(server)}"
                    # A server's first seconds are slower (imports, caches): warm each before the rounds.
                    if any(info["timed_correct"].values()) or args.time_incorrect:
                        wrk(url_of(name), bodies[name][1], 2, server.proc.pid, lua, args.connections)
                else:
                    info["error"] = server.error
                    stop(server)
                results["servers"][name] = info
                print(f"{name}: {json.dumps(info)[:1500]}", flush=True)
            for rows in ROW_COUNTS:
                # Timed at this row count if it answered this very body right (or --time-incorrect).
                timed = [
                    n
                    for n, s in servers.items()
                    if s.error is None and (results["servers"][n]["timed_correct"][str(rows)] or args.time_incorrect)
                ]
                runs: dict[str, list[dict[str, Any]]] = {n: [] for n in timed}
                for rnd in range(args.rounds):
                    for name in timed:
                        r = wrk(url_of(name), bodies[name][rows], args.seconds, servers[name].proc.pid, lua,
                                args.connections)  # fmt: skip
                        runs[name].append(r)
                        print(
                            f"round {rnd + 1} rows={rows} {name}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
                            f"p99 {r['p99_ms']:.2f} ms, CPU {r['cpu_ms_per_req']:.3f} ms/req"
                            + (f", {r['non_2xx']} non-2xx" if r["non_2xx"] else ""),
                            flush=True,
                        )
                for name, rs in runs.items():
                    keys = ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req")
                    med = {k: statistics.median(r[k] for r in rs) for k in keys}
                    med |= {"non_2xx": sum(r["non_2xx"] for r in rs), "rounds": rs}
                    results["timed"].setdefault(name, {})[str(rows)] = med
        finally:
            for server in servers.values():
                stop(server)
    meta["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print_table(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "RESULTS.md").write_text(render(results))
    print(f"\nwrote {out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
