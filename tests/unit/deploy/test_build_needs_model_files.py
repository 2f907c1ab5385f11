"""A registered version without model files fails the build at once, naming the missing MLmodel.

MLflow's download_artifacts returns an empty folder without an error for such a version; before this
check the image was built and pushed without a model and the deploy failed only at the health timeout.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flightdeck import images
from flightdeck.deploy import records as rec
from flightdeck.deploy.steps import Deploy

MODEL = images.ModelRef(name="fd-unit-empty", version="3", run_id="r1")


class UntouchableDocker:
    """A Docker client that fails the test if the build step asks the engine anything."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the Docker engine was asked for {name!r}: nothing may be built or pushed")


class MemoryRecords(rec.RecordStore):
    """The deployment record store over a dict of JSON documents instead of S3 (same create/update logic)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict] = {}
        self.bucket = "memory"

    def get(self, target: str, dep_id: str) -> rec.DeploymentRecord | None:
        doc = self.docs.get(self.key(target, dep_id))
        return rec.DeploymentRecord.from_json(doc) if doc else None

    def put(self, record: rec.DeploymentRecord, *, publish: bool = True) -> None:
        self.docs[self.key(record.target, record.deployment_id)] = record.to_json()


@pytest.fixture
def empty_download(monkeypatch, tmp_path):
    """mlflow.artifacts.download_artifacts as MLflow behaves for a version with no files: an empty folder."""
    import mlflow.artifacts

    calls: list[str] = []

    def download(uri: str, dst_path: str | None = None, **kwargs: Any) -> str:
        calls.append(uri)
        Path(dst_path).mkdir(parents=True, exist_ok=True)
        return dst_path

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download)
    return calls


def test_download_of_a_version_without_files_names_the_missing_mlmodel(empty_download, tmp_path):
    with pytest.raises(images.ModelFilesMissing, match=r"fd-unit-empty v3 has no model files: no `MLmodel`"):
        images.download_model(MODEL, tmp_path / "dl", tracking_uri="http://127.0.0.1:9")
    assert empty_download == ["models:/fd-unit-empty/3"]


def test_a_folder_with_other_files_but_no_mlmodel_is_refused_and_listed(tmp_path):
    (tmp_path / "model.pkl").write_bytes(b"x")
    with pytest.raises(images.ModelFilesMissing, match=r"only \['model.pkl'\]"):
        images.check_model_dir(tmp_path, MODEL)


def test_build_image_refuses_a_model_dir_without_mlmodel_before_asking_docker(tmp_path):
    with pytest.raises(images.ModelFilesMissing, match="MLmodel"):
        images.build_image(MODEL, registry="127.0.0.1:5050", model_dir=tmp_path, client=UntouchableDocker())


def test_a_model_dir_with_mlmodel_passes_the_check(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    assert images.check_model_dir(tmp_path, MODEL) == tmp_path


def test_deploy_build_step_fails_within_seconds_and_rollback_starts_nothing(empty_download, monkeypatch):
    """The deploy flow's build step: fails fast with the reason in the record; rollback has nothing to undo."""
    monkeypatch.setattr(images.docker, "from_env", lambda: UntouchableDocker())
    store = MemoryRecords()
    params = {"target": "local", "model": "3", "model_name": MODEL.name}
    d = Deploy("manual__unit_empty", params, store=store, backend=object(), tracking_uri="http://127.0.0.1:9")
    store.create(rec.DeploymentSpec(d.dep_id, "local", d.run_id, params=d.p))
    store.update(
        "local", d.dep_id, model=rec.ModelInfo(name=MODEL.name, version="3", alias="", run_id="r1", data_version="")
    )
    start = time.monotonic()
    with pytest.raises(images.ModelFilesMissing, match="MLmodel"):
        d.build()
    assert time.monotonic() - start < 5
    record = store.get("local", d.dep_id)
    assert record.status.failure is not None
    assert "no `MLmodel`" in record.status.failure["reason"] and record.status.failure["step"] == "build"
    assert record.status.image is None
    out = d.rollback(failed_tasks=["build"])
    assert out["restored"] is None and "no `MLmodel`" in out["reason"]
    after = store.get("local", d.dep_id)
    assert after.outcome is rec.Outcome.FAILED
    assert [e.kind for e in after.status.events] == [rec.EventKind.STARTED, rec.EventKind.FAILED]


def test_deploy_dag_build_task_does_not_retry_missing_model_files(empty_download, monkeypatch):
    """The DAG turns ModelFilesMissing into a failure without retries: rollback runs at once."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import AirflowFailException

    dags = Path(__file__).resolve().parents[3] / "dags"
    dag = DagBag(dag_folder=str(dags / "deploy.py")).dags["deploy"]
    task = dag.get_task("build")
    module = sys.modules[task.python_callable.__module__]

    store = MemoryRecords()
    real = module.Deploy

    def in_memory(run_id: str, params: dict) -> Deploy:  # the task's Deploy, on records in memory
        return real(run_id, params, store=store, backend=object(), tracking_uri="http://127.0.0.1:9")

    params = {"target": "local", "model": "3", "model_name": MODEL.name}
    d = in_memory("manual__x", params)
    store.create(rec.DeploymentSpec(d.dep_id, "local", d.run_id, params=d.p))
    store.update(
        "local", d.dep_id, model=rec.ModelInfo(name=MODEL.name, version="3", alias="", run_id="r1", data_version="")
    )
    monkeypatch.setattr(images.docker, "from_env", lambda: UntouchableDocker())
    monkeypatch.setattr(module, "Deploy", in_memory)
    assert task.retries == 2  # build retries other errors; this one it must not
    with pytest.raises(AirflowFailException, match="no `MLmodel`"):
        task.python_callable(params=params, run_id="manual__x")
