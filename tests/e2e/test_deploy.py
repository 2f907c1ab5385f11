"""The deploy DAG through the running scheduler, on the local target: real image builds, real
containers behind the real HAProxy on settings.lb_url, health checks on /readyz.

Order matters (module state): two good versions go live by blue/green, clearing the first run's
`start_new` brings the first version back, a never-ready image and a model failing on /predict are
each rolled back while the old version keeps serving, and a canary shifts in steps.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from flightdeck import settings as settings_mod
from flightdeck.deploy import records as rec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

DAG = "deploy"
MODEL = "deploy-test-model"
STUB_DIR = Path(__file__).resolve().parents[2] / "bench" / "deploy" / "stub_server"
FAST = {"bake_seconds": 6, "step_seconds": 4, "healthy_timeout_seconds": 45, "min_requests": 10}


def _register(bad: bool) -> str:
    """Register a breast-cancer logistic regression. `bad` puts a Box-Cox transform in front of it
    (fitted on X + 1): it loads, passes the serving image's smoke prediction on its (positive) input
    example and reports ready, but any row with a value <= 0 (what the watcher sends) makes the
    transform raise inside the model, so /predict answers 500."""
    import mlflow
    import sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PowerTransformer

    s = settings_mod.load()
    mlflow.set_tracking_uri(s.mlflow_uri)
    mlflow.set_experiment("deploy-tests")
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=5000)
    if bad:
        model = make_pipeline(PowerTransformer(method="box-cox"), model)
    model.fit(X + 1 if bad else X, y)
    with mlflow.start_run(run_name="deploy-test-bad" if bad else "deploy-test-good"):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, y),
            registered_model_name=MODEL,
            serialization_format="skops",
            input_example=X.iloc[:1] + 1 if bad else None,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"mlflow=={mlflow.__version__}"],
        )
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def lb(platform) -> str:
    return platform.lb_url


@pytest.fixture(scope="module")
def models() -> dict[str, str]:
    return {"good1": _register(False), "good2": _register(False), "bad": _register(True)}


@pytest.fixture(scope="module")
def never_ready_image() -> str:
    """An image that starts but never passes /readyz (the stub server with NEVER_READY baked in)."""
    import docker

    s = settings_mod.load()
    client = docker.from_env()
    ref = f"{s.registry}/deploy-test-never-ready:1"
    image, _ = client.images.build(
        path=str(STUB_DIR), tag=ref, rm=True, buildargs={"MODEL_VERSION": "never", "NEVER_READY": "1"}
    )
    assert "NEVER_READY=1" in image.attrs["Config"]["Env"]
    for chunk in client.images.push(ref.rsplit(":", 1)[0], tag="1", stream=True, decode=True):
        assert "error" not in chunk, chunk
    return ref


@pytest.fixture(scope="module")
def store(platform):
    from flightdeck import s3

    return rec.RecordStore(s3.client(), platform.deploy_bucket)


def _version(lb: str) -> str:
    return str(requests.get(f"{lb}/version", timeout=5).json()["model_version"])


class Watcher:
    """Polls the LB during a run: which versions answered /version, and any failed request."""

    def __init__(self, lb: str, predict: bool = False) -> None:
        self.lb, self.predict = lb, predict
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self.predict_codes: Counter[int] = Counter()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        s = requests.Session()
        rows = {"rows": [{c: -2.0 for c in _columns()}]}
        while not self._stop.is_set():
            try:
                r = s.get(f"{self.lb}/version", timeout=5)
                if r.status_code != 200:
                    self.failures.append(f"/version {r.status_code}")
                else:
                    self.versions[str(r.json()["model_version"])] += 1
                if self.predict:
                    self.predict_codes[s.post(f"{self.lb}/predict", json=rows, timeout=5).status_code] += 1
            except requests.RequestException as e:
                self.failures.append(repr(e))
            time.sleep(0.02)

    def __enter__(self) -> Watcher:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def _columns() -> list[str]:
    from sklearn.datasets import load_breast_cancer

    return list(load_breast_cancer(as_frame=True).frame.columns[:30])


def _trigger(airflow, conf: dict) -> str:
    for attempt in range(3):  # the embedded Airflow's SQLite can answer 500 ("database is locked") under load
        try:
            return airflow.trigger(DAG, conf={"model_name": MODEL, "target": "local", **FAST, **conf})
        except Exception:
            if attempt == 2:
                raise
            time.sleep(5)
    raise AssertionError("unreachable")


def _deploy(airflow, conf: dict) -> tuple[str, str]:
    run_id = _trigger(airflow, conf)
    return run_id, airflow.wait(DAG, run_id, timeout=900)


RUNS: dict[str, str] = {}


def test_blue_green_good_model_goes_live(airflow, models, lb, store):
    run1, state1 = _deploy(airflow, {"model": models["good1"], "strategy": "blue_green"})
    assert state1 == "success", airflow.task_states(DAG, run1)
    assert _version(lb) == models["good1"]
    RUNS["good1"] = run1
    with Watcher(lb) as w:
        run2, state2 = _deploy(airflow, {"model": models["good2"], "strategy": "blue_green"})
    assert state2 == "success", airflow.task_states(DAG, run2)
    assert _version(lb) == models["good2"]
    RUNS["good2"] = run2
    assert w.failures == [], w.failures[:5]  # the switch cost no request
    # (other users of the shared platform may deploy between our runs: only our versions are asserted)
    assert w.versions[models["good2"]] > 0
    record = store.get("local", rec.deployment_id(run2))
    image = record.status.image
    assert record.outcome is rec.Outcome.SUCCEEDED and record.status.model["version"] == models["good2"]
    assert image["digest"].startswith("sha256:")
    assert image["labels"]["org.flightdeck.model.version"] == models["good2"]
    assert requests.get(f"{lb}/version", timeout=5).json()["image_digest"] == image["digest"]
    first = store.get("local", rec.deployment_id(RUNS["good1"]))  # no longer serving: replaced (by run2, or
    assert rec.EventKind.REPLACED in [e.kind for e in first.status.events]  # another user's deploy in between)
    assert "deployment record:" in airflow.task_log(DAG, run2, "finalize")


def test_clearing_an_earlier_run_redeploys_its_digest(airflow, lb, store, models):
    run1 = RUNS["good1"]
    first = store.get("local", rec.deployment_id(run1))
    airflow.post(
        f"/dags/{DAG}/clearTaskInstances",
        {
            "dag_run_id": run1,
            "task_ids": ["start_new"],
            "include_downstream": True,
            "only_failed": False,
            "dry_run": False,
            "reset_dag_runs": True,
        },
    )
    time.sleep(3)
    assert airflow.wait(DAG, run1, timeout=600) == "success", airflow.task_states(DAG, run1)
    assert _version(lb) == models["good1"]
    again = store.get("local", rec.deployment_id(run1))
    digest = first.status.image["digest"]
    assert again.status.image["digest"] == digest
    assert again.status.revision_spec.image.endswith(digest)  # pulled by that digest
    assert requests.get(f"{lb}/version", timeout=5).json()["image_digest"] == digest
    assert [s["step"] for s in again.status.steps].count("start_new") == 2
    # history: the re-run is a new event at its new time, and the run it displaced reads "replaced by" it
    kinds = [e.kind.value for e in again.status.events]
    assert kinds[-2:] == ["restarted", "live"] and again.status.events[-2].at > first.status.events[-1].at
    restarted_at = again.status.events[-2].at
    displaced = [
        r
        for r in store.list("local")
        if any(e.by == again.deployment_id and e.at >= restarted_at for e in r.status.events)
    ]
    assert displaced, "no run reads `replaced` by the redeployed one"


def _previous_versions(record: rec.DeploymentRecord) -> set[str]:
    """Model versions that served when this run started (what a rollback must restore)."""
    prev = record.status.previous
    return {str(s["model_version"]) for r, s in prev.specs.items() if prev.weights.get(r, 0) > 0} if prev else set()


def test_never_ready_image_is_rolled_back(airflow, lb, models, never_ready_image, store):
    with Watcher(lb) as w:
        run, state = _deploy(
            airflow,
            {"model": "none", "image": never_ready_image, "strategy": "blue_green", "healthy_timeout_seconds": 15},
        )
    assert state == "failed"
    states = airflow.task_states(DAG, run)
    assert states["wait_healthy"] == "failed" and states["rollback"] == "success", states
    assert states["shift_1"] == "upstream_failed"
    record = store.get("local", rec.deployment_id(run))
    assert _version(lb) in _previous_versions(record)
    assert w.failures == [] and "0" not in w.versions, (w.failures[:5], w.versions)  # never served
    assert record.outcome is rec.Outcome.ROLLED_BACK and record.status.rollback["failed_step"] == "wait_healthy"
    assert "not healthy" in airflow.task_log(DAG, run, "outcome")


def test_model_failing_on_predict_is_rolled_back(airflow, lb, models, store):
    from mlflow import MlflowClient

    from flightdeck.deploy.haproxy import HAProxy
    from flightdeck.deploy.local import platform_lb

    haproxy = HAProxy(platform_lb())
    retried_before = int(haproxy.backend_stats()["wretr"])
    with Watcher(lb, predict=True) as w:
        run, state = _deploy(airflow, {"model": models["bad"], "strategy": "blue_green"})
    assert state == "failed"
    states = airflow.task_states(DAG, run)
    assert states["bake"] == "failed" and states["rollback"] == "success", states
    assert _version(lb) in _previous_versions(store.get("local", rec.deployment_id(run)))
    # exposed, and every request it failed was retried by the LB on the previous revision: no client saw a 500
    assert w.predict_codes[500] == 0 and w.predict_codes[200] > 0, w.predict_codes
    assert int(haproxy.backend_stats()["wretr"]) > retried_before
    assert w.failures == [], w.failures[:5]
    record = store.get("local", rec.deployment_id(run))
    assert record.outcome is rec.Outcome.ROLLED_BACK and "5xx rate" in record.status.rollback["reason"]
    tags = MlflowClient(settings_mod.load().mlflow_uri).get_model_version(MODEL, models["bad"]).tags
    assert tags["deploy.local.status"] == "rolled_back" and "5xx" in tags["deploy.local.rollback_reason"]
    assert "5xx rate" in airflow.task_log(DAG, run, "outcome")


def test_canary_shifts_in_steps(airflow, lb, models, store):
    with Watcher(lb) as w:
        run, state = _deploy(
            airflow, {"model": models["good2"], "strategy": "canary", "canary_percent": 20, "canary_steps": 3}
        )
    assert state == "success", airflow.task_states(DAG, run)
    states = airflow.task_states(DAG, run)
    assert [states[f"shift_{i}"] for i in (1, 2, 3, 4)] == ["success"] * 3 + ["skipped"]
    record = store.get("local", rec.deployment_id(run))
    revision = record.status.revision
    shifted = [s["weights"][revision] for s in record.status.steps if s["step"].startswith("shift_")]
    assert shifted == [20, 60, 100], json.dumps(record.status.steps, indent=1)
    assert _version(lb) == models["good2"]
    assert w.failures == [], w.failures[:5]


def test_rejected_canary_approval_rolls_back(airflow, lb, models, store):
    run = _trigger(
        airflow,
        {
            "model": models["good1"],
            "strategy": "canary",
            "canary_percent": 20,
            "canary_steps": 2,
            "require_approval": True,
        },
    )
    deadline = time.monotonic() + 600
    answered = False
    while time.monotonic() < deadline and not answered:
        state = airflow.task_states(DAG, run).get("approve_canary")
        if state in ("deferred", "awaiting_input", "running"):
            # the canary holds 20% while a human decides
            record = store.get("local", rec.deployment_id(run))
            shift1 = [s for s in record.status.steps if s["step"] == "shift_1"][-1]
            assert shift1["weights"][record.status.revision] == 20, shift1
            try:
                airflow.patch(
                    f"/dags/{DAG}/dagRuns/{run}/taskInstances/approve_canary/-1/hitlDetails",
                    {"chosen_options": ["Reject"], "params_input": {}},
                )
                answered = True
            except Exception:  # the HITL detail appears a moment after the state
                time.sleep(2)
        else:
            assert state not in ("failed", "upstream_failed", "skipped"), airflow.task_states(DAG, run)
            time.sleep(2)
    assert answered, airflow.task_states(DAG, run)
    assert airflow.wait(DAG, run, timeout=600) == "failed"
    states = airflow.task_states(DAG, run)
    assert states["approve_canary"] == "failed" and states["rollback"] == "success", states
    assert states["shift_2"] == "upstream_failed"
    record = store.get("local", rec.deployment_id(run))
    assert _version(lb) in _previous_versions(record)
    assert record.outcome is rec.Outcome.ROLLED_BACK and "approve_canary" in record.status.rollback["reason"]
