"""`predict` of a fitted logistic regression (optionally after StandardScaler steps) without sklearn's
per-call overhead.

Why this exists: `LogisticRegression.predict` on one row costs ~0.15 ms here, nearly all of it
array-API namespace dispatch and input validation; the arithmetic is a few microseconds. The server
has already validated the matrix (float64, finite, the estimator's column order), so it runs
exactly the arithmetic sklearn runs:
- StandardScaler.transform: a copy, `x -= mean_`, `x /= scale_` (each only when fitted with it);
- LinearClassifierMixin.decision_function: `x @ coef_.T + intercept_` (for a dense float64 `x`,
  sklearn's `safe_sparse_dot` is this same `@`, so the scores are the same bits);
- predict: `classes_[scores > 0]` for two classes, `classes_[argmax(scores)]` for more.
`build()` returns None for anything else (another estimator or transformer, predict_proba, a
subclass), and checks the scores (bit for bit) and classes against sklearn's on probe rows first.
Rows holding NaN (an optional column left out) go to the estimator's own predict, which says what it
says about NaN today; the fast path never guesses there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def _is_sklearn(obj: Any, name: str) -> bool:
    return type(obj).__name__ == name and type(obj).__module__.startswith("sklearn.")


class LinearEvaluator:
    """StandardScaler steps, then a linear classifier's decision and class pick, on a float64 matrix."""

    def __init__(self, scalers: list[Any], classifier: Any) -> None:
        self.steps = [(s.mean_ if s.with_mean else None, s.scale_ if s.with_std else None) for s in scalers]
        self.coef_t = classifier.coef_.T  # the same view sklearn multiplies by
        self.intercept = classifier.intercept_
        self.classes = classifier.classes_
        self.n_features = int(classifier.coef_.shape[1])

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Scores X (rows, features) after the scalers: shape (rows,) for two classes, (rows, classes)
        otherwise, as LogisticRegression.decision_function returns them."""
        x = X
        for mean, scale in self.steps:
            x = x.copy()
            if mean is not None:
                x -= mean
            if scale is not None:
                x /= scale
        scores = x @ self.coef_t + self.intercept
        return scores.reshape(-1) if scores.ndim > 1 and scores.shape[1] == 1 else scores

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class labels, shape (rows,): score > 0 (two classes) or the highest score."""
        scores = self.decision_function(X)
        indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else np.argmax(scores, axis=1)
        return self.classes.take(indices, axis=0)


def _split(estimator: Any) -> tuple[list[Any], Any] | None:
    """(StandardScaler steps, LogisticRegression) of a supported estimator, else None."""
    steps = [estimator]
    if _is_sklearn(estimator, "Pipeline"):
        steps = [step for _, step in estimator.steps]
    *scalers, classifier = steps
    if not _is_sklearn(classifier, "LogisticRegression") or not all(_is_sklearn(s, "StandardScaler") for s in scalers):
        return None
    coef = getattr(classifier, "coef_", None)
    if not isinstance(coef, np.ndarray) or coef.ndim != 2 or coef.dtype != np.float64:
        return None
    if any(getattr(s, "scale_", None) is None and s.with_std for s in scalers):
        return None
    return scalers, classifier


def _probe_rows(ev: LinearEvaluator, seed: int = 0, n: int = 256) -> np.ndarray:
    """Rows spread around the first scaler's mean (the training data), or around 0 without one."""
    rng = np.random.default_rng(seed)
    center, spread = np.zeros(ev.n_features), np.ones(ev.n_features)
    if ev.steps:
        mean, scale = ev.steps[0]
        center = mean if mean is not None else center
        spread = scale if scale is not None else spread
    return center + spread * rng.normal(0.0, 2.0, size=(n, ev.n_features))


def build(estimator: Any, method: str = "predict") -> tuple[Callable[[np.ndarray], Any], str] | None:
    """(fast predict function, description) for a supported model, checked against sklearn; else None."""
    parts = _split(estimator) if method == "predict" else None
    if parts is None:
        return None
    scalers, classifier = parts
    ev = LinearEvaluator(scalers, classifier)
    slow = estimator.predict
    probe = _probe_rows(ev)
    scaled = probe
    for scaler in scalers:
        scaled = scaler.transform(scaled)
    # The scores bit for bit, not only the classes they pick.
    same_scores = np.array_equal(ev.decision_function(probe), classifier.decision_function(scaled))
    if not same_scores or not np.array_equal(ev.predict(probe), slow(probe)):
        return None

    def run(x: np.ndarray) -> Any:
        if np.isnan(x).any():
            return slow(x)
        return ev.predict(x)

    head = "".join("StandardScaler + " for _ in scalers)
    return run, f"fast-linear ({head}{type(classifier).__name__}, {len(ev.classes)} classes)"
