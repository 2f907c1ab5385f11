"""A user's own training code, as Flightdeck's `train.entrypoint` calls it (docs/own-model.md).

`params.yaml`:
    overrides:
      train:
        entrypoint: churn_training:train
        code_path: tests/support/user_training   # the folder holding this module, from the project root

Flightdeck calls `train(frame, schema, params)` with the prepared training table (features as the model
server will feed them: numbers, integers and booleans as float64 with NaN for null, categoricals as
strings with None; the target in its own type), the dataset's schema and the rendered params; whatever
it returns is logged to MLflow with this folder as the model's code, gated, registered, built into the serving image and
deployed like any other model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


class ChurnModel(ClassifierMixin, BaseEstimator):
    """Logistic regression on the user's own features, with a decision threshold of its own."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def _features(self, X: pd.DataFrame) -> pd.DataFrame:
        X = X.copy()
        # 0/1 floats from Flightdeck's training frame and its sklearn server; bools through MLflow's pyfunc.
        X["autopay"] = X["autopay"].astype("float64")
        X["charges_per_month_of_tenure"] = X["monthly_charges"].astype("float64") / (
            X["tenure_months"].astype("float64") + 1
        )
        return X

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> ChurnModel:
        numeric = ["tenure_months", "monthly_charges", "support_calls", "charges_per_month_of_tenure"]
        categorical = ["plan", "region"]
        self.pipeline_ = make_pipeline(
            make_column_transformer(
                (make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
                (
                    make_pipeline(
                        SimpleImputer(strategy="constant", fill_value="none"), OneHotEncoder(handle_unknown="ignore")
                    ),
                    categorical,
                ),
                (SimpleImputer(strategy="most_frequent"), ["autopay"]),  # booleans arrive as 0.0/1.0
            ),
            LogisticRegression(max_iter=1000),
        ).fit(self._features(X), y)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.pipeline_.predict_proba(self._features(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        positive = self.predict_proba(X)[:, 1] >= self.threshold
        return np.where(positive, self.classes_[1], self.classes_[0])


def train(frame: pd.DataFrame, schema, params: dict) -> ChurnModel:
    """The entrypoint: fit on every training row; Flightdeck evaluates it on the frozen holdout."""
    X = frame[schema.feature_names]
    y = frame[schema.target].astype(str).to_numpy()
    return ChurnModel(threshold=0.5).fit(X, y)
