"""S3 (SeaweedFS) SIGKILLed in the middle of the retrain's `dvc push`, then restarted through the supervisor:
the data sync fails naming S3, its re-run (what Airflow's retry of `sync_data` calls: retrain.sync_data)
finishes, and the DVC remote holds every object of the new data version exactly once, intact.

The kill is placed deterministically: the test wraps s3fs' object upload (what `dvc push` calls per
object) so that S3 is killed when the push starts its first upload, after DVC has compared the local
cache with the remote. A batch of unique rows is landed so the push has new objects to send.

Counts: objects under the DVC remote prefix before the sync, after the failed push and after the re-run:
after == before + the new md5 objects of the data version (no duplicate, no stray object), and each
expected object is present and its content hashes to its md5 (nothing lost or truncated).
"""

from __future__ import annotations

import hashlib
import time
import uuid

import numpy as np
import pytest

from flightdeck import pipeline_config, retrain
from flightdeck.data import generate
from flightdeck.data.store import ObjectStore
from flightdeck.data.sync import prefixes
from flightdeck.reachability import ServiceUnavailable
from tests.support import faults

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

NS = f"fault-s3-{uuid.uuid4().hex[:8]}"
DVC_PREFIX = "dvcstore/"


def _remote_objects(store: ObjectStore) -> list[str]:
    from flightdeck import s3

    client = s3.client()
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=DVC_PREFIX):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def _md5_key(md5: str) -> str:
    return f"{DVC_PREFIX}files/md5/{md5[:2]}/{md5[2:]}"


def _land_unique_batch(cfg: pipeline_config.DatasetConfig, store: ObjectStore) -> str:
    """Batch 1 of the dataset with a unique tiny perturbation: bytes no other run pushed."""
    batch = generate.good_batch(cfg, 1)
    features = [c for c in batch.columns if c != cfg.target]
    rng = np.random.default_rng(uuid.uuid4().int % 2**32)
    batch[features] = batch[features] * (1.0 + rng.uniform(0, 1e-6, size=(len(batch), len(features))))
    key = f"{prefixes(cfg.key)['landing']}batch-0001.csv"
    store.write(key, generate.to_csv_bytes(batch), metadata={"kind": "good", "seq": "1"})
    return key


@pytest.fixture
def kill_s3_on_first_upload(monkeypatch):
    """Wrap s3fs' per-object upload: the first call SIGKILLs S3 (through the supervisor's Service), then
    uploads into the dead server. Yields the list of object paths the push tried while S3 was dead."""
    import s3fs.core

    original = s3fs.core.S3FileSystem._put_file
    tried: list[str] = []

    async def put_file(self, lpath, rpath, *args, **kwargs):
        if not tried:
            faults.kill("s3")
        tried.append(str(rpath))
        return await original(self, lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(s3fs.core.S3FileSystem, "_put_file", put_file)
    yield tried
    monkeypatch.setattr(s3fs.core.S3FileSystem, "_put_file", original)


def test_dvc_push_killed_by_an_s3_crash_is_rerun_without_loss_or_duplicates(platform, kill_s3_on_first_upload):
    t0 = time.monotonic()
    cfg = pipeline_config.load("breast_cancer", model_name=f"fault-{NS}", namespace=NS)
    store = ObjectStore()
    _land_unique_batch(cfg, store)
    before = _remote_objects(store)
    assert len(before) == len(set(before))

    try:
        with pytest.raises(ServiceUnavailable) as failed:
            retrain.sync_data("breast_cancer", model_name=f"fault-{NS}", namespace=NS)
    finally:
        restarted_in = faults.restart("s3")  # restore S3 whatever the push did
    tried_dead = list(kill_s3_on_first_upload)  # uploads attempted into the dead S3
    assert tried_dead, "dvc push never uploaded: the fault was not exercised"
    assert "dvc push" in str(failed.value) and "S3" in str(failed.value), failed.value
    after_fault = _remote_objects(store)
    assert set(after_fault) >= set(before)  # the crash lost nothing that was there

    # the re-run: exactly what Airflow's retry of sync_data runs
    synced = retrain.sync_data("breast_cancer", model_name=f"fault-{NS}", namespace=NS)
    after = _remote_objects(store)

    expected = {_md5_key(synced["data_version"]), _md5_key(synced["holdout_version"])}
    new = set(after) - set(before)
    print(
        f"\nDVC remote objects: before {len(before)}, after the killed push {len(after_fault)} "
        f"(+{len(set(after_fault) - set(before))}), after the re-run {len(after)} (+{len(new)}); "
        f"expected objects {sorted(expected)}; S3 restarted in {restarted_in:.1f} s; "
        f"uploads tried into the dead S3: {len(tried_dead)} ({sorted(set(tried_dead))}); "
        f"test {time.monotonic() - t0:.1f} s"
    )
    assert synced["new_batches"] == [f"{prefixes(cfg.key)['landing']}batch-0001.csv"]
    assert len(after) == len(set(after))
    assert new <= expected, f"objects that are not the data version's: {sorted(new - expected)}"
    assert len(after) == len(before) + len(expected - set(before))
    assert _md5_key(synced["data_version"]) in new  # the unique batch made a new dataset object
    from flightdeck import s3

    client = s3.client()
    for key in sorted(expected):
        body = client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
        md5 = key.removeprefix(f"{DVC_PREFIX}files/md5/").replace("/", "")
        assert hashlib.md5(body).hexdigest() == md5, f"{key}: content does not hash to its md5"
