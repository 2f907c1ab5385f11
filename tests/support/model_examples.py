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


def tabular_frame(n: int = 400, seed: int = 0, with_datetime: bool = False) -> Any:
    """A generated table as the training side feeds its pipelines (`schema.model_frame`).

    Columns: `age` (double, ~10% null), `visits` (long, as float64), `city` (string, ~10% null),
    `plan` (string), `member` (boolean, as float64 0/1) and, with `with_datetime`, `signup`
    (datetime64[ns], in the signature only: the pipeline drops it).
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n)
    age[rng.random(n) < 0.1] = np.nan
    city = rng.choice(["paris", "oslo", "rome", "lima"], n).astype(object)
    city[rng.random(n) < 0.1] = None
    frame = pd.DataFrame(
        {
            "age": age,
            "visits": rng.integers(0, 50, n).astype("float64"),
            "city": pd.Series(city, dtype=object),
            "plan": pd.Series(rng.choice(["free", "pro", "team"], n).astype(object), dtype=object),
            "member": (rng.random(n) > 0.5).astype("float64"),
        }
    )
    if with_datetime:
        frame["signup"] = pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D")
    return frame


def tabular_target(frame: Any, task: str, seed: int = 0) -> np.ndarray:
    """String labels ("churn"/"stay"/"upgrade") for classification, a float for regression, bools for "bool"."""
    rng = np.random.default_rng(seed + 1)
    score = (
        np.nan_to_num(frame["age"].to_numpy(), nan=40.0) / 20
        + frame["visits"].to_numpy() / 25
        + (frame["city"] == "oslo").to_numpy() * 1.5
        + (frame["plan"] == "pro").to_numpy()
        + frame["member"].to_numpy()
        + rng.normal(0, 0.5, len(frame))
    )
    if task == "regression":
        return score * 10.0
    if task == "bool":
        return score > np.median(score)
    return np.where(score < 3.5, "stay", np.where(score < 5, "churn", "upgrade")).astype(object)


def tabular_pipeline(estimator: Any, encoding: str = "ordinal", scale: bool = False) -> Any:
    """The training side's pipeline shape: ColumnTransformer(numeric impute[+scale], categorical encode)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    numeric = ["age", "visits", "member"]
    categorical = ["city", "plan"]
    num_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if scale:
        num_steps.append(("scale", StandardScaler()))
    if encoding == "ordinal":
        cat_steps: list[tuple[str, Any]] = [
            (
                "encode",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1, dtype=np.float64
                ),
            )
        ]
        if "categorical_features" in estimator.get_params():
            estimator.set_params(categorical_features=[3, 4])
    else:
        cat_steps = [
            ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
            ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    preprocess = ColumnTransformer(
        [("numeric", Pipeline(num_steps), numeric), ("categorical", Pipeline(cat_steps), categorical)],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def save_tabular_model(
    path: Path,
    estimator: Any,
    task: str = "classification",
    encoding: str = "ordinal",
    scale: bool = False,
    with_datetime: bool = False,
    serialization_format: str = "skops",
    n: int = 400,
) -> ExampleModel:
    """Fit `tabular_pipeline(estimator)` on `tabular_frame` and save it as the training side logs it.

    The signature keeps the types ("string" categoricals, "long" visits, "boolean" member, optional
    columns where nulls occur), as the training side writes it from its schema.
    """
    import mlflow.sklearn
    import skops.io
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    X = tabular_frame(n, with_datetime=with_datetime)
    y = tabular_target(X, task)
    pipeline = tabular_pipeline(estimator, encoding, scale).fit(X, y)
    types = {"age": "double", "visits": "long", "city": "string", "plan": "string", "member": "boolean"}
    if with_datetime:
        types["signup"] = "datetime"
    inputs = Schema([ColSpec(t, name, required=not X[name].isna().any()) for name, t in types.items()])
    signature = ModelSignature(inputs=inputs, outputs=infer_signature(X, pipeline.predict(X)).outputs)
    example = X.head(2).copy()
    example["visits"] = example["visits"].astype("int64")
    example["member"] = example["member"].astype(bool)
    options: dict[str, Any] = {"serialization_format": serialization_format}
    if serialization_format == "skops":
        options["skops_trusted_types"] = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)) or None
    mlflow.sklearn.save_model(
        pipeline,
        str(path),
        signature=signature,
        input_example=example,
        pip_requirements=_pip_requirements(),
        **options,
    )
    return ExampleModel(Path(path), pipeline, X, y, task)
