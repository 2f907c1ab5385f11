"""The drift check of landed batches (issue 11, item 5) through sync against the real S3 (SeaweedFS) and DVC
remote, in an isolated namespace: normal batches are merged unflagged; a degraded batch, which passes the
structural checks, is flagged: quarantined with its drift report (the dataset's version unchanged) under
`monitor.batch_check: quarantine`, merged with a warning under `warn`."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from flightdeck import pipeline_config
from flightdeck.data import land
from flightdeck.data import sync as data_sync
from flightdeck.monitoring.config import BatchCheckAction, MonitorConfig
from flightdeck.monitoring.drift import DriftReport, Status
from tests.support.object_store import private_store

pytestmark = pytest.mark.integration

NS = f"drift-{uuid.uuid4().hex[:8]}"
QUARANTINE = MonitorConfig(batch_check=BatchCheckAction.QUARANTINE)
WARN = MonitorConfig(batch_check=BatchCheckAction.WARN)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The real S3 (fails, never skips, when it is down) and a private state dir for the DVC workspace."""
    yield from private_store(tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def cfg(store):
    return pipeline_config.load("breast_cancer", namespace=NS)


@pytest.fixture(scope="module")
def normal(cfg, store):
    """Three normal batches landed and synced under `quarantine`, then committed."""
    keys = [land.land(cfg, store, seq=seq) for seq in (1, 2, 3)]
    synced = data_sync.sync(cfg, store, monitor=QUARANTINE)
    data_sync.commit(cfg, synced, store)
    return keys, synced


@pytest.fixture(scope="module")
def quarantined(cfg, store, normal):
    """A degraded batch landed after them and synced under `quarantine`, then committed."""
    key = land.land(cfg, store, kind="degraded", seq=4)
    before = data_sync.Manifest.read(store, cfg.key)
    synced = data_sync.sync(cfg, store, monitor=QUARANTINE)
    data_sync.commit(cfg, synced, store)
    return key, before, synced


def test_normal_batches_are_checked_against_the_holdout_and_merged_unflagged(normal):
    keys, synced = normal
    assert synced["drift_reference"] == f"holdout {synced['holdout_version']}"
    assert synced["drifted_batches"] == [] and synced["quarantined"] == []
    assert synced["new_batches"] == keys and synced["data_version"]


def test_a_degraded_batch_is_quarantined_with_its_report_and_the_version_is_unchanged(cfg, store, quarantined):
    key, before, synced = quarantined
    [flagged] = synced["drifted_batches"]
    assert flagged["key"] == key and flagged["action"] == "quarantine" and flagged["status"] == "drift"
    assert len(flagged["drifted_features"]) >= 10
    assert synced["new_batches"] == [] and synced["data_version"] == before.data_version
    assert data_sync.Manifest.read(store, cfg.key).data_version == before.data_version  # committed: unchanged
    assert key not in store.list(data_sync.prefixes(cfg.key)["landing"])
    [moved] = synced["quarantined"]
    assert moved["key"] == key and moved["to"].startswith(data_sync.prefixes(cfg.key)["quarantine"])
    summary, _, report_json = store.read(moved["to"] + ".reason.txt").decode().partition("\n")
    assert summary == moved["reason"] and "(monitor.batch_check: quarantine)" in summary
    report = DriftReport.from_dict(json.loads(report_json))
    assert report.status is Status.DRIFT and report.drifted_features == flagged["drifted_features"]
    assert all(name in summary for name in flagged["drifted_features"])


def test_with_warn_a_degraded_batch_is_merged_and_flagged_and_a_normal_one_is_not(cfg, store, quarantined, caplog):
    _, _, after_quarantine = quarantined
    good = land.land(cfg, store, seq=5)
    degraded = land.land(cfg, store, kind="degraded", seq=6)
    with caplog.at_level(logging.WARNING, logger="flightdeck.data.sync"):
        synced = data_sync.sync(cfg, store, monitor=WARN)
    assert synced["new_batches"] == [good, degraded]
    assert [(b["key"], b["action"]) for b in synced["drifted_batches"]] == [(degraded, "warn")]
    assert synced["data_version"] != after_quarantine["data_version"] and synced["quarantined"] == []
    warned = [r.getMessage() for r in caplog.records if "monitor.batch_check: warn: merged" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"drift check of {degraded} ")
