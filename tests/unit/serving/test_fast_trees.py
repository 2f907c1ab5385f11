"""The vectorized forest evaluator gives exactly sklearn's answers, or is not used at all."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from serving import fast_trees
from serving.app import create_app

DATASETS = {"breast_cancer": load_breast_cancer, "iris": load_iris, "wine": load_wine}
FORESTS = {"rf": RandomForestClassifier, "et": ExtraTreesClassifier}


def _fit(forest: str, data: str, **params):
    X, y = DATASETS[data](return_X_y=True)
    return FORESTS[forest](n_estimators=params.pop("n_estimators", 40), random_state=0, **params).fit(X, y), X, y


def _inputs(model, X: np.ndarray, seed: int = 1) -> np.ndarray:
    """The data, noise around it, extremes, and every kind of value at or next to a threshold."""
    rng = np.random.default_rng(seed)
    n, d = X.shape
    noise = X[rng.integers(0, n, 300)] + rng.normal(0, 1, (300, d)) * X.std(axis=0)
    extremes = rng.choice([0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, 3.4e38, -3.4e38], size=(100, d))
    thresholds = np.concatenate([e.tree_.threshold[e.tree_.children_left != -1] for e in model.estimators_])
    at = rng.choice(thresholds, size=(300, d))  # exactly a threshold (float64)
    at32 = at.astype(np.float32).astype(np.float64)  # the threshold as sklearn's float32 cast sees it
    up, down = np.nextafter(at, np.inf), np.nextafter(at, -np.inf)
    up32 = np.nextafter(at.astype(np.float32), np.float32(np.inf)).astype(np.float64)
    down32 = np.nextafter(at.astype(np.float32), np.float32(-np.inf)).astype(np.float64)
    mixed = np.where(rng.random((300, d)) < 0.5, at, X[rng.integers(0, n, 300)])
    return np.vstack([X, noise, extremes, at, at32, up, down, up32, down32, mixed])


def _assert_same(model, X: np.ndarray) -> None:
    run, _ = fast_trees.build(model, "predict")
    np.testing.assert_array_equal(run(X), model.predict(X))
    for i in range(0, len(X), 97):  # one row at a time too, as most requests come
        np.testing.assert_array_equal(run(X[i : i + 1]), model.predict(X[i : i + 1]))
    proba, _ = fast_trees.build(model, "predict_proba")
    ours, theirs = proba(X), model.predict_proba(X)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    # Summed in sklearn's order, so in fact bit for bit the same:
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("data", sorted(DATASETS))
@pytest.mark.parametrize("forest", sorted(FORESTS))
def test_same_predictions_and_probabilities_as_sklearn(forest, data):
    model, X, _ = _fit(forest, data)
    _assert_same(model, _inputs(model, X))


def test_shallow_trees_with_mixed_leaves_and_string_labels():
    X, y = load_wine(return_X_y=True)
    labels = np.array(["barolo", "grignolino", "barbera"])[y]
    model = RandomForestClassifier(n_estimators=25, max_depth=3, min_samples_leaf=7, random_state=0).fit(X, labels)
    _assert_same(model, _inputs(model, X))
    assert fast_trees.build(model)[0](X[:3]).dtype == model.predict(X[:3]).dtype


def test_class_weights_and_no_bootstrap():
    model, X, _ = _fit("et", "breast_cancer", class_weight="balanced", bootstrap=True, max_features=None)
    _assert_same(model, _inputs(model, X))
    model, X, _ = _fit("rf", "iris", bootstrap=False, max_samples=None)
    _assert_same(model, _inputs(model, X))


def test_values_beyond_float32_behave_like_sklearn_with_finite_input_assumed():
    model, X, _ = _fit("rf", "breast_cancer")
    huge = np.full((4, X.shape[1]), 1e300)
    huge[1] *= -1
    huge[2, ::2] = -1e300
    huge[3] = X[0]
    huge[3, 5] = 1e40
    run, _ = fast_trees.build(model)
    with sklearn.config_context(assume_finite=True):  # what the server runs with (gunicorn.conf.py)
        np.testing.assert_array_equal(run(huge), model.predict(huge))


def test_pipeline_ending_in_a_forest():
    X, y = load_breast_cancer(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=30, random_state=0)).fit(X, y)
    run, desc = fast_trees.build(pipe)
    assert "RandomForestClassifier" in desc
    inputs = _inputs(pipe[-1], X)
    with sklearn.config_context(assume_finite=True):  # scaled extremes pass float32's range
        np.testing.assert_array_equal(run(inputs), pipe.predict(inputs))


def test_missing_values_go_to_sklearn():
    X, y = load_iris(return_X_y=True)
    X = X.copy()
    X[::7, 2] = np.nan
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    run, _ = fast_trees.build(model)
    np.testing.assert_array_equal(run(X), model.predict(X))


@pytest.mark.parametrize(
    "make",
    [
        lambda X, y: RandomForestRegressor(n_estimators=5, random_state=0).fit(X, y),
        lambda X, y: RandomForestClassifier(n_estimators=5, random_state=0).fit(X, np.c_[y, y]),  # multi-output
        lambda X, y: GradientBoostingClassifier(n_estimators=5, random_state=0).fit(X, y),
        lambda X, y: LogisticRegression(max_iter=5000).fit(X, y),
        lambda X, y: make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X, y),
    ],
    ids=["regressor", "multi-output", "boosting", "linear", "linear-pipeline"],
)
def test_anything_else_keeps_its_own_predict(make):
    X, y = load_iris(return_X_y=True)
    assert fast_trees.build(make(X, y)) is None


def test_other_methods_and_a_subclass_keep_their_own_predict():
    model, _, _ = _fit("rf", "iris")
    assert fast_trees.build(model, "predict_log_proba") is None

    class Custom(RandomForestClassifier):
        def predict(self, X):
            return super().predict(X)

    X, y = load_iris(return_X_y=True)
    assert fast_trees.build(Custom(n_estimators=3, random_state=0).fit(X, y)) is None


def test_an_evaluator_that_disagrees_with_sklearn_is_not_used():
    model, _, _ = _fit("rf", "iris")
    model.estimators_[0].tree_.threshold[0] += 1.0  # sklearn's own trees now differ from the copy
    original = fast_trees.ForestEvaluator.__init__

    def stale(self, forest):
        original(self, forest)
        self.threshold[0] -= 1.0

    fast_trees.ForestEvaluator.__init__ = stale
    try:
        assert fast_trees.build(model) is None
    finally:
        fast_trees.ForestEvaluator.__init__ = original


def test_the_server_says_which_evaluator_it_uses(rf_model, lr_model):
    client = create_app({"MODEL_DIR": str(rf_model.path)}).test_client()
    info = client.get("/version").get_json()
    assert info["predict_path"] == "sklearn-native"
    assert info["evaluator"].startswith("fast-trees (RandomForestClassifier, 20 trees")
    resp = client.post("/predict", json={"rows": rf_model.records(0, 100)})
    assert resp.get_json()["predictions"] == rf_model.expected(0, 100)
    info = create_app({"MODEL_DIR": str(lr_model.path)}).test_client().get("/version").get_json()
    assert info["evaluator"] == "fast-linear (LogisticRegression, 2 classes)"
