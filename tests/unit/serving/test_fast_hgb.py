"""serving/fast_hgb.py gives HistGradientBoosting's own answers, bit for bit, or steps aside."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)

from serving import fast_hgb


def _data(n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two numeric columns (with NaN) and two integer-coded categorical ones (0..5 and 0..2)."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(size=n), rng.normal(size=n), rng.integers(0, 6, n), rng.integers(0, 3, n)]).astype(
        np.float64
    )
    X[rng.random(X.shape) < 0.08] = np.nan
    score = np.nan_to_num(X[:, 0]) + (np.nan_to_num(X[:, 2], nan=1) % 3 == 0) + 0.3 * rng.normal(size=n)
    return X, score


def _requests(seed: int = 1) -> np.ndarray:
    """Rows unlike the training data: unseen categories (6, 9, -1), NaN everywhere, large numbers."""
    X, _ = _data(300, seed)
    rng = np.random.default_rng(seed)
    X[:40, 2] = rng.choice([6.0, 9.0, -1.0, 255.0, 300.0], 40)
    X[40:60] = np.nan
    X[60:80, 0] = rng.choice([-1e300, 1e300, 0.0], 20)
    return X


@pytest.mark.parametrize("categorical", [None, [2, 3], [False, False, True, False]])
@pytest.mark.parametrize("labels", ["binary", "multiclass", "strings"])
def test_classifier_predict_and_proba_are_sklearns(categorical, labels):
    X, score = _data()
    if labels == "binary":
        y = score > 0.5
    elif labels == "multiclass":
        y = np.digitize(score, [0.0, 1.0])
    else:
        y = np.where(score > 0.5, "yes", "no").astype(object)
    est = HistGradientBoostingClassifier(max_iter=40, categorical_features=categorical, random_state=0).fit(X, y)
    ev = fast_hgb.HGBEvaluator(est)
    rows = _requests()
    assert np.array_equal(ev.predict(rows), est.predict(rows))
    assert np.array_equal(ev.predict_proba(rows), est.predict_proba(rows))  # bit for bit
    assert np.array_equal(ev.raw_predict(rows), est._raw_predict(rows))
    assert ev.predict(rows[:1]).tolist() == est.predict(rows[:1]).tolist()  # one row, as a request


@pytest.mark.parametrize("categorical", [None, [2, 3]])
def test_regressor_predict_is_sklearns(categorical):
    X, score = _data()
    est = HistGradientBoostingRegressor(max_iter=50, categorical_features=categorical, random_state=0).fit(X, score)
    fast, description = fast_hgb.build(est, "predict")
    rows = _requests()
    assert np.array_equal(fast(rows), est.predict(rows))
    assert "fast-hgb" in description
    assert fast_hgb.build(est, "predict_proba") is None  # a regressor has no probabilities


def test_poisson_loss_uses_the_estimators_own_link():
    X, score = _data()
    est = HistGradientBoostingRegressor(loss="poisson", max_iter=30, random_state=0).fit(X, np.exp(score / 2))
    fast, _ = fast_hgb.build(est)
    rows = _requests()
    assert np.array_equal(fast(rows), est.predict(rows))


def test_other_estimators_are_left_alone():
    X, score = _data()
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(np.nan_to_num(X), score > 0)
    assert fast_hgb.build(forest) is None
    hgb = HistGradientBoostingClassifier(max_iter=5).fit(X, score > 0)
    assert fast_hgb.build(hgb, "decision_function") is None
