"""The baseline profile of a trained version (issue 11, item 2): per-feature deciles or category shares and
null share, the predictions' distribution, and the PSI that compares a live window with it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from flightdeck.data.schema import ColumnSpec, ColumnType, DatasetSchema, Task
from flightdeck.monitoring.baseline import DataProfile, bin_shares, category_psi, profile_frame, psi

SCHEMA = DatasetSchema(
    columns=(
        ColumnSpec("age", ColumnType.NUMBER, nullable=True),
        ColumnSpec("city", ColumnType.CATEGORICAL, categories=("lyon", "paris")),
        ColumnSpec("label", ColumnType.CATEGORICAL, categories=("no", "yes")),
    ),
    target="label",
    task=Task.CLASSIFICATION,
)


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    age = rng.normal(40, 10, 1000)
    age[:50] = np.nan  # 5 % missing
    return pd.DataFrame({"age": age, "city": ["paris"] * 700 + ["lyon"] * 300, "label": ["yes", "no"] * 500})


def test_numeric_feature_is_ten_deciles_of_the_training_rows(frame):
    profile = profile_frame(frame, SCHEMA, ["yes"] * 60 + ["no"] * 40)
    age = profile.feature("age")
    assert age.null_share == pytest.approx(0.05) and age.rows == 1000
    assert len(age.edges) == 9 and age.edges == sorted(age.edges) and len(age.shares) == 10
    assert all(s == pytest.approx(0.1, abs=0.002) for s in age.shares)  # deciles: a tenth each
    assert age.mean == pytest.approx(40, abs=1.5)


def test_categories_target_and_predictions(frame):
    profile = profile_frame(frame, SCHEMA, ["yes"] * 60 + ["no"] * 40)
    assert profile.feature("city").categories == {"paris": 0.7, "lyon": 0.3}
    assert [f.name for f in profile.features] == ["age", "city"]  # the target is not a feature
    assert profile.prediction.categories == {"yes": 0.6, "no": 0.4} and profile.prediction.rows == 100
    assert DataProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile  # JSON round trip


def test_regression_predictions_are_binned_by_their_deciles(frame):
    schema = DatasetSchema(
        columns=(ColumnSpec("age", ColumnType.NUMBER, nullable=True), ColumnSpec("y", ColumnType.NUMBER)),
        target="y",
        task=Task.REGRESSION,
    )
    profile = profile_frame(frame.assign(y=1.0), schema, np.arange(200.0))
    assert len(profile.prediction.edges) == 9 and sum(profile.prediction.shares) == pytest.approx(1)


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift(frame):
    age = profile_frame(frame, SCHEMA, ["yes"]).feature("age")
    rng = np.random.default_rng(8)
    same = bin_shares(rng.normal(40, 10, 5000), age.edges)
    shifted = bin_shares(rng.normal(50, 10, 5000), age.edges)  # one standard deviation up
    assert psi(age.shares, age.shares) == 0
    assert psi(age.shares, same) < 0.1 < 0.25 < psi(age.shares, shifted)
    with pytest.raises(ValueError, match="same bins"):
        psi([0.5, 0.5], [1.0])


def test_an_unseen_category_counts_in_the_psi():
    assert category_psi({"paris": 0.7, "lyon": 0.3}, {"paris": 0.7, "lyon": 0.3}) == 0
    assert category_psi({"paris": 0.7, "lyon": 0.3}, {"paris": 0.4, "lyon": 0.3, "nice": 0.3}) > 0.25


def test_numeric_profiles_keep_a_bounded_seeded_reference_sample():
    rng = np.random.default_rng(9)
    frame = pd.DataFrame({"age": rng.normal(40, 10, 5000), "city": "paris", "label": "no"})
    one = profile_frame(frame, SCHEMA, ["no"]).feature("age")
    assert len(one.sample) == 1000 and one.sample == sorted(one.sample)
    assert set(one.sample) <= set(frame["age"])  # drawn from the values, without replacement
    assert profile_frame(frame, SCHEMA, ["no"]).feature("age").sample == one.sample  # same seed, same sample
    assert profile_frame(frame, SCHEMA, ["no"], seed=1).feature("age").sample != one.sample
    small = profile_frame(frame.head(40), SCHEMA, ["no"], sample_size=1000).feature("age")
    assert sorted(small.sample) == sorted(frame["age"].head(40))  # fewer values than the bound: all of them
    assert profile_frame(frame, SCHEMA, ["no"]).feature("city").sample == []


def test_a_profile_written_before_reference_samples_still_loads(frame):
    d = profile_frame(frame, SCHEMA, ["yes"]).to_dict()
    d["schema_version"] = 1
    for f in [*d["features"], d["prediction"]]:
        del f["sample"]
    old = DataProfile.from_dict(d)
    assert old.schema_version == 1 and old.feature("age").sample == [] and old.feature("age").edges
