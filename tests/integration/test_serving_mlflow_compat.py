"""MLflow's own client and documented scoring payloads get the same predictions from our
/invocations as from `mlflow models serve` on the same model directory.

Starts both servers locally (no platform services needed; marked integration for the time it takes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from serving.examples import save_breast_cancer_model  # noqa: E402

pytestmark = pytest.mark.integration
VENV_BIN = Path(sys.executable).parent
OURS, THEIRS = 8131, 8132


def _wait(url: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server for {url} exited with {proc.returncode}"
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise TimeoutError(url)


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=fh, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    work = tmp_path_factory.mktemp("compat")
    model = save_breast_cancer_model(work / "model", "rf", n_estimators=10)
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    ours = _start(
        [
            str(VENV_BIN / "gunicorn"),
            "-c",
            "serving/gunicorn.conf.py",
            "--no-control-socket",
            "serving.app:create_app()",
        ],
        {**env, "SERVING_MODEL_DIR": str(model.path), "PORT": str(OURS), "SERVING_HOST": "127.0.0.1"},
        work / "ours.log",
    )
    theirs = _start(
        [
            str(VENV_BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            str(model.path),
            "-h",
            "127.0.0.1",
            "-p",
            str(THEIRS),
            "-w",
            "1",
            "--env-manager",
            "local",
        ],
        env,
        work / "mlflow.log",
    )
    try:
        _wait(f"http://127.0.0.1:{OURS}/readyz", ours)
        _wait(f"http://127.0.0.1:{THEIRS}/ping", theirs)
        yield model
    finally:
        _stop(ours)
        _stop(theirs)


def test_mlflow_scoring_client_gets_the_same_predictions(servers):
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    frame = servers.X.iloc[:60]
    ours = ScoringServerClient("127.0.0.1", OURS).invoke(frame).get_predictions()
    theirs = ScoringServerClient("127.0.0.1", THEIRS).invoke(frame).get_predictions()
    assert ours.equals(theirs)
    assert ours.iloc[:, 0].tolist() == servers.expected(0, 60)


def _payloads(model) -> dict[str, str]:
    frame = model.X.iloc[100:140]
    records = frame.to_dict(orient="records")
    split = json.loads(frame.to_json(orient="split"))
    return {
        "dataframe_split": json.dumps({"dataframe_split": split}),
        "dataframe_records": json.dumps({"dataframe_records": records}),
        "instances": json.dumps({"instances": records}),
        "inputs": json.dumps({"inputs": {c: frame[c].tolist() for c in frame.columns}}),
        # the example MLflow itself wrote next to the model at log time
        "serving_input_example": (model.path / "serving_input_example.json").read_text(),
    }


@pytest.mark.parametrize(
    "fmt", ["dataframe_split", "dataframe_records", "instances", "inputs", "serving_input_example"]
)
def test_documented_payloads_agree(servers, fmt):
    body = _payloads(servers)[fmt]
    answers = []
    for port in (OURS, THEIRS):
        resp = requests.post(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=30
        )
        assert resp.status_code == 200, resp.text
        answers.append(resp.json())
    assert answers[0] == answers[1]
    assert len(answers[0]["predictions"]) >= 1


def test_both_refuse_a_missing_column_with_a_4xx(servers):
    frame = servers.X.iloc[:2].drop(columns=["mean radius"])
    body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split"))})
    for port in (OURS, THEIRS):
        resp = requests.post(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=30
        )
        assert 400 <= resp.status_code < 500, (port, resp.status_code, resp.text)
        assert "mean radius" in resp.text
