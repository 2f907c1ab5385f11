"""The drift check of landed training batches against the dataset's holdout (issue 11, item 5), on the batches
the platform generates for the bundled breast cancer table: a degraded batch, which passes the structural
checks, is flagged; the first normal batches are not."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from flightdeck import pipeline_config
from flightdeck.data import generate
from flightdeck.data.schema import coerce_trusted, infer
from flightdeck.data.validate import validate_batch
from flightdeck.monitoring import batch_check
from flightdeck.monitoring.config import BatchCheckAction, MonitorConfig
from flightdeck.monitoring.drift import DriftReport, Status


@pytest.fixture(scope="module")
def cfg():
    return pipeline_config.load("breast_cancer")


@pytest.fixture(scope="module")
def schema(cfg):
    return infer(generate.load_source(cfg), cfg.target, cfg.task)


@pytest.fixture(scope="module")
def reference(cfg, schema):
    return batch_check.reference_profile(coerce_trusted(generate.holdout(cfg), schema), schema)


def _validated(frame, schema):
    """The batch as sync sees it: CSV bytes through the structural checks, typed."""
    check = validate_batch("landing/b.csv", generate.to_csv_bytes(frame), schema)
    assert check.ok, check.reason
    return check.frame


def test_reference_profiles_every_feature_and_the_target_as_classes(reference, schema, cfg):
    assert [f.name for f in reference.features] == [*[c.name for c in schema.features], cfg.target]
    target = reference.feature(cfg.target)
    assert target.type == "categorical" and set(target.categories) == {"0", "1"}
    assert all(len(f.sample) == len(generate.holdout(cfg)) for f in reference.features[:-1])


@pytest.mark.parametrize("seq", [1, 2, 3, 4])
def test_the_first_normal_batches_are_not_flagged(cfg, schema, reference, seq):
    report = batch_check.check(_validated(generate.good_batch(cfg, seq), schema), reference, schema, MonitorConfig())
    assert not report.flagged and report.drifted_features == [], report.drifted_features


@pytest.mark.parametrize("seq", [1, 2])
def test_a_degraded_batch_that_passes_the_structural_checks_is_flagged(cfg, schema, reference, seq):
    report = batch_check.check(
        _validated(generate.degraded_batch(cfg, seq), schema), reference, schema, MonitorConfig()
    )
    assert report.status is Status.DRIFT and report.flagged
    shifted = set(generate.degraded_batch(cfg, seq).columns[:-1][::2])  # the features the generator shifts
    assert len(report.drifted_features) >= 10 and set(report.drifted_features) <= shifted | {cfg.target}


def test_a_batch_below_min_rows_is_not_judged(cfg, schema, reference):
    small = _validated(generate.degraded_batch(cfg, 1).head(20), schema)
    report = batch_check.check(small, reference, schema, MonitorConfig(min_rows=30))
    assert report.status is Status.INSUFFICIENT_DATA and not report.flagged


def test_summary_and_sync_record_name_the_drifted_features(cfg, schema, reference):
    monitor = replace(MonitorConfig(), batch_check=BatchCheckAction.QUARANTINE)
    report = batch_check.check(_validated(generate.degraded_batch(cfg, 1), schema), reference, schema, monitor)
    line = batch_check.summary("landing/breast_cancer/batch-0005.csv", report, "holdout abc")
    assert line.startswith("drift check of landing/breast_cancer/batch-0005.csv (427 rows) against the holdout abc: ")
    assert all(f"{name} (PSI " in line for name in report.drifted_features) and "\n" not in line
    entry = batch_check.flagged_entry("k", report, monitor, "holdout abc")
    assert entry == {
        "key": "k",
        "status": "drift",
        "drifted_features": report.drifted_features,
        "violations": [],
        "action": "quarantine",
        "reference": "holdout abc",
    }
    assert DriftReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
