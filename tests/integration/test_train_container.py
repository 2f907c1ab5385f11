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
    "mlflow.source.git.commit": "MLflow's guess from the entry point's folder (absent in the image, no .git); "
    "the lineage's commit is our git_sha tag, compared",
    "mlflow.log-model.history": "the logged model's id, uuid and creation time",
}
# MLmodel fields that are per logged model.
PER_RUN_MODEL_FIELDS = {
    "run_id": "the MLflow run",
    "model_uuid": "a fresh uuid per logged model",
    "model_id": "the logged model's id (m-...)",
    "utc_time_created": "when it was logged",
    "artifact_path": "MLflow 3 stores the logged model under its id",
}


@pytest.fixture(scope="module")
def synced(platform, tmp_path_factory):
    """New data landed in a private namespace, synced and through the data gate (what train gets)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTDECK_STATE_DIR", str(tmp_path_factory.mktemp("worker-state")))
        cfg = pipeline_config.load("breast_cancer", model_name=MODEL, namespace=NS)
        land.land(cfg, ObjectStore())
        out = retrain.sync_data("breast_cancer", model_name=MODEL, namespace=NS)
        assert retrain.has_changes(out) and retrain.check_data(out)
        yield out


@pytest.fixture(scope="module")
def trained(synced):
    """The step on the worker, then in a container, each as its own dag run on the same synced data."""
    on_worker = retrain.train(synced, dag_id=DAG_ID, run_id=f"worker__{NS}", runner="worker")
    in_container = retrain.train(synced, dag_id=DAG_ID, run_id=f"container__{NS}", runner="container")
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


def _contents(cl, run_id: str, model_uri: str, dest: Path) -> dict[str, Any]:
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
        else:
            model[name] = _sha(str(path))
    info = mlflow.models.get_model_info(model_uri)
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
        "model_files": model,
        "python": sorted(python),
    }


@pytest.fixture(scope="module")
def compared(trained, synced, tmp_path_factory):
    cl = tracking.client()
    sides = {
        side: _contents(cl, out["mlflow_run_id"], out["model_uri"], tmp_path_factory.mktemp(side))
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
    assert tags[tracking.TAG_GIT_SHA] == settings.git_sha() != "unknown"
    assert tags[tracking.TAG_DAG_ID] == DAG_ID and tags[tracking.TAG_COMPLETE] == "true"
    assert tags[tracking.TAG_NAMESPACE] == NS and tags[tracking.TAG_PARAMS_HASH] == synced["params_hash"]
    # the excluded tags are exactly per-run ones: each side has its own run id
    assert worker["per_run_tags"]["airflow.run_id"] == f"worker__{NS}"
    assert container["per_run_tags"]["airflow.run_id"] == f"container__{NS}"


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
    again = retrain.train(synced, dag_id=DAG_ID, run_id=f"container__{NS}", runner="container")
    assert again == trained["container"]
    cl = tracking.client()
    cfg = retrain.run_config(synced)
    runs = tracking.find_runs(cl, cfg, {tracking.TAG_RUN_ID: f"container__{NS}"})
    assert [r.info.run_id for r in runs] == [trained["container"]["mlflow_run_id"]]


def test_a_failing_container_raises_and_is_removed(trained, synced):
    bad = {**synced, "data_version": "0" * 32}  # no such DVC object: the pull in the container fails
    request = train_runner.TrainRequest(synced=bad, dag_id=DAG_ID, run_id=f"bad__{NS}", git_sha=settings.git_sha())
    with pytest.raises(train_runner.TrainContainerFailed, match=r"exited 1") as err:
        train_runner.train_in_container(request)
    assert "0" * 32 in str(err.value) or "train step failed" in str(err.value)
    left = docker.from_env().containers.list(all=True, filters={"name": f"flightdeck-train-{request.token}"})
    assert left == []
