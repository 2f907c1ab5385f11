"""Model families, the hyper-parameter search and the metrics, driven by the train/evaluate params."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

FAMILIES = ("logistic_regression", "random_forest")
# skops refuses unknown types on load; a forest's trees are the one extra type our families need.
SKOPS_TRUSTED_TYPES = {"random_forest": ["sklearn.tree._tree.Tree"], "logistic_regression": []}


def build(family: str, seed: int, **hyper: Any) -> ClassifierMixin:
    if family == "logistic_regression":
        return Pipeline(
            [
                ("scale", StandardScaler()),
                ("model", LogisticRegression(max_iter=2000, random_state=seed, **hyper)),
            ]
        )
    if family == "random_forest":
        return RandomForestClassifier(random_state=seed, n_jobs=1, **hyper)
    raise ValueError(f"unknown model family {family!r}; one of {FAMILIES}")


def grid(search: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the search space, in a stable order."""
    keys = sorted(search)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(search[k] for k in keys))]


def search(
    family: str,
    space: dict[str, list[Any]],
    X: pd.DataFrame,
    y: pd.Series,
    *,
    cv: int,
    scoring: str,
    seed: int,
) -> tuple[ClassifierMixin, list[dict[str, Any]]]:
    """Cross-validate each candidate, refit the best on all rows; return (model, candidate results)."""
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    results: list[dict[str, Any]] = []
    for candidate in grid(space):
        scores = cross_val_score(build(family, seed, **candidate), X, y, cv=folds, scoring=scoring)
        results.append(
            {
                "params": candidate,
                "mean_score": float(np.mean(scores)),
                "std_score": float(np.std(scores)),
                "scoring": scoring,
            }
        )
    best = max(results, key=lambda r: r["mean_score"])
    best["best"] = True
    model = build(family, seed, **best["params"]).fit(X, y)
    return model, results


def metrics(model: ClassifierMixin, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """accuracy, f1_macro and ROC AUC (one-vs-rest when multiclass) on the given rows."""
    predicted = model.predict(X)
    out = {
        "accuracy": float(accuracy_score(y, predicted)),
        "f1_macro": float(f1_score(y, predicted, average="macro")),
    }
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(X)
        if proba.shape[1] == 2:
            out["roc_auc"] = float(roc_auc_score(y, proba[:, 1]))
        elif len(np.unique(y)) == proba.shape[1]:
            out["roc_auc"] = float(roc_auc_score(y, proba, multi_class="ovr"))
    return out


def label_metrics(y_true: pd.Series | np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The metrics that need only predicted labels (what any pyfunc model gives)."""
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro")),
    }
