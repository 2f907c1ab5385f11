"""Every gate, passing and failing, with the numbers in the message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flightdeck import gates
from flightdeck.data.schema import ColumnSpec, ColumnType, DatasetSchema, Task
from flightdeck.data.validate import validate_batch

RULES = {
    "min_rows": 10,
    "max_null_fraction": 0.0,
    "min_class_share": 0.2,
    "range_tolerance": 0.5,
    "max_out_of_range_fraction": 0.05,
}


# `b` may be null (its share is judged by max_null_fraction); `a` may not (the batch check refuses it).
SCHEMA = DatasetSchema(
    (
        ColumnSpec("a", ColumnType.NUMBER),
        ColumnSpec("b", ColumnType.NUMBER, nullable=True),
        ColumnSpec("label", ColumnType.INTEGER, categories=("0", "1")),
    ),
    "label",
    Task.CLASSIFICATION,
)


def _frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.uniform(0, 10, n), "b": rng.uniform(-1, 1, n), "label": np.arange(n) % 2})


@pytest.fixture
def reference() -> pd.DataFrame:
    return _frame(60, seed=1)


def test_data_gate_passes_on_clean_data(reference):
    result = gates.check_data(_frame(), reference, SCHEMA, RULES)
    assert result.passed, result.message
    assert result.message.startswith("data checks passed")
    assert "rows 40 (min 10)" in result.message
    assert result.details["class_shares"] == {"0": 0.5, "1": 0.5}


def test_data_gate_fails_on_schema(reference):
    frame = _frame().drop(columns=["b"]).assign(c=1.0)
    result = gates.check_data(frame, reference, SCHEMA, RULES)
    assert not result.passed
    assert "schema: missing ['b']" in result.message
    # Extra columns never reach the gate: the batch check quarantines them before the merge.
    check = validate_batch("k.csv", frame.assign(b=0.0).to_csv(index=False).encode(), SCHEMA)
    assert not check.ok and "extra columns: ['c']" in check.reason


def test_non_numeric_feature_is_quarantined_before_the_data_gate():
    # Type checks moved from the gate to the per-batch schema check, which names the column and rows.
    frame = _frame().astype({"a": object})
    frame.loc[0, "a"] = "x"
    check = validate_batch("k.csv", frame.to_csv(index=False).encode(), SCHEMA)
    assert not check.ok
    assert "column 'a': 1 value(s) are not number, e.g. row 1: 'x'" in check.reason


def test_data_gate_fails_on_nulls(reference):
    frame = _frame()
    frame.loc[:3, "b"] = np.nan
    result = gates.check_data(frame, reference, SCHEMA, RULES)
    assert not result.passed
    assert "max null fraction 0.1000 in 'b' (max 0.0)" in result.message
    assert gates.check_data(frame, reference, SCHEMA, {**RULES, "max_null_fraction": 0.1}).passed


def test_data_gate_on_a_regression_judges_ranges_but_not_class_balance():
    schema = DatasetSchema(
        (ColumnSpec("a", ColumnType.NUMBER), ColumnSpec("y", ColumnType.NUMBER)), "y", Task.REGRESSION
    )
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"a": rng.uniform(0, 10, 60), "y": rng.normal(100, 20, 60)})
    frame = pd.DataFrame({"a": rng.uniform(0, 10, 40), "y": np.full(40, 150.0)})  # one value: no "classes"
    result = gates.check_data(frame, reference, schema, RULES)
    assert result.passed, result.message
    assert "class" not in result.message and "class_shares" not in result.details
    assert "schema ok (1 features + 'y', regression)" in result.message
    frame.loc[:9, "a"] = -100.0
    failed = gates.check_data(frame, reference, schema, RULES)
    assert not failed.passed and "max out-of-range fraction 0.2500 in 'a'" in failed.message


def test_data_gate_fails_on_ranges(reference):
    frame = _frame()
    frame.loc[:4, "a"] = 1000.0  # 5 of 40 rows far outside the reference span
    result = gates.check_data(frame, reference, SCHEMA, RULES)
    assert not result.passed
    assert "max out-of-range fraction 0.1250 in 'a' (max 0.05" in result.message


def test_data_gate_tolerates_values_inside_the_widened_range(reference):
    frame = _frame()
    frame.loc[:4, "a"] = reference["a"].max() + 0.4 * (reference["a"].max() - reference["a"].min())
    assert gates.check_data(frame, reference, SCHEMA, RULES).passed


def test_data_gate_fails_on_row_count(reference):
    result = gates.check_data(_frame(6), reference, SCHEMA, RULES)
    assert not result.passed
    assert "rows 6 (min 10)" in result.message


def test_data_gate_fails_on_label_balance(reference):
    frame = _frame()
    frame["label"] = [0] * 36 + [1] * 4
    result = gates.check_data(frame, reference, SCHEMA, RULES)
    assert not result.passed
    assert "smallest class share 0.100 (min 0.2)" in result.message


def test_data_gate_fails_when_a_class_is_absent(reference):
    frame = _frame().assign(label=0)
    result = gates.check_data(frame, reference, SCHEMA, RULES)
    assert not result.passed
    assert "classes absent ['1']" in result.message


def test_threshold_gate_pass_and_fail():
    ok = gates.check_thresholds({"accuracy": 0.95, "f1_macro": 0.91}, {"accuracy": 0.9, "f1_macro": 0.9})
    assert ok.passed
    assert ok.message == "threshold gate passed: accuracy=0.9500 >= 0.9000, f1_macro=0.9100 >= 0.9000"
    bad = gates.check_thresholds({"accuracy": 0.95, "f1_macro": 0.89}, {"accuracy": 0.9, "f1_macro": 0.9})
    assert not bad.passed
    assert bad.details["failed"] == ["f1_macro"]
    assert "f1_macro=0.8900 < 0.9000" in bad.message


def test_threshold_gate_fails_on_a_missing_metric_and_on_no_thresholds():
    missing = gates.check_thresholds({"accuracy": 0.99}, {"roc_auc": 0.9})
    assert not missing.passed and "roc_auc=missing (min 0.9)" in missing.message
    assert not gates.check_thresholds({"accuracy": 0.99}, {}).passed


def test_threshold_gate_treats_errors_as_ceilings():
    ok = gates.check_thresholds({"rmse": 52.0, "r2": 0.41}, {"rmse": 65.0, "r2": 0.3})
    assert ok.passed
    assert ok.message == "threshold gate passed: r2=0.4100 >= 0.3000, rmse=52.0000 <= 65.0000 (max)"
    bad = gates.check_thresholds({"rmse": 70.0, "r2": 0.41, "log_loss": 0.9}, {"rmse": 65.0, "log_loss": 0.5})
    assert not bad.passed
    assert bad.details["failed"] == ["log_loss", "rmse"]
    assert "rmse=70.0000 > 65.0000 (max)" in bad.message
    missing = gates.check_thresholds({"r2": 0.5}, {"mae": 40.0})
    assert not missing.passed and "mae=missing (max 40.0)" in missing.message


def test_champion_gate_first_model_passes_on_thresholds_alone():
    result = gates.compare_champion("f1_macro", 0.7, None, min_delta=0.0, challenger_version="1", champion_version=None)
    assert result.passed
    assert "first model" in result.message


def test_champion_gate_beats_and_loses_with_margin():
    win = gates.compare_champion("f1_macro", 0.95, 0.93, min_delta=0.01, challenger_version="3", champion_version="2")
    assert win.passed
    assert "challenger v3 beats champion v2: f1_macro 0.9500 vs 0.9300 (delta +0.0200" in win.message
    lose = gates.compare_champion("f1_macro", 0.935, 0.93, min_delta=0.01, challenger_version="3", champion_version="2")
    assert not lose.passed
    assert "does NOT beat" in lose.message and "needed >= +0.0100" in lose.message


def test_champion_gate_negative_margin_is_a_tolerance():
    result = gates.compare_champion(
        "accuracy", 0.92, 0.93, min_delta=-0.02, challenger_version="4", champion_version="3"
    )
    assert result.passed


def test_champion_gate_same_version_is_a_no_op():
    result = gates.compare_champion("f1_macro", 0.9, 0.9, min_delta=0.1, challenger_version="5", champion_version="5")
    assert result.passed and "already is the champion" in result.message


def test_champion_gate_lower_is_better_for_errors():
    win = gates.compare_champion("rmse", 50.0, 55.0, min_delta=1.0, challenger_version="3", champion_version="2")
    assert win.passed
    assert "challenger v3 beats champion v2: rmse 50.0000 vs 55.0000 (delta -5.0000" in win.message
    assert "needed <= -1.0000, lower is better" in win.message
    # A higher error loses even though the number is bigger, and so does a gain smaller than min_delta.
    worse = gates.compare_champion("rmse", 56.0, 55.0, min_delta=0.0, challenger_version="3", champion_version="2")
    assert not worse.passed and "does NOT beat" in worse.message
    small = gates.compare_champion("log_loss", 0.495, 0.5, min_delta=0.01, challenger_version="3", champion_version="2")
    assert not small.passed
