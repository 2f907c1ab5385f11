"""train.runner container against the real platform: the same synced data trained once on the worker (this
process) and once in a container of the train image (built from this checkout, pushed to the local
registry, host networking to S3 and MLflow) gives the same MLflow run, compared field by field.

Excluded from the comparison, each because it differs between any two runs by nature (PER_RUN_TAGS, and in
the model's files PER_RUN_MODEL_FIELDS): the MLflow run's id, name, times and the Airflow run id; which
process started it (MLflow's source and user tags); the logged model's id/uuid/creation time. One field
differs by environment and is asserted on its own: the interpreter's patch release (the worker's venv vs the
offline python:3.11-slim stand-in, Debian's 3.11.2), compared as major.minor. Everything else is equal: params,
metrics, the remaining tags (data_version, git_sha, dataset, holdout, params hash, DAG id, role, task,
namespace, model uri shape), artifact paths and bytes, nested candidate runs, the model's signature, input
example, requirements and files. The comparison is written to test-artifacts/train-runner-comparison.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from flightdeck import pipeline_config, retrain, settings, tracking, train_runner
from flightdeck.data import land
from flightdeck.data.store import ObjectStore

pytestmark = pytest.mark.integration

NS = f"it-runner-{uuid.uuid4().hex[:8]}"
MODEL = f"it-runner-{NS}"
DAG_ID = "retrain"
REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "test-artifacts" / "train-runner-comparison.json"

# Tags that differ between any two MLflow runs, whatever ran them, and why.
PER_RUN_TAGS = {
    "airflow.run_id": "the Airflow dag run: two trainings are two dag runs (a retry of one reuses its run)",
    "mlflow.runName": "<dataset>-<data version>-<end of the Airflow run id>: follows airflow.run_id",
    "mlflow.source.name": "the entry point of the process that logged: pytest here, flightdeck.train_runner there",
    "mlflow.user": "the OS user of that process: the worker's, the image's non-root `train`",
    "flightdeck.model_uri": "models:/<logged model id>: an id per logged model (its shape is compared)",
}
# MLmodel fields that are per logged model.
PER_RUN_MODEL_FIELDS = {
    "run_id": "the MLflow run",
    "model_uuid": "a fresh uuid per logged model",
    "model_id": "the logged model's id (m-...)",
    "utc_time_created": "when it was logged",
    "artifact_path": "MLflow 3 stores the logged model under its id",
    "model_size_bytes": "the size of model.skops, which follows its bytes (below)",
}
# model.skops, the fitted model, is compared as a model (parameters, every fitted array, predictions on the
# holdout), not byte for byte: skops names each array and object by its memory address in the process that
# saved it (id()), so one model saved by two processes gives two different files.
SKOPS_FILE = "model.skops"


@pytest.fixture(scope="module")
def synced(platform, tmp_path_factory):
    """New data landed in a private namespace, synced and through the data gate (what train gets). The commit
    is pinned (FLIGHTDECK_GIT_SHA, as in an image) to HEAD now: others commit to this checkout while the test
    runs, and the two sides must not read two different HEADs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTDECK_STATE_DIR", str(tmp_path_factory.mktemp("worker-state")))
        mp.setenv("FLIGHTDECK_GIT_SHA", settings.git_sha())
        cfg = pipeline_config.load("breast_cancer", model_name=MODEL, namespace=NS)
        land.land(cfg, ObjectStore())
        out = retrain.sync_data("breast_cancer", model_name=MODEL, namespace=NS)
        assert retrain.has_changes(out) and retrain.check_data(out)
        yield out


@pytest.fixture(scope="module")
def trained(synced):
    """The step on the worker, then in a container, each as its own dag run on the same synced data."""
    on_worker = retrain.train(synced, dag_id=DAG_ID, run_id=f"manual__{NS}-worker", runner="worker")
    in_container = retrain.train(synced, dag_id=DAG_ID, run_id=f"manual__{NS}-container", runner="container")
    return {"worker": on_worker, "container": in_container}


def _artifacts(cl, run_id: str, path: str = "") -> list[str]:
    out: list[str] = []
    for item in cl.list_artifacts(run_id, path or None):
        out.extend(_artifacts(cl, run_id, item.path) if item.is_dir else [item.path])
    return sorted(out)


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _model_files(model_uri: str, dest: Path) -> dict[str, Path]:
    import mlflow

    root = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(dest)))
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _strip_python(doc: dict[str, Any], found: list[str], where: str) -> dict[str, Any]:
    """`doc` with the interpreter's version cut to major.minor (the patch release is recorded in `found`)."""

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}") for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str) and (path.endswith(".python_version") or path.endswith(".python")):
            found.append(f"{where}{path}={node}")
            return ".".join(node.split(".")[:2])
        if isinstance(node, str) and node.startswith("python="):  # conda.yaml dependency
            found.append(f"{where}{path}={node}")
            return ".".join(node.split(".")[:2])
        return node

    return walk(doc, "")


def _fitted(model: Any, holdout: Any) -> dict[str, Any]:
    """The fitted pipeline as comparable values: its parameters, every fitted array of every step (sha256 of
    the bytes, dtype and shape included) and its predicted probabilities on the holdout (sha256 of the bytes)."""
    import numpy as np

    arrays: dict[str, str] = {}
    for step_name, step in [("", model), *model.named_steps.items()]:
        for attr, value in sorted(vars(step).items()):
            if attr.endswith("_") and isinstance(value, np.ndarray) and value.dtype != object:
                arrays[f"{step_name}.{attr}"] = hashlib.sha256(
                    f"{value.dtype}{value.shape}".encode() + np.ascontiguousarray(value).tobytes()
                ).hexdigest()
    proba = np.ascontiguousarray(model.predict_proba(holdout))
    return {
        "params": repr(sorted(model.get_params(deep=True).items(), key=lambda kv: kv[0])),
        "arrays": arrays,
        "predict_proba_sha256": hashlib.sha256(proba.tobytes()).hexdigest(),
    }


def _contents(cl, run_id: str, model_uri: str, dest: Path, holdout: Any) -> dict[str, Any]:
    """Everything the run logged, in comparable form (see the module docstring for what is left out)."""
    import mlflow

    run = cl.get_run(run_id)
    children = cl.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
    artifacts = _artifacts(cl, run_id)
    files = _model_files(model_uri, dest)
    python: list[str] = []
    model: dict[str, Any] = {}
    for name, path in files.items():
        if name == "MLmodel":
            doc = yaml.safe_load(path.read_text())
            doc = {k: v for k, v in doc.items() if k not in PER_RUN_MODEL_FIELDS}
            model[name] = _strip_python(doc, python, "MLmodel")
        elif name in ("python_env.yaml", "conda.yaml"):
            model[name] = _strip_python(yaml.safe_load(path.read_text()), python, name)
        elif name != SKOPS_FILE:
            model[name] = _sha(str(path))
    info = mlflow.models.get_model_info(model_uri)
    fitted = mlflow.sklearn.load_model(model_uri)
    return {
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": {k: v for k, v in run.data.tags.items() if k not in PER_RUN_TAGS},
        "per_run_tags": {k: v for k, v in run.data.tags.items() if k in PER_RUN_TAGS},
        "artifact_paths": artifacts,
        "artifact_sha256": {
            a: _sha(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=a, dst_path=str(dest / "run")))
            for a in artifacts
        },
        "candidates": sorted(
            (c.info.run_name, dict(c.data.params), dict(c.data.metrics), c.data.tags.get(tracking.TAG_ROLE))
            for c in children
        ),
        "signature": info.signature.to_dict(),
        "fitted_model": _fitted(fitted, holdout),
        "model_files": model,
        "python": sorted(python),
    }


@pytest.fixture(scope="module")
def compared(trained, synced, tmp_path_factory):
    cl = tracking.client()
    from flightdeck.data.schema import model_frame, read_typed
    from flightdeck.data.sync import Workspace

    cfg = retrain.run_config(synced)
    ws = Workspace(cfg, ObjectStore())
    holdout = model_frame(read_typed(ws.holdout_path, cfg.schema), cfg.schema)
    sides = {
        side: _contents(cl, out["mlflow_run_id"], out["model_uri"], tmp_path_factory.mktemp(side), holdout)
        for side, out in trained.items()
    }
    fields = [k for k in sides["worker"] if k not in ("per_run_tags", "python")]
    report = {
        "worker_run": trained["worker"]["mlflow_run_id"],
        "container_run": trained["container"]["mlflow_run_id"],
        "fields": {
            f: {"equal": sides["worker"][f] == sides["container"][f], "count": len(sides["worker"][f])} for f in fields
        },
        "excluded_tags": PER_RUN_TAGS,
        "excluded_model_fields": PER_RUN_MODEL_FIELDS,
        "per_run_tags": {side: s["per_run_tags"] for side, s in sides.items()},
        "python": {side: s["python"] for side, s in sides.items()},
    }
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    return sides


def test_container_run_has_the_workers_params_and_metrics(compared):
    worker, container = compared["worker"], compared["container"]
    assert container["params"] == worker["params"] and len(worker["params"]) > 30
    assert container["metrics"] == worker["metrics"]  # same data, seed, code and locked libraries: bit for bit
    assert {"f1_macro", "accuracy", "roc_auc", "train_rows"} <= set(worker["metrics"])


def test_container_run_has_the_workers_tags_lineage_included(compared, synced):
    worker, container = compared["worker"], compared["container"]
    assert container["tags"] == worker["tags"]
    tags = worker["tags"]
    assert tags[tracking.TAG_DATA_VERSION] == synced["data_version"]
    assert tags[tracking.TAG_GIT_SHA] == os.environ["FLIGHTDECK_GIT_SHA"] != "unknown"
    # exactly the excluded tags differ (and nothing else), each present on both sides
    differing = {
        k
        for k in {**worker["per_run_tags"], **container["per_run_tags"]}
        if worker["per_run_tags"].get(k) != container["per_run_tags"].get(k)
    }
    assert differing == set(PER_RUN_TAGS)
    assert tags[tracking.TAG_DAG_ID] == DAG_ID and tags[tracking.TAG_COMPLETE] == "true"
    assert tags[tracking.TAG_NAMESPACE] == NS and tags[tracking.TAG_PARAMS_HASH] == synced["params_hash"]
    # the excluded tags are exactly per-run ones: each side has its own run id
    for side in (worker, container):
        assert re.fullmatch(r"models:/m-[0-9a-f]{32}", side["per_run_tags"][tracking.TAG_MODEL_URI])
    assert worker["per_run_tags"]["airflow.run_id"] == f"manual__{NS}-worker"
    assert container["per_run_tags"]["airflow.run_id"] == f"manual__{NS}-container"


def test_container_run_has_the_workers_artifacts_and_nested_runs(compared):
    worker, container = compared["worker"], compared["container"]
    assert container["artifact_paths"] == worker["artifact_paths"]
    assert {"metrics.json", "params.yaml", "schema.json", "search.json", "baseline/profile.json"} <= set(
        worker["artifact_paths"]
    )
    assert container["artifact_sha256"] == worker["artifact_sha256"]
    assert container["candidates"] == worker["candidates"] and len(worker["candidates"]) == 3


def test_container_model_has_the_workers_signature_files_and_requirements(compared):
    worker, container = compared["worker"], compared["container"]
    assert container["signature"] == worker["signature"]
    assert container["fitted_model"] == worker["fitted_model"] and len(worker["fitted_model"]["arrays"]) >= 4
    assert set(container["model_files"]) == set(worker["model_files"])
    assert container["model_files"] == worker["model_files"]
    # the interpreter: the same minor release; the patch release is the one recorded difference
    assert {p.rsplit("=", 1)[1][:4] for p in worker["python"] + container["python"]} == {"3.11"}


def test_the_step_returns_the_same_summary_on_either_runner(trained):
    worker, container = dict(trained["worker"]), dict(trained["container"])
    for per_run in ("mlflow_run_id", "model_uri", "run_id"):
        assert worker.pop(per_run) != container.pop(per_run)
    assert container == worker


def test_a_retried_container_step_reuses_the_complete_run(trained, synced):
    again = retrain.train(synced, dag_id=DAG_ID, run_id=f"manual__{NS}-container", runner="container")
    first = trained["container"]
    assert (again["mlflow_run_id"], again["model_uri"]) == (first["mlflow_run_id"], first["model_uri"])
    # a reused run reports every metric it holds (metrics.json's plus train_rows, best_cv_score), as on the worker
    assert first["metrics"].items() <= again["metrics"].items()
    assert {k: v for k, v in again.items() if k != "metrics"} == {k: v for k, v in first.items() if k != "metrics"}
    cl = tracking.client()
    cfg = retrain.run_config(synced)
    runs = tracking.find_runs(cl, cfg, {tracking.TAG_RUN_ID: f"manual__{NS}-container"})
    assert [r.info.run_id for r in runs] == [trained["container"]["mlflow_run_id"]]


def test_a_failing_container_raises_and_is_removed(trained, synced):
    bad = {**synced, "data_version": "0" * 32}  # no such DVC object: the pull in the container fails
    request = train_runner.TrainRequest(synced=bad, dag_id=DAG_ID, run_id=f"bad__{NS}", git_sha=settings.git_sha())
    with pytest.raises(train_runner.TrainContainerFailed, match=r"exited 1") as err:
        train_runner.train_in_container(request)
    assert "0" * 32 in str(err.value) or "train step failed" in str(err.value)
    left = docker.from_env().containers.list(all=True, filters={"name": f"flightdeck-train-{request.token}"})
    assert left == []
