"""Deployment records in the real local S3 (SeaweedFS), the format the UI/CLI reads."""

from __future__ import annotations

import json
import uuid

import pytest

from flightdeck.deploy import records as rec

pytestmark = pytest.mark.integration


@pytest.fixture()
def store(platform):
    from flightdeck import s3

    return rec.RecordStore(s3.client(), platform.deploy_bucket)


def test_record_lifecycle_in_s3(store):
    target = f"test-{uuid.uuid4().hex[:8]}"
    run_id = f"manual__{uuid.uuid4()}"
    dep = rec.deployment_id(run_id)
    store.create(rec.DeploymentSpec(dep, target, run_id))
    model = rec.ModelInfo(name="m", version="3", alias="", run_id="", data_version="")
    store.update(target, dep, step="resolve", detail={"status": "ok"}, model=model)
    assert store.get(target, dep).outcome is rec.Outcome.IN_PROGRESS
    r = store.update(
        target,
        dep,
        step="rollback",
        detail={"status": "ok"},
        outcome=rec.Outcome.ROLLED_BACK,
        rollback=rec.RollbackInfo(reason="5xx rate 40%", failed_step="bake", at=rec.now_iso(), restored={"v2": 100}),
        event=rec.Event(rec.EventKind.ROLLED_BACK, rec.now_iso(), reason="5xx rate 40%"),
    )
    assert [s["step"] for s in r.status.steps] == ["resolve", "rollback"]
    again = store.get(target, dep)
    assert again == r and again.status.model["version"] == "3"
    assert [e.kind.value for e in again.status.events] == ["started", "rolled_back"]
    current = json.loads(store.s3.get_object(Bucket=store.bucket, Key=f"current/{target}.json")["Body"].read())
    assert current["schema"] == rec.SCHEMA == 2 and current["spec"]["deployment_id"] == dep
    assert current["status"]["rollback"]["failed_step"] == "bake" and store.current(target) == again
    assert [x.deployment_id for x in store.list(target)] == [dep]
    assert store.get(target, "no-such-run") is None
    for key in (store.key(target, dep), f"current/{target}.json"):
        store.s3.delete_object(Bucket=store.bucket, Key=key)
