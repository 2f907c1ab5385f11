"""Every gate, passing and failing, with the numbers in the message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flightdeck import gates

RULES = {
    "min_rows": 10,
    "max_null_fraction": 0.0,
    "min_class_share": 0.2,
    "range_tolerance": 0.5,
    "max_out_of_range_fraction": 0.05,
}


def _frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.uniform(0, 10, n), "b": rng.uniform(-1, 1, n), "label": np.arange(n) % 2})


@pytest.fixture
def reference() -> pd.DataFrame:
    return _frame(60, seed=1)


def test_data_gate_passes_on_clean_data(reference):
    result = gates.check_data(_frame(), reference, "label", RULES)
    assert result.passed, result.message
    assert result.message.startswith("data checks passed")
    assert "rows 40 (min 10)" in result.message
    assert result.details["class_shares"] == {"0": 0.5, "1": 0.5}


def test_data_gate_fails_on_schema(reference):
    frame = _frame().drop(columns=["b"]).assign(c=1.0)
    result = gates.check_data(frame, reference, "label", RULES)
    assert not result.passed
    assert "missing ['b']" in result.message and "extra ['c']" in result.message


def test_data_gate_fails_on_non_numeric_feature(reference):
    frame = _frame().astype({"a": object})
    frame.loc[0, "a"] = "x"
    result = gates.check_data(frame, reference, "label", RULES)
    assert not result.passed
    assert "non-numeric feature columns ['a']" in result.message


def test_data_gate_fails_on_nulls(reference):
    frame = _frame()
    frame.loc[:3, "b"] = np.nan
    result = gates.check_data(frame, reference, "label", RULES)
    assert not result.passed
    assert "max null fraction 0.1000 in 'b' (max 0.0)" in result.message


def test_data_gate_fails_on_ranges(reference):
    frame = _frame()
    frame.loc[:4, "a"] = 1000.0  # 5 of 40 rows far outside the reference span
    result = gates.check_data(frame, reference, "label", RULES)
    assert not result.passed
    assert "max out-of-range fraction 0.1250 in 'a' (max 0.05" in result.message


def test_data_gate_tolerates_values_inside_the_widened_range(reference):
    frame = _frame()
    frame.loc[:4, "a"] = reference["a"].max() + 0.4 * (reference["a"].max() - reference["a"].min())
    assert gates.check_data(frame, reference, "label", RULES).passed


def test_data_gate_fails_on_row_count(reference):
    result = gates.check_data(_frame(6), reference, "label", RULES)
    assert not result.passed
    assert "rows 6 (min 10)" in result.message


def test_data_gate_fails_on_label_balance(reference):
    frame = _frame()
    frame["label"] = [0] * 36 + [1] * 4
    result = gates.check_data(frame, reference, "label", RULES)
    assert not result.passed
    assert "smallest class share 0.100 (min 0.2)" in result.message


def test_data_gate_fails_when_a_class_is_absent(reference):
    frame = _frame().assign(label=0)
    result = gates.check_data(frame, reference, "label", RULES)
    assert not result.passed
    assert "classes absent [1]" in result.message


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
