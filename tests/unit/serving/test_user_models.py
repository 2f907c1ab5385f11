"""Models from the user's own code (pyfunc PythonModel, sklearn estimators with code_paths), pipeline
shapes the compiled path does not know, datetime columns, and the lean image (no pandas, no MLflow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.app import create_app
from serving.model import ModelLoadError, load_model_dir
from tests.support.model_examples import tabular_frame, tabular_target

REPO = Path(__file__).resolve().parents[3]

USER_MODULE = textwrap.dedent(
    '''
    """The user's own training code, shipped with the model through code_paths."""
    import numpy as np
    import mlflow.pyfunc
    from sklearn.base import BaseEstimator, ClassifierMixin


    class SignupRules(mlflow.pyfunc.PythonModel):
        """'new' for sign-ups from July on, else the city (or 'unknown')."""

        def predict(self, context, model_input, params=None):
            month = model_input["signup"].dt.month
            city = model_input["city"].fillna("unknown")
            return np.where(month >= 7, "new", city.astype(str)).tolist()


    class MarginClassifier(ClassifierMixin, BaseEstimator):
        """Label 'high' when the first feature exceeds its training median."""

        def fit(self, X, y):
            X = np.asarray(X, dtype=float)
            self.cut_ = float(np.median(X[:, 0]))
            self.classes_ = np.array(["high", "low"], dtype=object)
            self.n_features_in_ = X.shape[1]
            return self

        def predict(self, X):
            X = np.asarray(X, dtype=float)
            return self.classes_[(X[:, 0] <= self.cut_).astype(int)]
    '''
)
MODULE_NAME = "flightdeck_test_user_code"


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    """The user's module, importable while the models are saved, then forgotten (as in a fresh server)."""
    src = tmp_path_factory.mktemp("user-code")
    path = src / f"{MODULE_NAME}.py"
    path.write_text(USER_MODULE)
    sys.path.insert(0, str(src))
    try:
        yield __import__(MODULE_NAME), path
    finally:
        if str(src) in sys.path:
            sys.path.remove(str(src))


def _forget(module_name: str) -> None:
    sys.modules.pop(module_name, None)
    sys.path[:] = [p for p in sys.path if not Path(p, f"{module_name}.py").is_file()]


def _signature(types: dict[str, str], optional: set[str], output: str = "string"):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec(t, name, required=name not in optional) for name, t in types.items()])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec(output)]))


@pytest.fixture(scope="module")
def pyfunc_model(user_code, tmp_path_factory):
    import mlflow.pyfunc

    module, path = user_code
    dst = tmp_path_factory.mktemp("pyfunc") / "model"
    mlflow.pyfunc.save_model(
        str(dst),
        python_model=module.SignupRules(),
        code_paths=[str(path)],
        signature=_signature({"city": "string", "signup": "datetime"}, {"city"}),
        pip_requirements=["mlflow"],
    )
    _forget(MODULE_NAME)
    return dst


@pytest.fixture(scope="module")
def user_sklearn_model(user_code, tmp_path_factory):
    """A user estimator inside the training side's pipeline, pickled with cloudpickle, code in code_paths."""
    import mlflow.sklearn

    from tests.support.model_examples import tabular_pipeline

    module, path = user_code
    X = tabular_frame(200)
    pipeline = tabular_pipeline(module.MarginClassifier(), encoding="onehot").fit(X, tabular_target(X, "bool"))
    dst = tmp_path_factory.mktemp("user-sklearn") / "model"
    types = {"age": "double", "visits": "long", "city": "string", "plan": "string", "member": "boolean"}
    mlflow.sklearn.save_model(
        pipeline,
        str(dst),
        serialization_format="cloudpickle",
        code_paths=[str(path)],
        signature=_signature(types, {"age", "city"}),
        pip_requirements=["scikit-learn"],
    )
    expected = pipeline.predict(X.head(30)).tolist()
    rows = [
        {
            **r,
            "age": None if r["age"] != r["age"] else r["age"],
            "visits": int(r["visits"]),
            "member": bool(r["member"]),
        }
        for r in X.head(30).to_dict(orient="records")
    ]
    _forget(MODULE_NAME)
    return dst, rows, expected


def test_pyfunc_model_with_a_datetime_column_is_served_under_pandas_3(pyfunc_model):
    client = create_app({"MODEL_DIR": str(pyfunc_model), "ACCESS_LOG": False}).test_client()
    assert client.get("/version").get_json()["predict_path"] == "pyfunc"
    rows = [
        {"city": "oslo", "signup": "2024-02-01T10:00:00"},
        {"city": None, "signup": "2024-03-05"},
        {"city": "rome", "signup": "2024-08-01T00:00:00Z"},
    ]
    resp = client.post("/predict", json={"rows": rows})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["predictions"] == ["oslo", "unknown", "new"]
    bad = client.post("/predict", json={"rows": [{"city": "oslo", "signup": "the first of May"}]})
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "bad_datetime"
    proba = client.post("/predict", json={"rows": rows[:1], "return_probabilities": True})
    assert proba.status_code == 422 and proba.get_json()["error"]["code"] == "probabilities_not_supported"


def test_sklearn_model_from_user_code_loads_through_its_code_paths(user_sklearn_model):
    model_dir, rows, expected = user_sklearn_model
    assert MODULE_NAME not in sys.modules
    loaded = load_model_dir(model_dir)
    assert loaded.predict_path == "sklearn-native"
    assert loaded.extra["evaluator"] == "compiled ColumnTransformer + sklearn MarginClassifier.predict"
    assert loaded.predict(loaded.validator.records(rows)) == expected


def _unknown_shape_model(tmp_path: Path):
    """A pipeline with a branch the compiled path does not know (KBinsDiscretizer) and a datetime feature."""
    import mlflow.sklearn
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import KBinsDiscretizer, OrdinalEncoder

    X = tabular_frame(300, with_datetime=True)
    X["signup_days"] = (X["signup"] - pd.Timestamp("2024-01-01")).dt.days.astype("float64")
    pre = ColumnTransformer(
        [
            ("bins", KBinsDiscretizer(n_bins=4, encode="ordinal", quantile_method="averaged_inverted_cdf"), ["visits"]),
            ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["plan"]),
            ("days", "passthrough", ["signup_days"]),
        ]
    )
    pipeline = Pipeline([("pre", pre), ("model", HistGradientBoostingRegressor(max_iter=20))])
    pipeline.fit(X, tabular_target(X, "regression"))
    dst = tmp_path / "model"
    types = {"visits": "double", "plan": "string", "signup_days": "double"}
    mlflow.sklearn.save_model(
        pipeline,
        str(dst),
        serialization_format="cloudpickle",
        signature=_signature(types, set(), output="double"),
        pip_requirements=["scikit-learn"],
    )
    return dst, pipeline, X


def test_unknown_pipeline_shapes_step_aside_to_sklearn_on_a_dataframe(tmp_path):
    model_dir, pipeline, X = _unknown_shape_model(tmp_path)
    loaded = load_model_dir(model_dir)
    assert loaded.extra["evaluator"] == "sklearn Pipeline.predict on a DataFrame"
    rows = [
        {"visits": float(r["visits"]), "plan": r["plan"], "signup_days": r["signup_days"]}
        for r in X.head(20).to_dict("records")
    ]
    assert (
        loaded.predict(loaded.validator.records(rows))
        == pipeline.predict(X.head(20)[["visits", "plan", "signup_days"]]).tolist()
    )


def test_a_category_the_encoder_refuses_is_a_422(tmp_path):
    import mlflow.sklearn
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    X = tabular_frame(200)[["plan", "visits"]]
    pre = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="error"), ["plan"])], remainder="passthrough")
    pipeline = Pipeline([("pre", pre), ("model", LogisticRegression())]).fit(X, X["plan"] == "pro")
    mlflow.sklearn.save_model(
        pipeline,
        str(tmp_path / "m"),
        serialization_format="cloudpickle",
        signature=_signature({"plan": "string", "visits": "double"}, set(), output="boolean"),
        input_example=X.head(2),
        pip_requirements=["scikit-learn"],
    )
    client = create_app({"MODEL_DIR": str(tmp_path / "m"), "ACCESS_LOG": False}).test_client()
    assert client.get("/version").get_json()["evaluator"].startswith("compiled ColumnTransformer")
    ok = client.post("/predict", json={"rows": [{"plan": "pro", "visits": 3}]})
    assert ok.get_json()["predictions"] == pipeline.predict(pd.DataFrame({"plan": ["pro"], "visits": [3.0]})).tolist()
    resp = client.post("/predict", json={"rows": [{"plan": "pro", "visits": 3}, {"plan": "gold", "visits": 1}]})
    assert resp.status_code == 422
    err = resp.get_json()["error"]
    assert err["code"] == "unknown_category" and err["details"] == {"row": 1, "column": "plan"}


# ---- the lean image: no pandas, no MLflow --------------------------------------------------

_LEAN = textwrap.dedent(
    """
    import json, sys

    class Lean:  # as in the lean image: `import pandas` and `import mlflow` fail
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("pandas", "mlflow"):
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, Lean())
    from serving.model import ModelLoadError, load_model_dir
    try:
        model = load_model_dir(sys.argv[1])
    except ModelLoadError as exc:
        print(json.dumps({"error": str(exc)}))
    else:
        rows = json.loads(sys.argv[2])
        batch = model.validator.records(rows)
        print(json.dumps({"evaluator": model.extra["evaluator"], "predictions": model.predict(batch),
                          "pandas": "pandas" in sys.modules}))
    """
)


def _lean(model_dir: Path, rows: list[dict]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _LEAN, str(model_dir), json.dumps(rows)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_lean_image_serves_the_training_sides_pipelines_without_pandas(hgb_classifier):
    rows = [
        {"age": None, "visits": 3, "city": "atlantis", "plan": "pro", "member": True, "signup": "2024-03-01"},
        {"age": 51.5, "visits": 40, "city": None, "plan": "free", "member": False, "signup": "2024-09-01"},
    ]
    result = _lean(hgb_classifier.path, rows)
    assert result["evaluator"].startswith("compiled ColumnTransformer + fast-hgb")
    frame = pd.DataFrame(
        {
            "age": [np.nan, 51.5],
            "visits": [3.0, 40.0],
            "city": pd.Series(["atlantis", None], dtype=object),
            "plan": pd.Series(["pro", "free"], dtype=object),
            "member": [1.0, 0.0],
        }
    )
    assert result["predictions"] == hgb_classifier.estimator.predict(frame).tolist()
    assert result["pandas"] is False


def test_the_lean_image_refuses_what_needs_pandas_naming_the_build_arg(tmp_path):
    model_dir, _, _ = _unknown_shape_model(tmp_path)
    result = _lean(model_dir, [])
    assert "WITH_MLFLOW=1" in result["error"] and "pandas" in result["error"]
    with pytest.raises(ModelLoadError, match="no MLmodel"):
        load_model_dir(tmp_path)


def test_a_null_mlflow_cannot_take_is_a_422_with_mlflows_reason(tmp_path):
    """MLflow's pyfunc schema enforcement has no missing integers: a null in an optional long column is
    refused by MLflow itself (its scoring server answers 400); here a 422 naming the column, not a 500."""
    import mlflow.pyfunc

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [f"{n}|{b}" for n, b in zip(model_input["n"], model_input["b"], strict=True)]

    signature = _signature({"n": "long", "b": "boolean"}, {"n", "b"})
    mlflow.pyfunc.save_model(str(tmp_path / "m"), python_model=Echo(), signature=signature, pip_requirements=[])
    client = create_app({"MODEL_DIR": str(tmp_path / "m"), "ACCESS_LOG": False}).test_client()
    ok = client.post("/predict", json={"rows": [{"n": 1, "b": None}, {"n": 2, "b": True}]})
    assert ok.status_code == 200 and ok.get_json()["predictions"] == ["1|None", "2|True"]
    resp = client.post("/predict", json={"rows": [{"n": None, "b": True}, {"n": 2, "b": False}]})
    assert resp.status_code == 422, resp.get_data(as_text=True)
    err = resp.get_json()["error"]
    assert err["code"] == "rejected_by_model" and "column n" in err["message"]
