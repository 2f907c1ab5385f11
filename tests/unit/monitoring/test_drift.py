"""Drift of a window against a baseline profile (issue 11, item 3): PSI on the baseline's bins plus a two-sample
test per type, data-quality checks, prediction drift, and the report's JSON round trip."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from flightdeck.data.schema import ColumnSpec, ColumnType, DatasetSchema, Task
from flightdeck.monitoring.baseline import DataProfile, profile_frame
from flightdeck.monitoring.config import DriftThresholds
from flightdeck.monitoring.drift import DriftReport, StatTest, Status, compare, judge

THRESHOLDS = DriftThresholds()
SHIFTED = ["mean_radius", "worst_texture"]


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """scikit-learn's bundled breast cancer table (569 rows, 30 numeric features), shuffled, with the column
    names the platform uses (spaces as underscores) and the label as `diagnosis`."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" ", "_")).rename(columns={"target": "diagnosis"})
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def schema(table) -> DatasetSchema:
    from flightdeck.data.schema import infer

    return infer(table, "diagnosis")


@pytest.fixture(scope="module")
def profile(table, schema) -> DataProfile:
    """The baseline of a model trained on the first 400 rows, its predictions being the labels."""
    train = table.iloc[:400]
    return profile_frame(train, schema, train["diagnosis"].astype(str).to_numpy())


def _live(table: pd.DataFrame, seed: int, rows: int = 300) -> pd.DataFrame:
    """A window of the same population: rows drawn from the table, with their labels as predictions."""
    window = table.sample(rows, replace=True, random_state=seed).reset_index(drop=True)
    return window.drop(columns="diagnosis").assign(prediction=window["diagnosis"])


@pytest.mark.parametrize("seed", range(6))
def test_a_window_of_the_same_population_has_no_drift(table, profile, seed):
    report = compare(_live(table, seed), profile, THRESHOLDS)
    assert report.status in (Status.OK, Status.WARN)
    assert report.drifted_features == [] and not report.prediction_drifted and not report.flagged
    assert report.rows == 300 and len(report.features) == 30
    assert {f.test for f in report.features} == {StatTest.KS}


def test_a_shift_on_two_named_features_flags_exactly_those(table, profile):
    window = _live(table, 1)
    for name in SHIFTED:
        window[name] = window[name] + 0.5 * table[name].std()
    report = compare(window, profile, THRESHOLDS)
    assert report.status is Status.DRIFT and report.flagged
    assert report.drifted_features == SHIFTED
    shifted = {f.name: f for f in report.features if f.name in SHIFTED}
    assert all(f.psi >= THRESHOLDS.psi_warn and f.p_value < THRESHOLDS.p_value for f in shifted.values())
    assert not report.prediction_drifted


def test_a_small_window_needs_its_psi_to_be_significant():
    """30 rows over 10 bins: a PSI above psi_alert by chance alone is not drift without a significant test."""
    assert judge(0.3, 0.2, 0.05, THRESHOLDS) is Status.WARN
    assert judge(0.3, 0.2, 0.0001, THRESHOLDS) is Status.DRIFT  # the binned test agrees: drift
    assert judge(0.12, 0.0001, 0.2, THRESHOLDS) is Status.DRIFT  # the two-sample test and psi_warn
    assert judge(0.05, 1e-12, 1e-12, THRESHOLDS) is Status.OK  # significant but negligible
    assert judge(None, None, None, THRESHOLDS) is Status.OK


def test_an_old_profile_without_a_reference_sample_is_tested_on_its_decile_bins(table, profile):
    old = replace(profile, features=[replace(f, sample=[]) for f in profile.features], schema_version=1)
    window = _live(table, 1)
    window["worst_texture"] = window["worst_texture"] + 0.5 * table["worst_texture"].std()
    report = compare(window, old, THRESHOLDS)
    assert {f.test for f in report.features} == {StatTest.CHI2_BINS}
    assert report.drifted_features == ["worst_texture"]


CATEGORICAL = DatasetSchema(
    columns=(
        ColumnSpec("age", ColumnType.NUMBER, nullable=True),
        ColumnSpec("plan", ColumnType.CATEGORICAL, categories=("basic", "pro")),
        ColumnSpec("label", ColumnType.CATEGORICAL, categories=("no", "yes")),
    ),
    target="label",
    task=Task.CLASSIFICATION,
)


def _customers(rows: int, seed: int, pro_share: float = 0.3, null_share: float = 0.05) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, rows)
    age[rng.random(rows) < null_share] = np.nan
    plan = np.where(rng.random(rows) < pro_share, "pro", "basic")
    return pd.DataFrame({"age": age, "plan": plan, "label": np.where(rng.random(rows) < 0.4, "yes", "no")})


@pytest.fixture(scope="module")
def customers_profile() -> DataProfile:
    train = _customers(2000, 0)
    return profile_frame(train, CATEGORICAL, train["label"].to_numpy())


def test_an_unseen_category_is_reported_with_its_share_and_examples(customers_profile):
    window = _customers(400, 1).drop(columns="label")
    window.loc[:119, "plan"] = "enterprise"  # 30 % of the window
    report = compare(window, customers_profile, THRESHOLDS, predictions=None)
    [unseen] = report.quality.unseen_categories
    assert (unseen.column, unseen.rows, unseen.share, unseen.examples) == ("plan", 120, 0.3, ["enterprise"])
    plan = report.features[1]
    assert plan.test is StatTest.CHI2_CATEGORIES and "enterprise" in plan.bins
    assert report.drifted_features == ["plan"]


def test_a_categorical_shift_is_flagged_by_chi_squared(customers_profile):
    report = compare(
        _customers(400, 2, pro_share=0.6).drop(columns="label"), customers_profile, THRESHOLDS, predictions=None
    )
    assert report.drifted_features == ["plan"]
    assert report.features[1].p_value < THRESHOLDS.p_value and report.quality.unseen_categories == []


def test_a_missing_column_is_a_violation_and_an_unexpected_one_is_reported(customers_profile):
    window = _customers(400, 3).drop(columns=["label", "age"]).assign(referrer="ads")
    report = compare(window, customers_profile, THRESHOLDS, predictions=None)
    assert report.quality.missing_columns == ["age"] and report.quality.unexpected_columns == ["referrer"]
    assert [f.name for f in report.features] == ["plan"]
    assert report.quality.violations == ["missing columns: ['age']"]
    assert report.status is Status.WARN and report.flagged and report.drifted_features == []


def test_rising_nulls_are_a_violation(customers_profile):
    fine = compare(_customers(400, 4, null_share=0.1).drop(columns="label"), customers_profile, THRESHOLDS)
    assert fine.quality.null_increases == []
    report = compare(_customers(400, 4, null_share=0.4).drop(columns="label"), customers_profile, THRESHOLDS)
    [rise] = report.quality.null_increases
    assert rise.column == "age" and rise.baseline == pytest.approx(0.05, abs=0.01) and rise.window > 0.3
    assert report.flagged and "column 'age': null share" in report.quality.violations[0]


def test_a_large_window_does_not_flag_a_negligible_shift():
    """Against 20 000 training rows, 100 000 live rows make a 3-point rise of a category's share significant;
    its PSI (about 0.004) is far below psi_warn, so it is not even a warning."""
    train = _customers(20_000, 10)
    profile = profile_frame(train, CATEGORICAL, train["label"].to_numpy())
    report = compare(_customers(100_000, 11, pro_share=0.33).drop(columns="label"), profile, THRESHOLDS)
    plan = report.features[1]
    assert plan.p_value < THRESHOLDS.p_value and plan.psi < 0.01
    assert plan.status is Status.OK and report.drifted_features == []


def test_values_not_of_the_features_type_are_counted_and_left_out(customers_profile):
    window = _customers(400, 5).drop(columns="label").astype({"age": object, "plan": object})
    window.loc[[3, 7], "age"] = "forty"
    window.loc[[1], "plan"] = 7
    report = compare(window, customers_profile, THRESHOLDS, predictions=None)
    assert [(v.column, v.rows, v.examples) for v in report.quality.type_violations] == [
        ("age", 2, ["'forty'", "'forty'"]),
        ("plan", 1, ["7"]),
    ]
    assert report.features[0].rows == 400 - 2 - int(window["age"].isna().sum())


def test_below_min_rows_nothing_is_judged(customers_profile):
    window = _customers(20, 6, pro_share=0.9).drop(columns="label")
    report = compare(window, customers_profile, THRESHOLDS, min_rows=30)
    assert report.status is Status.INSUFFICIENT_DATA and report.rows == 20
    assert report.features == [] and report.prediction is None and not report.flagged


def test_prediction_drift_uses_its_own_threshold(customers_profile):
    window = _customers(400, 7).drop(columns="label")
    window["prediction"] = np.where(np.arange(400) < 320, "yes", "no")  # 80 % yes, baseline 40 %
    report = compare(window, customers_profile, THRESHOLDS)
    assert report.prediction is not None and report.prediction_drifted and report.status is Status.DRIFT
    assert report.drifted_features == []  # the features did not move
    lenient = compare(window, customers_profile, replace(THRESHOLDS, prediction_psi_alert=5.0, psi_warn=1.0))
    assert not lenient.prediction_drifted


def test_report_json_round_trip(customers_profile):
    window = _customers(400, 8, pro_share=0.6, null_share=0.4).drop(columns="label")
    window.loc[:9, "plan"] = "enterprise"
    window["prediction"] = "yes"
    report = compare(window, customers_profile, THRESHOLDS)
    text = json.dumps(report.to_dict(), allow_nan=False)
    assert DriftReport.from_dict(json.loads(text)) == report
    d = json.loads(text)
    assert d["drifted_features"] == report.drifted_features and d["flagged"] is True
    assert d["quality"]["violations"] == report.quality.violations
