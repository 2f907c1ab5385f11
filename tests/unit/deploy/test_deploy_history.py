"""The deployment record's contracts and the history event log, on the deploy steps themselves.

Records live in an in-process S3 (moto); the target is an in-memory backend with the Backend protocol's
methods (the local and ECS backends are covered by the integration tests). A deploy of a given, pinned
image needs neither MLflow nor Docker, so every step runs as the DAG runs it, one call per task.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping

import pytest

from flightdeck.deploy import records as rec
from flightdeck.deploy.backend import RevisionSpec, RollNotSupported, RollSpec, TargetHealth
from flightdeck.deploy.params import DEFAULTS, DeployParams, InvalidParams
from flightdeck.deploy.steps import Deploy, StepNotInPlan

BUCKET = "deployments"


class MemoryBackend:
    """A target in memory: revisions, their specs and the traffic split; every target healthy."""

    name = "memory"
    rolls_in_place = False

    def __init__(self) -> None:
        self.split: dict[str, int] = {}
        self.specs: dict[str, RevisionSpec] = {}

    def start_revision(self, spec: RevisionSpec) -> None:
        self.specs[spec.revision] = spec
        self.split.setdefault(spec.revision, 0)

    def target_health(self, revision: str) -> TargetHealth:
        up = 1 if revision in self.split else 0
        return TargetHealth(revision=revision, total=1, healthy=up)

    def set_weights(self, weights: Mapping[str, int], standby: Collection[str] = ()) -> None:
        self.split.update(weights)

    def stop_revision(self, revision: str) -> None:
        self.split.pop(revision, None)

    def weights(self) -> dict[str, int]:
        return dict(self.split)

    def spec(self, revision: str) -> RevisionSpec | None:
        return self.specs.get(revision)

    def prepare_roll(self, spec: RevisionSpec) -> RollSpec:
        raise RollNotSupported("memory target")

    def roll_back(self, roll: RollSpec) -> None:
        raise RollNotSupported("memory target")


STEPS = ("resolve", "build", "push", "register", "start_new", "wait_healthy")


def deploy(store: rec.RecordStore, backend: MemoryBackend, run_id: str, digest: str, *, from_step: str = "resolve"):
    """Run a deploy's tasks in DAG order (blue/green, no bake) from `from_step`, as Airflow calls them."""
    params = {"model": "none", "image": f"reg:5050/m@sha256:{digest}", "bake_seconds": 0, "model_name": "m"}
    d = Deploy(run_id, params, store=store, backend=backend, tracking_uri="http://127.0.0.1:9")
    steps = [Deploy.resolve, Deploy.build, Deploy.push, Deploy.register, Deploy.start_new, Deploy.wait_healthy]
    for step in steps[STEPS.index(from_step) :]:
        step(d)
    for i in range(1, 5):
        try:
            Deploy.shift(d, i)
        except StepNotInPlan:
            pass
    Deploy.bake(d)
    Deploy.finalize(d)
    return Deploy.outcome(d)


def kinds(record: rec.DeploymentRecord) -> list[str]:
    return [e.kind.value for e in record.status.events]


def test_a_deploy_writes_a_schema_2_record_spec_once_and_the_status_per_step(store):
    backend = MemoryBackend()
    out = deploy(store, backend, "manual__a", "a" * 64)
    assert out["outcome"] == "succeeded" and backend.weights() == {out["revision"]: 100}
    doc = json.loads(store.s3.get_object(Bucket=BUCKET, Key="records/local/manual__a.json")["Body"].read())
    assert doc["schema"] == rec.SCHEMA == 2 and set(doc) == {"schema", "spec", "status"}
    assert doc["spec"]["params"]["image"].endswith("a" * 64) and doc["spec"]["strategy"] == "blue_green"
    record = rec.DeploymentRecord.from_json(doc)
    assert record.outcome is rec.Outcome.SUCCEEDED and record.spec.params.bake_seconds == 0
    assert record.status.revision_spec is not None and record.status.revision == record.status.revision_spec.revision
    assert record.status.plan == [100] and record.status.previous is not None
    steps = ["resolve", "build", "register", "start_new", "wait_healthy", "shift_1", "bake", "finalize"]
    assert [s["step"] for s in record.status.steps] == steps  # a given image is pinned by build: no push
    assert kinds(record) == ["started", "live"]
    assert store.current("local").deployment_id == "manual__a"  # current/<target>.json: the last finished deploy


def test_step_payloads_are_json_with_named_keys(store):
    backend = MemoryBackend()
    d = Deploy("manual__p", {"model": "none", "image": "reg:5050/m@sha256:" + "c" * 64}, store=store, backend=backend)
    model = d.resolve()
    assert set(model) == {"name", "version", "alias", "run_id", "data_version"} and model["version"] == "0"
    image = d.build()
    assert image["pinned"] == "reg:5050/m@sha256:" + "c" * 64 and d.push() == image
    spec = d.register()
    assert set(spec) == set(RevisionSpec.__dataclass_fields__) - {"scaling"}  # autoscaling: AWS targets only
    snap = d.start_new()
    assert snap == {"weights": {}, "specs": {}}
    assert d.wait_healthy() == {"healthy": 1}
    assert d.shift(1) == {"weights": {spec["revision"]: 100}}
    for payload in (model, image, spec, snap):
        assert json.loads(json.dumps(payload)) == payload


def test_redeploying_an_older_run_is_a_new_event_and_the_run_it_displaced_reads_replaced(store):
    """Roll back by clearing an older run's start_new: history shows the re-run at its new time, and the
    newer run it displaced as replaced by it, at that time."""
    backend = MemoryBackend()
    deploy(store, backend, "manual__a", "a" * 64)
    deploy(store, backend, "manual__b", "b" * 64)
    a, b = store.get("local", "manual__a"), store.get("local", "manual__b")
    assert kinds(a) == ["started", "live", "replaced"] and a.status.events[-1].by == "manual__b"
    assert kinds(b) == ["started", "live"] and b.status.serving and not a.status.serving

    deploy(store, backend, "manual__a", "a" * 64, from_step="start_new")  # `flightdeck rollback` clears this
    a, b = store.get("local", "manual__a"), store.get("local", "manual__b")
    assert kinds(a) == ["started", "live", "replaced", "restarted", "live"]
    assert kinds(b) == ["started", "live", "replaced"]
    replaced = b.status.events[-1]
    assert (replaced.by, replaced.by_run_id) == ("manual__a", "manual__a")
    assert replaced.at >= a.status.events[-2].at  # replaced when the re-run went live, not at its first start
    assert a.status.serving and not b.status.serving
    assert backend.weights() == {a.status.revision: 100}

    log = rec.events(store.list("local"))  # newest first
    assert [(e.kind.value, r.deployment_id) for e, r in log] == [
        ("replaced", "manual__b"),
        ("live", "manual__a"),
        ("restarted", "manual__a"),
        ("replaced", "manual__a"),
        ("live", "manual__b"),
        ("started", "manual__b"),
        ("live", "manual__a"),
        ("started", "manual__a"),
    ]
    assert [e.at for e, _ in log] == sorted((e.at for e, _ in log), reverse=True)


def test_history_rows_and_the_cli_show_the_event_log(store):
    from flightdeck import cli, lineage

    backend = MemoryBackend()
    deploy(store, backend, "manual__a", "a" * 64)
    deploy(store, backend, "manual__b", "b" * 64)
    deploy(store, backend, "manual__a", "a" * 64, from_step="start_new")
    rows = lineage.history(store, "local", "http://af:8080")
    assert [(r["event"], r["run_id"]) for r in rows[:3]] == [
        ("replaced", "manual__b"),
        ("live", "manual__a"),
        ("restarted", "manual__a"),
    ]
    assert rows[0]["by_run_id"] == "manual__a" and rows[0]["outcome"] == "succeeded"
    text = cli.render_history(rows).splitlines()
    assert "replaced" in text[0] and "manual__b  by manual__a" in text[0]
    assert "restarted" in text[2] and "manual__a" in text[2]
    assert len(lineage.history(store, "local", "http://af:8080", limit=2)) == 2


def test_a_failed_deploy_is_rolled_back_and_the_live_run_keeps_serving(store, monkeypatch):
    backend = MemoryBackend()
    deploy(store, backend, "manual__a", "a" * 64)
    d = Deploy("manual__bad", {"model": "none", "image": "reg:5050/m@sha256:" + "d" * 64}, store=store, backend=backend)
    for step in (Deploy.resolve, Deploy.build, Deploy.push, Deploy.register, Deploy.start_new):
        step(d)
    monkeypatch.setattr(backend, "target_health", lambda revision: TargetHealth(revision, 1, 0))
    d.p = DeployParams.from_dict({**d.p.to_dict(), "healthy_timeout_seconds": 0})
    with pytest.raises(Exception, match="not healthy"):
        d.wait_healthy()
    monkeypatch.undo()
    out = d.rollback(failed_tasks=["wait_healthy"])
    bad, a = store.get("local", "manual__bad"), store.get("local", "manual__a")
    assert out["reason"].startswith("revision") and bad.outcome is rec.Outcome.ROLLED_BACK
    assert kinds(bad) == ["started", "rolled_back"] and bad.status.events[-1].reason == out["reason"]
    assert kinds(a) == ["started", "live"] and a.status.serving  # not replaced: it never stopped serving
    assert rec.served_models(store.current("local")) == [{"name": "m", "version": "0", "run_id": "manual__a"}]


def test_a_schema_1_record_is_read_and_upgraded_on_the_next_write(store):
    """Existing buckets hold schema-1 records (one flat dict): they read as typed records, with a history
    rebuilt from their timestamps, and are written back as schema 2."""
    old = {
        "schema": 1,
        "deployment_id": "manual__old",
        "target": "local",
        "dag_id": "deploy",
        "run_id": "manual__old",
        "started_at": "2026-01-01T00:00:00.000000Z",
        "updated_at": "2026-01-01T00:01:00.000000Z",
        "finished_at": "2026-01-01T00:01:00.000000Z",
        "outcome": "rolled_back",
        "strategy": "canary",
        "params": {"strategy": "canary", "canary_percent": 20, "target": "local", "model": "3", "model_name": "m"},
        "model": {"name": "m", "version": "3", "alias": "", "run_id": "r3", "data_version": "md5"},
        "image": {"pinned": "reg/m@sha256:x", "digest": "sha256:x", "tag": "reg/m:v3"},
        "spec": {"revision": "v3-abc", "image": "reg/m@sha256:x", "model_name": "m", "model_version": "3"},
        "revision": "v3-abc",
        "plan": [20, 100],
        "previous": {"weights": {"v2-def": 100}, "specs": {"v2-def": {"model_name": "m", "model_version": "2"}}},
        "rollback": {"reason": "5xx", "failed_step": "bake", "at": "x", "restored": {"v2-def": 100}},
        "failure": {"step": "bake", "reason": "5xx", "at": "x"},
        "steps": [{"step": "resolve", "at": "x", "status": "ok"}],
    }
    store.s3.put_object(Bucket=BUCKET, Key="records/local/manual__old.json", Body=json.dumps(old).encode())
    r = store.get("local", "manual__old")
    assert r.spec.params.canary_percent == 20 and r.spec.strategy == "canary" and r.spec.params.model == "3"
    assert r.outcome is rec.Outcome.ROLLED_BACK and r.status.revision_spec.revision == "v3-abc"
    assert r.status.previous.weights == {"v2-def": 100} and r.status.model["version"] == "3"
    assert [(e.kind.value, e.at, e.reason) for e in r.status.events] == [
        ("started", "2026-01-01T00:00:00.000000Z", ""),
        ("rolled_back", "2026-01-01T00:01:00.000000Z", "5xx"),
    ]
    assert rec.served_models(r) == [{"name": "m", "version": "2", "run_id": ""}]
    store.update("local", "manual__old", step="note", detail={"status": "ok"})
    doc = json.loads(store.s3.get_object(Bucket=BUCKET, Key="records/local/manual__old.json")["Body"].read())
    assert doc["schema"] == 2 and doc["status"]["revision_spec"]["revision"] == "v3-abc"
    assert rec.DeploymentRecord.from_json(doc).status.events == r.status.events


def test_a_document_that_is_not_a_record_is_left_out_of_the_history(store):
    deploy_run = MemoryBackend()
    deploy(store, deploy_run, "manual__a", "a" * 64)
    store.s3.put_object(Bucket=BUCKET, Key="records/local/junk.json", Body=b'{"schema": 2, "spec": {}}')
    assert [r.deployment_id for r in store.list("local")] == ["manual__a"]


def test_status_fields_are_typed_names(store):
    store.create(rec.DeploymentSpec("manual__t", "local", "manual__t"))
    with pytest.raises(TypeError):
        store.update("local", "manual__t", no_such_field=1)
    with pytest.raises(LookupError):
        store.update("local", "manual__missing", outcome=rec.Outcome.FAILED)


def test_params_validate_and_fill_the_model_name():
    p = DeployParams.resolve({"strategy": "canary", "canary_steps": 2, "model_name": "", "unknown": 1})
    assert p.model_name and p.strategy == "canary" and p.thresholds().min_requests == DEFAULTS.min_requests
    for bad in ({"strategy": "big_bang"}, {"target": "mars"}, {"canary_steps": 9}):
        with pytest.raises(InvalidParams):
            DeployParams.resolve(bad)


def test_the_dag_param_defaults_are_deploy_params_defaults():
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    dags = Path(__file__).resolve().parents[3] / "dags"
    dag = DagBag(dag_folder=str(dags / "deploy.py")).dags["deploy"]
    assert {name: dag.params[name] for name in dag.params} == DEFAULTS.to_dict()


def test_the_dag_calls_each_step_by_reference():
    """Each task's callable runs the Deploy method it is named for (shift tasks with their own index)."""
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    dags = Path(__file__).resolve().parents[3] / "dags"
    dag = DagBag(dag_folder=str(dags / "deploy.py")).dags["deploy"]
    seen = {}
    for task_id in ("resolve", "build", "push", "register", "start_new", "wait_healthy", "bake", "finalize"):
        fn = dag.get_task(task_id).python_callable
        cells = {c.cell_contents for c in fn.__closure__ or ()} if fn.__closure__ else set()
        seen[task_id] = getattr(Deploy, task_id) in cells
    assert all(seen.values()), seen
    for i in range(1, 5):
        cells = [c.cell_contents for c in dag.get_task(f"shift_{i}").python_callable.__closure__]
        assert Deploy.shift in cells and (i,) in cells
