"""A user's entrypoint that returns an MLflow PythonModel (served through MLflow's pyfunc flavor).

overrides:
  train:
    entrypoint: churn_pyfunc:train
    code_path: tests/support/user_training
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
from churn_training import ChurnModel
from churn_training import train as train_sklearn


class ChurnPyfunc(mlflow.pyfunc.PythonModel):
    """Wraps the scikit-learn-compatible ChurnModel; predict answers labels."""

    def __init__(self, model: ChurnModel) -> None:
        self.model = model

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        return self.model.predict(model_input)


def train(frame: pd.DataFrame, schema, params: dict) -> ChurnPyfunc:
    return ChurnPyfunc(train_sklearn(frame, schema, params))
