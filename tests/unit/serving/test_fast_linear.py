"""The logistic-regression evaluator gives exactly sklearn's answers, or is not used at all."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from serving import fast_linear

DATASETS = {"breast_cancer": load_breast_cancer, "iris": load_iris, "wine": load_wine}
SHAPES = {
    "bare": lambda: LogisticRegression(max_iter=10_000),
    "scaled": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
    "centered_only": lambda: make_pipeline(StandardScaler(with_std=False), LogisticRegression(max_iter=10_000)),
    "scaled_only": lambda: make_pipeline(StandardScaler(with_mean=False), LogisticRegression(max_iter=2000)),
    "two_scalers": lambda: make_pipeline(StandardScaler(), StandardScaler(), LogisticRegression(max_iter=2000)),
}


def _inputs(X: np.ndarray, seed: int = 1) -> np.ndarray:
    """The data, noise around it, one-row slices' worth of extremes, and zeros."""
    rng = np.random.default_rng(seed)
    n, d = X.shape
    noise = X[rng.integers(0, n, 300)] + rng.normal(0, 1, (300, d)) * X.std(axis=0)
    extremes = rng.choice([0.0, -0.0, 1e-300, -1e-300, 1e30, -1e30, 1e300, -1e300], size=(100, d))
    return np.concatenate([X, noise, extremes, np.zeros((3, d))])


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("data", sorted(DATASETS))
def test_same_scores_and_classes_as_sklearn(shape, data):
    X, y = DATASETS[data](return_X_y=True)
    model = SHAPES[shape]().fit(X, y)
    built = fast_linear.build(model)
    assert built is not None, f"{shape} on {data} should be supported"
    predict, description = built
    assert description.startswith("fast-linear (") and f"{len(set(y))} classes" in description
    inputs = _inputs(X)
    assert np.array_equal(predict(inputs), model.predict(inputs))
    for i in range(0, len(inputs), 37):  # one row at a time, as most requests come
        assert np.array_equal(predict(inputs[i : i + 1]), model.predict(inputs[i : i + 1]))
    scaled = model[:-1].transform(inputs) if shape != "bare" else inputs
    classifier = model[-1] if shape != "bare" else model
    evaluator = fast_linear.LinearEvaluator(list(model[:-1]) if shape != "bare" else [], classifier)
    assert np.array_equal(evaluator.decision_function(inputs), classifier.decision_function(scaled))


def test_string_labels_come_back_as_the_model_has_them():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = LogisticRegression(max_iter=10_000).fit(X, names)
    predict, _ = fast_linear.build(model)
    assert predict(X).tolist() == model.predict(X).tolist()
    binary = LogisticRegression(max_iter=10_000).fit(X[y < 2], names[y < 2])
    predict, _ = fast_linear.build(binary)
    assert predict(X).tolist() == binary.predict(X).tolist()


def test_rows_with_nan_go_to_sklearn_itself():
    X, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    predict, _ = fast_linear.build(model)
    row = X[:2].copy()
    row[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):  # what sklearn says about NaN, not a silent class
        predict(row)


def test_anything_else_is_left_to_sklearn():
    X, y = load_iris(return_X_y=True)
    lr = LogisticRegression(max_iter=10_000).fit(X, y)
    assert fast_linear.build(lr, "predict_proba") is None
    assert fast_linear.build(RidgeClassifier().fit(X, y)) is None
    assert fast_linear.build(make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=2000)).fit(X, y)) is None

    class Custom(LogisticRegression):
        def predict(self, X):
            return super().predict(X)

    assert fast_linear.build(Custom(max_iter=10_000).fit(X, y)) is None


def test_an_evaluator_that_disagrees_with_sklearn_is_not_used(monkeypatch):
    X, y = load_wine(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    original = fast_linear.LinearEvaluator.__init__

    def off_by_a_little(self, scalers, classifier):
        original(self, scalers, classifier)
        self.intercept = self.intercept + 1e-12  # the classes barely change; the scores do

    monkeypatch.setattr(fast_linear.LinearEvaluator, "__init__", off_by_a_little)
    assert fast_linear.build(model) is None
