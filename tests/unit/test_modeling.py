"""The model side with real scikit-learn: one Pipeline built from the schema around any estimator, the
search on string labels and on a regression, estimators by import path, the user's own entrypoint, and
each task's metrics judged in the metric's direction."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from flightdeck import gates, metric_direction, modeling, settings
from flightdeck.data.schema import Task, coerce_trusted, infer, model_frame, target_values, training_frame
from tests.support.own_data import customers

USER_CODE = settings.REPO_ROOT / "tests" / "support" / "user_training"
NUMERIC = ["tenure_months", "monthly_charges", "support_calls", "autopay"]
CATEGORICAL = ["plan", "region"]


@pytest.fixture(scope="module")
def churn():
    """(schema, typed training rows, typed holdout rows) of a user's customer export."""
    frame = customers(400, seed=0)
    schema = infer(frame, "churned")
    typed = coerce_trusted(frame, schema)
    return schema, typed.iloc[:300].reset_index(drop=True), typed.iloc[300:].reset_index(drop=True)


@pytest.fixture(scope="module")
def charges():
    """A regression on the same export: monthly charges from plan, region, tenure, ..."""
    frame = customers(400, seed=1).dropna(subset=["monthly_charges"]).reset_index(drop=True)
    schema = infer(frame, "monthly_charges")
    assert schema.task is Task.REGRESSION
    return schema, coerce_trusted(frame, schema)


def _steps(pipeline) -> dict[str, list[str]]:
    """{transformer name: [step names]} of the pipeline's preprocessing."""
    return {name: list(part.named_steps) for name, part, _ in pipeline.named_steps["preprocess"].transformers}


def _columns(pipeline) -> dict[str, list[str]]:
    return {name: cols for name, _, cols in pipeline.named_steps["preprocess"].transformers}


@pytest.mark.parametrize("estimator", [LogisticRegression(), Ridge()])
def test_linear_estimators_get_one_hot_categories_and_scaled_numbers(churn, estimator):
    schema, _, _ = churn
    pipeline = modeling.build_pipeline(schema, estimator)
    assert _columns(pipeline) == {"numeric": NUMERIC, "categorical": CATEGORICAL}
    assert _steps(pipeline) == {"numeric": ["impute", "scale"], "categorical": ["impute", "encode"]}
    transformers = {name: part for name, part, _ in pipeline.named_steps["preprocess"].transformers}
    assert isinstance(transformers["numeric"].named_steps["scale"], StandardScaler)
    encoder = transformers["categorical"].named_steps["encode"]
    assert isinstance(encoder, OneHotEncoder) and encoder.handle_unknown == "ignore"
    assert pipeline.named_steps["model"] is estimator


def test_hist_gradient_boosting_gets_ordinal_codes_as_native_categoricals(churn):
    schema, _, _ = churn
    pipeline = modeling.build_pipeline(schema, HistGradientBoostingClassifier())
    assert _steps(pipeline) == {"numeric": ["impute"], "categorical": ["encode"]}  # trees need no scaling
    transformers = {name: part for name, part, _ in pipeline.named_steps["preprocess"].transformers}
    encoder = transformers["categorical"].named_steps["encode"]
    assert isinstance(encoder, OrdinalEncoder)
    assert (encoder.handle_unknown, encoder.unknown_value, encoder.encoded_missing_value) == (
        "use_encoded_value",
        -1,
        -1,
    )
    # The ordinal columns follow the four numeric ones.
    assert pipeline.named_steps["model"].categorical_features == [4, 5]
    # A user's own choice of categorical_features is left alone.
    own = modeling.build_pipeline(schema, HistGradientBoostingClassifier(categorical_features=[4]))
    assert own.named_steps["model"].categorical_features == [4]


def test_search_fits_and_predicts_string_labels(churn):
    schema, train, holdout = churn
    space = {"C": [0.1, 1.0]}
    model, results = modeling.search(
        schema,
        "sklearn.linear_model.LogisticRegression",
        space,
        model_frame(train, schema),
        target_values(train, schema),
        cv=3,
        scoring="f1_macro",
        seed=42,
    )
    assert [r["params"] for r in results] == [{"C": 0.1}, {"C": 1.0}]
    assert sum(1 for r in results if r.get("best")) == 1 and all(r["scoring"] == "f1_macro" for r in results)
    assert list(model.classes_) == ["no", "yes"]
    predicted = model.predict(model_frame(holdout, schema))
    assert set(predicted) <= {"no", "yes"} and isinstance(predicted[0], str)
    # The holdout has nulls in region and charges; the model learnt something (above the majority share).
    majority = pd.Series(target_values(holdout, schema)).value_counts(normalize=True).max()
    assert (predicted == target_values(holdout, schema)).mean() > majority


def test_search_with_hist_gradient_boosting_handles_nulls_and_unseen_categories(churn):
    schema, train, holdout = churn
    model, _ = modeling.search(
        schema,
        modeling.estimator_path({"family": "hist_gradient_boosting"}, Task.CLASSIFICATION),
        {"max_iter": [10]},
        model_frame(train, schema),
        target_values(train, schema),
        cv=3,
        scoring="f1_macro",
        seed=42,
    )
    rows = model_frame(holdout.head(3), schema)
    rows.loc[0, "plan"] = "enterprise"  # never seen in training
    rows.loc[1, "region"] = None
    rows.loc[2, "monthly_charges"] = np.nan
    assert set(model.predict(rows)) <= {"no", "yes"}


def test_search_fits_a_regression(charges):
    schema, frame = charges
    X, y = model_frame(frame, schema), target_values(frame, schema)
    model, results = modeling.search(
        schema,
        "sklearn.linear_model.Ridge",
        {"alpha": [1.0]},
        X,
        y,
        cv=3,
        scoring="neg_root_mean_squared_error",
        seed=0,
    )
    assert results[0]["mean_score"] < 0  # scikit-learn's scorer negates the error
    predicted = model.predict(X)
    assert predicted.dtype == np.float64
    scores = modeling.metrics(model, X, y, Task.REGRESSION)
    assert set(scores) == {"rmse", "mae", "r2"}
    assert scores["r2"] > 0.8  # the plan drives the charges
    assert scores["mae"] <= scores["rmse"] < float(np.std(y))


def test_estimator_by_import_path_with_its_grid(charges):
    schema, frame = charges
    train = {
        "estimator": "sklearn.ensemble.RandomForestRegressor",
        "search": {"sklearn.ensemble.RandomForestRegressor": {"n_estimators": [10, 20], "max_depth": [3, None]}},
    }
    path = modeling.estimator_path(train, Task.REGRESSION)
    assert path == "sklearn.ensemble.RandomForestRegressor"
    space = modeling.search_space(train)
    assert space == {"n_estimators": [10, 20], "max_depth": [3, None]}
    model, results = modeling.search(
        schema,
        path,
        space,
        model_frame(frame, schema),
        target_values(frame, schema),
        cv=3,
        scoring="neg_root_mean_squared_error",
        seed=7,
    )
    assert len(results) == 4
    best = next(r for r in results if r.get("best"))
    assert best["mean_score"] == max(r["mean_score"] for r in results)
    forest = model.named_steps["model"]
    assert isinstance(forest, RandomForestRegressor)
    assert forest.get_params()["n_estimators"] == best["params"]["n_estimators"]
    assert (forest.random_state, forest.n_jobs) == (7, 1)  # our defaults where the estimator takes them
    assert _steps(model)["categorical"] == ["encode"]  # a tree ensemble: ordinal codes, no scaling


def test_estimator_paths_that_are_not_estimators_name_the_key():
    with pytest.raises(modeling.ModelConfigError, match="train.estimator 'sklearn.nope.Model': cannot import"):
        modeling.make_estimator("sklearn.nope.Model", 0)
    with pytest.raises(modeling.ModelConfigError, match="sklearn.ensemble has no 'Forest'"):
        modeling.make_estimator("sklearn.ensemble.Forest", 0)
    with pytest.raises(modeling.ModelConfigError, match="is not a scikit-learn-API estimator class"):
        modeling.make_estimator("sklearn.preprocessing.StandardScaler", 0)


@pytest.fixture
def isolated_imports(monkeypatch):
    """Entrypoints put their folder on sys.path and import modules; undo both after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_run_entrypoint_with_the_user_training_module(churn, isolated_imports):
    schema, train, holdout = churn
    assert str(USER_CODE) not in sys.path
    model = modeling.run_entrypoint(
        "churn_training:train", training_frame(train, schema), schema, {"train": {}}, USER_CODE
    )
    assert str(USER_CODE) in sys.path
    assert type(model).__name__ == "ChurnModel"
    predicted = modeling.predict(model, model_frame(holdout, schema))
    assert set(predicted) <= {"no", "yes"}
    scores = modeling.metrics(model, model_frame(holdout, schema), target_values(holdout, schema), Task.CLASSIFICATION)
    assert set(scores) == {"accuracy", "f1_macro", "roc_auc", "log_loss"}
    assert 0.5 < scores["accuracy"] <= 1.0


def test_run_entrypoint_returning_no_model_is_a_config_error(churn, tmp_path: Path, isolated_imports):
    schema, train, _ = churn
    (tmp_path / "flightdeck_test_no_model.py").write_text(
        "def train(frame, schema, params):\n    return {'weights': [1.0] * len(frame.columns)}\n"
    )
    with pytest.raises(modeling.ModelConfigError) as err:
        modeling.run_entrypoint("flightdeck_test_no_model:train", training_frame(train, schema), schema, {}, tmp_path)
    assert str(err.value) == (
        "train.entrypoint 'flightdeck_test_no_model:train' returned dict, which has no predict(); return a fitted "
        "scikit-learn-compatible model or an mlflow.pyfunc.PythonModel"
    )
    with pytest.raises(
        modeling.ModelConfigError, match="train.entrypoint 'flightdeck_test_absent:train': cannot import"
    ):
        modeling.run_entrypoint("flightdeck_test_absent:train", training_frame(train, schema), schema, {}, tmp_path)


def test_classification_metrics_binary_and_multiclass(churn):
    schema, train, holdout = churn
    model = modeling.build_pipeline(schema, LogisticRegression(max_iter=1000)).fit(
        model_frame(train, schema), target_values(train, schema)
    )
    binary = modeling.metrics(model, model_frame(holdout, schema), target_values(holdout, schema), schema.task)
    assert set(binary) == {"accuracy", "f1_macro", "roc_auc", "log_loss"}
    assert 0 < binary["log_loss"] < 1 and 0.5 < binary["roc_auc"] <= 1
    # Three classes of strings: roc_auc one-vs-rest.
    frame = customers(300, seed=3).assign(churned=lambda f: f["plan"]).drop(columns=["plan"])
    three = infer(frame, "churned")
    typed = coerce_trusted(frame, three)
    fitted = modeling.build_pipeline(three, LogisticRegression(max_iter=1000)).fit(
        model_frame(typed, three), target_values(typed, three)
    )
    scores = modeling.metrics(fitted, model_frame(typed, three), target_values(typed, three), three.task)
    assert set(scores) == {"accuracy", "f1_macro", "roc_auc", "log_loss"} and scores["roc_auc"] > 0.9


def test_metric_direction_errors_are_better_lower():
    assert metric_direction.LOWER_IS_BETTER == {"rmse", "mae", "log_loss"}
    assert metric_direction.is_better("rmse", 50.0, 55.0, 1.0)
    assert not metric_direction.is_better("rmse", 54.5, 55.0, 1.0)  # better, but by less than min_delta
    assert not metric_direction.is_better("mae", 56.0, 55.0, 0.0)
    assert metric_direction.is_better("f1_macro", 0.92, 0.90, 0.01)
    assert not metric_direction.is_better("r2", 0.5, 0.6, 0.0)
    assert metric_direction.is_better("accuracy", 0.89, 0.90, -0.02)  # a negative delta is a tolerance


def test_regression_gates_follow_the_metric_direction(charges):
    schema, frame = charges
    X, y = model_frame(frame, schema), target_values(frame, schema)
    good = modeling.build_pipeline(schema, Ridge()).fit(X, y)
    flat = modeling.build_pipeline(schema, Ridge(alpha=1e6)).fit(X, y)  # nearly the mean: a poor model
    good_scores = modeling.metrics(good, X, y, Task.REGRESSION)
    flat_scores = modeling.metrics(flat, X, y, Task.REGRESSION)
    ceiling = {"rmse": (good_scores["rmse"] + flat_scores["rmse"]) / 2}
    assert gates.check_thresholds(good_scores, ceiling).passed
    assert not gates.check_thresholds(flat_scores, ceiling).passed
    verdict = gates.compare_champion(
        "rmse", good_scores["rmse"], flat_scores["rmse"], min_delta=0.0, challenger_version="2", champion_version="1"
    )
    assert verdict.passed and "lower is better" in verdict.message
    reverse = gates.compare_champion(
        "rmse", flat_scores["rmse"], good_scores["rmse"], min_delta=0.0, challenger_version="3", champion_version="2"
    )
    assert not reverse.passed
