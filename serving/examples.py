"""Small real models for tests, benchmarks and demos (needs MLflow + pandas: the dev venv, not the image).

Breast-cancer data ships with scikit-learn (no download). Models are saved as MLflow model
directories the same way the retrain pipeline logs them: signature, input example, explicit
pip_requirements (inferring them costs ~12 s) and, for forests, the skops trusted tree type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TRUSTED_TREE_TYPES = ["sklearn.tree._tree.Tree"]


@dataclass
class ExampleModel:
    """A saved model directory plus what the tests compare against."""

    path: Path
    estimator: Any
    X: Any  # pandas DataFrame of the full data set
    y: np.ndarray
    kind: str

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in self.X.columns]

    def records(self, start: int = 0, n: int = 1) -> list[dict[str, Any]]:
        return self.X.iloc[start : start + n].to_dict(orient="records")

    def expected(self, start: int = 0, n: int = 1) -> list[Any]:
        return self.estimator.predict(self.X.iloc[start : start + n]).tolist()


def _pip_requirements() -> list[str]:
    import sklearn

    return [f"scikit-learn=={sklearn.__version__}"]


def train_breast_cancer(kind: str = "lr", n_estimators: int = 100) -> tuple[Any, Any, np.ndarray]:
    """Fit a logistic regression ("lr") or a random forest ("rf") on the bundled breast-cancer set."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    if kind == "lr":
        estimator = LogisticRegression(max_iter=10_000)
    elif kind == "rf":
        estimator = RandomForestClassifier(n_estimators=n_estimators, random_state=0, n_jobs=None)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    estimator.fit(X, y)
    return estimator, X, y.to_numpy()


def save_breast_cancer_model(path: Path, kind: str = "lr", n_estimators: int = 100) -> ExampleModel:
    estimator, X, y = train_breast_cancer(kind, n_estimators)
    _save_sklearn(estimator, X, path, skops_trusted_types=TRUSTED_TREE_TYPES if kind == "rf" else None)
    return ExampleModel(Path(path), estimator, X, y, kind)


def log_breast_cancer_model(name: str, kind: str = "lr", experiment: str = "serving-tests") -> tuple[Any, Any]:
    """Train, log and register a model in the tracking server MLflow is pointed at; (version, estimator)."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    estimator, X, _ = train_breast_cancer(kind, n_estimators=20)
    mlflow.set_experiment(experiment)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            signature=infer_signature(X, estimator.predict(X)),
            input_example=X.head(2),
            pip_requirements=_pip_requirements(),
            skops_trusted_types=TRUSTED_TREE_TYPES if kind == "rf" else None,
            registered_model_name=name,
        )
    return info.registered_model_version, estimator


def save_mixed_type_model(path: Path) -> ExampleModel:
    """A pipeline with a string, an integer and a boolean column: served through the pyfunc path."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    n = 200
    X = pd.DataFrame(
        {
            "city": rng.choice(["paris", "oslo", "rome"], n),
            "visits": rng.integers(0, 50, n).astype("int64"),
            "member": rng.random(n) > 0.5,
            "spend": rng.normal(100, 20, n),
        }
    )
    y = ((X["city"] == "oslo") | (X["spend"] > 110)).astype(int).to_numpy()
    pre = ColumnTransformer([("city", OneHotEncoder(handle_unknown="ignore"), ["city"])], remainder="passthrough")
    estimator = make_pipeline(pre, LogisticRegression(max_iter=1000)).fit(X, y)
    _save_sklearn(estimator, X, path, serialization_format="cloudpickle")
    return ExampleModel(Path(path), estimator, X, y, "mixed")


def _save_sklearn(estimator: Any, X: Any, path: Path, **flavor_options: Any) -> None:
    """Save as MLflow does for a trained model: signature, input example, explicit requirements (no 12 s inference)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    mlflow.sklearn.save_model(
        estimator,
        str(path),
        signature=infer_signature(X, estimator.predict(X)),
        input_example=X.head(2),
        pip_requirements=_pip_requirements(),
        **flavor_options,
    )
