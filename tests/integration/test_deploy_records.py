"""Deployment records in the real local S3 (SeaweedFS), the format the UI/CLI reads."""

from __future__ import annotations

import json
import uuid

import pytest

from flightdeck.deploy import records as rec

pytestmark = pytest.mark.integration


@pytest.fixture()
def store(platform):
    from flightdeck.provisioning import s3_client

    return rec.RecordStore(s3_client(), platform.deploy_bucket)


def test_record_lifecycle_in_s3(store):
    target = f"test-{uuid.uuid4().hex[:8]}"
    dep = rec.deployment_id(f"manual__{uuid.uuid4()}")
    store.update(target, dep, step="resolve", detail={"status": "ok"}, model={"name": "m", "version": "3"})
    assert store.get(target, dep)["outcome"] == "in_progress"
    r = store.update(
        target,
        dep,
        step="rollback",
        detail={"status": "ok"},
        outcome="rolled_back",
        rollback={"reason": "5xx rate 40%", "failed_step": "bake", "restored": {"v2": 100}},
    )
    assert [s["step"] for s in r["steps"]] == ["resolve", "rollback"]
    again = store.get(target, dep)
    assert again == r and again["schema"] == rec.SCHEMA and again["model"]["version"] == "3"
    current = json.loads(store.s3.get_object(Bucket=store.bucket, Key=f"current/{target}.json")["Body"].read())
    assert current["deployment_id"] == dep and current["rollback"]["failed_step"] == "bake"
    assert [x["deployment_id"] for x in store.list(target)] == [dep]
    assert store.get(target, "no-such-run") is None
    for key in (store.key(target, dep), f"current/{target}.json"):
        store.s3.delete_object(Bucket=store.bucket, Key=key)
