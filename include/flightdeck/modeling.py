"""The model: any scikit-learn-API estimator inside one Pipeline built from the dataset's schema, the
hyper-parameter search, the user's own training entrypoint, and the metrics of each task.

The pipeline is `Pipeline([("preprocess", ColumnTransformer(...)), ("model", estimator)])`:
numeric and boolean columns are imputed with the median (and standardised for estimators that need
it); categorical columns are one-hot encoded for linear and other distance-based estimators, or
ordinal-encoded (unknown and missing -> -1) for tree ensembles, which HistGradientBoosting then
treats as native categoricals. It is fitted on `schema.model_frame` (numbers as float64, strings as
objects), which is also what the model server feeds it.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from flightdeck.data.schema import ColumnType, DatasetSchema, Task
from flightdeck.errors import FlightdeckError

# Short names kept from the first releases, per task; anything else is an import path.
FAMILIES: dict[str, dict[Task, str]] = {
    "logistic_regression": {Task.CLASSIFICATION: "sklearn.linear_model.LogisticRegression"},
    "ridge": {Task.REGRESSION: "sklearn.linear_model.Ridge"},
    "random_forest": {
        Task.CLASSIFICATION: "sklearn.ensemble.RandomForestClassifier",
        Task.REGRESSION: "sklearn.ensemble.RandomForestRegressor",
    },
    "hist_gradient_boosting": {
        Task.CLASSIFICATION: "sklearn.ensemble.HistGradientBoostingClassifier",
        Task.REGRESSION: "sklearn.ensemble.HistGradientBoostingRegressor",
    },
}
# Estimators whose fit depends on feature scale get standardised numbers and one-hot categories.
_SCALE_SENSITIVE = ("sklearn.linear_model", "sklearn.svm", "sklearn.neighbors", "sklearn.neural_network")
# Defaults we set where the estimator has the parameter (reproducible, converging; ensembles on one
# core, which the worker shares with other tasks).
_DEFAULTS = {"max_iter": 2000}
MISSING_CATEGORY = "__missing__"


class ModelConfigError(FlightdeckError, ValueError):
    """The configured estimator or entrypoint cannot be imported or called; the message says which key."""


def estimator_path(train: dict[str, Any], task: Task) -> str:
    """The import path of the estimator `train` (the rendered train params) asks for.

    Raises ModelConfigError when `train.family` is unknown or has no estimator for `task`."""
    if train.get("estimator"):
        return str(train["estimator"])
    family = train.get("family")
    paths = FAMILIES.get(str(family))
    if paths is None:
        raise ModelConfigError(f"train.family {family!r}: use one of {sorted(FAMILIES)} or set train.estimator")
    if task not in paths:
        raise ModelConfigError(
            f"train.family {family!r} has no {task.value} estimator; use one of "
            f"{sorted(k for k, v in FAMILIES.items() if task in v)} or set train.estimator"
        )
    return paths[task]


def search_space(train: dict[str, Any]) -> dict[str, list[Any]]:
    """The grid for the configured model: `train.search[<estimator path or family>]`, or no search."""
    key = train.get("estimator") or train.get("family")
    return dict((train.get("search") or {}).get(key) or {})


def import_object(path: str, *, key: str) -> Any:
    """`package.module.Name` or `package.module:name` -> the object.

    Raises ModelConfigError, naming the params `key`, when the module or the name cannot be imported."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelConfigError(f"{key} {path!r}: cannot import {module_name!r} ({exc})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ModelConfigError(f"{key} {path!r}: {module_name} has no {attr!r}") from None


def make_estimator(path: str, seed: int, **hyper: Any) -> BaseEstimator:
    """Instantiate the estimator at `path` with `hyper`, plus our defaults where it takes them.

    Raises ModelConfigError when `path` cannot be imported or is not an estimator class (fit and predict);
    the estimator's own TypeError when it rejects a key of `hyper`."""
    cls = import_object(path, key="train.estimator")
    if not (inspect.isclass(cls) and hasattr(cls, "fit") and hasattr(cls, "predict")):
        raise ModelConfigError(f"train.estimator {path!r} is not a scikit-learn-API estimator class")
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in _DEFAULTS.items() if k in accepted}
    if "n_jobs" in accepted and cls.__module__.startswith("sklearn.ensemble"):
        kwargs["n_jobs"] = 1
    if "random_state" in accepted:
        kwargs["random_state"] = seed
    kwargs.update(hyper)
    return cls(**kwargs)


def _is_tree_model(estimator: BaseEstimator) -> bool:
    module = type(estimator).__module__
    return module.startswith(("sklearn.ensemble", "sklearn.tree", "lightgbm", "xgboost"))


def build_pipeline(schema: DatasetSchema, estimator: BaseEstimator) -> Pipeline:
    """The preprocessing for `schema` in front of `estimator`, as one Pipeline (see the module doc)."""
    numeric = [c.name for c in schema.features if c.type is not ColumnType.CATEGORICAL]
    categorical = [c.name for c in schema.features if c.type is ColumnType.CATEGORICAL]
    scale = type(estimator).__module__.startswith(_SCALE_SENSITIVE)
    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
        if scale:
            steps.append(("scale", StandardScaler()))
        parts.append(("numeric", Pipeline(steps), numeric))
    if categorical:
        if _is_tree_model(estimator) or not scale:
            encoder: Any = OrdinalEncoder(
                handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1, dtype=np.float64
            )
            cat_steps: list[tuple[str, Any]] = [("encode", encoder)]
        else:
            cat_steps = [
                ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
                ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
            ]
        parts.append(("categorical", Pipeline(cat_steps), categorical))
        if "categorical_features" in estimator.get_params() and not _is_user_set(estimator, "categorical_features"):
            # HistGradientBoosting: the ordinal columns come after the numeric ones; -1 counts as missing.
            first = len(numeric)
            estimator.set_params(categorical_features=list(range(first, first + len(categorical))))
    preprocess = ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def _is_user_set(estimator: BaseEstimator, name: str) -> bool:
    default = inspect.signature(type(estimator).__init__).parameters[name].default
    value = estimator.get_params()[name]
    return not (value is default or (isinstance(value, str) and value == default))


def grid(search: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the search space, in a stable order ([{}] for an empty space)."""
    keys = sorted(search)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(search[k] for k in keys))]


def search(
    schema: DatasetSchema,
    estimator: str,
    space: dict[str, list[Any]],
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    cv: int,
    scoring: str,
    seed: int,
) -> tuple[Pipeline, list[dict[str, Any]]]:
    """Cross-validate each candidate (stratified folds for classification), refit the best on all rows.

    Returns (fitted pipeline, candidate results: params, mean_score, std_score, scoring, best).
    """
    if schema.task is Task.CLASSIFICATION:
        folds: Any = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    else:
        folds = KFold(n_splits=cv, shuffle=True, random_state=seed)
    results: list[dict[str, Any]] = []
    for candidate in grid(space):
        pipeline = build_pipeline(schema, make_estimator(estimator, seed, **candidate))
        scores = cross_val_score(pipeline, X, y, cv=folds, scoring=scoring)
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
    model = build_pipeline(schema, make_estimator(estimator, seed, **best["params"])).fit(X, y)
    return model, results


def run_entrypoint(
    entrypoint: str, frame: pd.DataFrame, schema: DatasetSchema, params: dict[str, Any], code_path: Path | None
) -> Any:
    """Call the user's `package.module:function(frame, schema, params)` and check what it returns.

    `frame` is the prepared training table (`schema.training_frame`: features as the model server feeds
    them, and the target); the function
    returns a fitted model with `predict` (scikit-learn-compatible, or an `mlflow.pyfunc.PythonModel`).

    Raises:
        ModelConfigError: the entrypoint cannot be imported, or returns something without `predict`.
    """
    if code_path is not None and str(code_path) not in sys.path:
        sys.path.insert(0, str(code_path))
    fn: Callable[..., Any] = import_object(entrypoint, key="train.entrypoint")
    if not callable(fn):
        raise ModelConfigError(f"train.entrypoint {entrypoint!r} is not a function")
    model = fn(frame, schema, params)
    if not hasattr(model, "predict"):
        raise ModelConfigError(
            f"train.entrypoint {entrypoint!r} returned {type(model).__name__}, which has no predict(); "
            "return a fitted scikit-learn-compatible model or an mlflow.pyfunc.PythonModel"
        )
    return model


def predict(model: Any, X: pd.DataFrame) -> np.ndarray:
    """Predictions of any model we log: scikit-learn-compatible, or a PythonModel (context None)."""
    # A PythonModel's module imported mlflow when it was defined or unpickled; importing MLflow here
    # for every other model would cost the evaluate stage seconds.
    pyfunc = sys.modules.get("mlflow.pyfunc")
    if pyfunc is not None and isinstance(model, pyfunc.PythonModel):
        # MLflow 3 accepts predict(context, model_input) or, without the context, predict(model_input).
        first = next(iter(inspect.signature(model.predict).parameters), "")
        out = model.predict(None, X) if first == "context" else model.predict(X)
    else:
        out = model.predict(X)
    return np.asarray(out.to_numpy() if hasattr(out, "to_numpy") else out).ravel()


def prediction_metrics(task: Task, y: Any, predicted: Any) -> dict[str, float]:
    """The task's metrics that need only the predictions: classification accuracy and f1_macro; regression
    rmse, mae, r2 (rmse and mae in the target's units). `metrics` adds the probability-based ones; the
    monitor's live quality (monitoring/ground_truth.py) uses these alone."""
    if task is Task.REGRESSION:
        return {
            "rmse": float(root_mean_squared_error(y, predicted)),
            "mae": float(mean_absolute_error(y, predicted)),
            "r2": float(r2_score(y, predicted)),
        }
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "f1_macro": float(f1_score(y, predicted, average="macro")),
    }


def metrics(
    model: Any, X: pd.DataFrame, y: np.ndarray, task: Task, predicted: np.ndarray | None = None
) -> dict[str, float]:
    """The task's metrics on the given rows (`predicted`: the model's predictions for X, when the caller has
    them already).

    classification: accuracy, f1_macro, and, when the model has predict_proba, roc_auc (one-vs-rest
    when multiclass) and log_loss; regression: rmse, mae, r2 (rmse and mae in the target's units).
    """
    predicted = predict(model, X) if predicted is None else predicted
    out = prediction_metrics(task, y, predicted)
    if task is Task.REGRESSION:
        return out
    if hasattr(model, "predict_proba") and is_classifier(model):
        proba = model.predict_proba(X)
        classes = list(model.classes_)
        if set(np.unique(y)) <= set(classes):
            out["log_loss"] = float(log_loss(y, proba, labels=classes))
            if proba.shape[1] == 2:
                out["roc_auc"] = float(roc_auc_score(y == classes[1], proba[:, 1]))
            elif len(np.unique(y)) == proba.shape[1]:
                out["roc_auc"] = float(roc_auc_score(y, proba, multi_class="ovr", labels=classes))
    return out
