"""Models as the training side logs them: Pipeline(ColumnTransformer, estimator) with string, optional,
integer and boolean columns, served natively and answering exactly what sklearn answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from serving.app import create_app

MODELS = [
    "hgb_classifier",
    "hgb_regressor",
    "onehot_logistic",
    "onehot_ridge",
    "forest_bool_labels",
    "forest_regressor",
]


def _client(model):
    return create_app({"MODEL_DIR": str(model.path), "ACCESS_LOG": False}).test_client()


def _rows(model, start: int = 0, n: int = 20) -> list[dict]:
    """Request rows from the training frame: ints as JSON integers, booleans as booleans, NaN as null."""
    rows = []
    for rec in model.X.iloc[start : start + n].to_dict(orient="records"):
        row = {
            "age": None if math.isnan(rec["age"]) else float(rec["age"]),
            "visits": int(rec["visits"]),
            "city": rec["city"],
            "plan": rec["plan"],
            "member": bool(rec["member"]),
        }
        if "signup" in rec:
            row["signup"] = rec["signup"].isoformat()
        rows.append(row)
    return rows


def _sklearn_frame(rows: list[dict]) -> pd.DataFrame:
    """The frame the training side fits on (schema.model_frame): float64 numbers/booleans, object strings, None."""
    frame = pd.DataFrame(
        {
            "age": pd.Series([np.nan if r["age"] is None else r["age"] for r in rows], dtype="float64"),
            "visits": pd.Series([r["visits"] for r in rows], dtype="float64"),
            "city": pd.Series([r["city"] for r in rows], dtype=object),
            "plan": pd.Series([r["plan"] for r in rows], dtype=object),
            "member": pd.Series([float(r["member"]) for r in rows], dtype="float64"),
        }
    )
    if rows and "signup" in rows[0]:
        frame["signup"] = pd.to_datetime([r["signup"] for r in rows])
    return frame


def _awkward_rows(model) -> list[dict]:
    """Nulls in every optional column, unseen categories, integers for the double column."""
    rows = _rows(model, 0, 8)
    rows[0]["city"] = None
    rows[1]["age"] = None
    rows[2]["city"] = "atlantis"  # never seen in training
    rows[3]["plan"] = "enterprise"  # never seen in training
    rows[4]["age"] = 37  # an integer where the signature says double
    rows[5].update(city=None, age=None, plan="free")
    return rows


@pytest.mark.parametrize("name", MODELS)
def test_served_natively_with_sklearns_answers(request, name):
    model = request.getfixturevalue(name)
    client = _client(model)
    version = client.get("/version").get_json()
    assert version["predict_path"] == "sklearn-native"
    assert version["evaluator"].startswith("compiled ColumnTransformer + ")
    rows = _rows(model, 0, 60) + _awkward_rows(model)
    resp = client.post("/predict", json={"rows": rows})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    expected = model.estimator.predict(_sklearn_frame(rows)).tolist()
    assert resp.get_json()["predictions"] == expected


def test_hgb_uses_the_fast_evaluator(hgb_classifier, hgb_regressor):
    for model in (hgb_classifier, hgb_regressor):
        assert "fast-hgb" in _client(model).get("/version").get_json()["evaluator"]


def test_output_types_follow_the_labels(hgb_classifier, hgb_regressor, forest_bool_labels):
    rows = _rows(hgb_classifier, 0, 5)
    labels = _client(hgb_classifier).post("/predict", json={"rows": rows}).get_json()["predictions"]
    assert all(type(p) is str for p in labels) and set(labels) <= {"stay", "churn", "upgrade"}
    values = _client(hgb_regressor).post("/predict", json={"rows": _rows(hgb_regressor, 0, 5)}).get_json()
    assert all(type(p) is float for p in values["predictions"])
    flags = _client(forest_bool_labels).post("/predict", json={"rows": _rows(forest_bool_labels, 0, 5)}).get_json()
    assert all(type(p) is bool for p in flags["predictions"])


def test_every_mlflow_input_format_with_nulls_and_strings(onehot_logistic):
    client = _client(onehot_logistic)
    rows = _awkward_rows(onehot_logistic)
    expected = onehot_logistic.estimator.predict(_sklearn_frame(rows)).tolist()
    names = list(rows[0])
    split = {"columns": names[::-1], "data": [[r[c] for c in names[::-1]] for r in rows]}
    columnar = {c: [r[c] for r in rows] for c in names}
    for body in (
        {"dataframe_split": split},
        {"dataframe_records": rows},
        {"instances": rows},
        {"inputs": columnar},
    ):
        resp = client.post("/invocations", json=body)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        assert resp.get_json() == {"predictions": expected}


def test_optional_columns_may_be_left_out(hgb_classifier):
    rows = _rows(hgb_classifier, 0, 3)
    for r in rows:
        del r["age"], r["city"]  # both optional in the signature
    resp = _client(hgb_classifier).post("/predict", json={"rows": rows})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    full = [dict(r, age=None, city=None) for r in rows]
    assert resp.get_json()["predictions"] == hgb_classifier.estimator.predict(_sklearn_frame(full)).tolist()


# ---- probabilities ---------------------------------------------------------------------------


def test_predict_returns_probabilities_on_request(hgb_classifier):
    rows = _awkward_rows(hgb_classifier)
    body = _client(hgb_classifier).post("/predict", json={"rows": rows, "return_probabilities": True}).get_json()
    frame = _sklearn_frame(rows)
    assert body["classes"] == hgb_classifier.estimator.classes_.tolist()
    assert body["probabilities"] == hgb_classifier.estimator.predict_proba(frame).tolist()
    assert body["predictions"] == hgb_classifier.estimator.predict(frame).tolist()
    plain = _client(hgb_classifier).post("/predict", json={"rows": rows}).get_json()
    assert "probabilities" not in plain and "classes" not in plain


@pytest.mark.parametrize("name", ["hgb_classifier", "onehot_logistic", "forest_bool_labels"])
def test_invocations_params_predict_method_predict_proba(request, name):
    model = request.getfixturevalue(name)
    rows = _awkward_rows(model)
    body = {"dataframe_records": rows, "params": {"predict_method": "predict_proba"}}
    resp = _client(model).post("/invocations", json=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    # What `mlflow models serve` answers for the same model logged with pyfunc_predict_fn="predict_proba".
    assert resp.get_json() == {"predictions": model.estimator.predict_proba(_sklearn_frame(rows)).tolist()}
    same = _client(model).post(
        "/invocations", json={"dataframe_records": rows, "params": {"predict_method": "predict"}}
    )
    assert same.get_json() == {"predictions": model.estimator.predict(_sklearn_frame(rows)).tolist()}


def _error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["error"]["code"] == code, body
    return body["error"]


def test_probabilities_of_a_regressor_are_a_422(hgb_regressor):
    client = _client(hgb_regressor)
    rows = _rows(hgb_regressor, 0, 2)
    _error(
        client.post("/predict", json={"rows": rows, "return_probabilities": True}), 422, "probabilities_not_supported"
    )
    body = {"dataframe_records": rows, "params": {"predict_method": "predict_proba"}}
    _error(client.post("/invocations", json=body), 422, "probabilities_not_supported")


def test_bad_probability_switches_are_named(hgb_classifier):
    client = _client(hgb_classifier)
    rows = _rows(hgb_classifier, 0, 1)
    err = _error(client.post("/predict", json={"rows": rows, "return_probabilities": "yes"}), 422, "bad_param")
    assert "return_probabilities" in err["message"]
    body = {"dataframe_records": rows, "params": {"predict_method": "decision_function"}}
    err = _error(client.post("/invocations", json=body), 422, "bad_param")
    assert err["details"]["allowed"] == ["predict", "predict_proba"]
    body = {"dataframe_records": rows, "params": {"threshold": 0.5}}  # ignored, as MLflow ignores it
    assert client.post("/invocations", json=body).status_code == 200
    _error(client.post("/predict", json={"rows": rows, "probabilities": True}), 400, "bad_shape")


# ---- bad input: a 4xx naming the problem ---------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "code", "expected"),
    [
        ("city", 3, "wrong_type", "string"),  # a number in a string column
        ("plan", None, "wrong_type", "string"),  # a null in a required column
        ("visits", 2.5, "wrong_type", "long"),  # a fraction in an integer column
        ("visits", None, "wrong_type", "long"),
        ("member", 1, "wrong_type", "boolean"),  # 1 is not a boolean
        ("age", "41", "wrong_type", "double"),
        ("age", True, "wrong_type", "double"),
        ("signup", "yesterday", "bad_datetime", None),
        ("signup", 1700000000, "wrong_type", "datetime"),
    ],
)
def test_bad_values_are_named(hgb_classifier, column, value, code, expected):
    rows = _rows(hgb_classifier, 0, 3)
    rows[2][column] = value
    err = _error(_client(hgb_classifier).post("/predict", json={"rows": rows}), 422, code)
    assert err["details"]["row"] == 2 and err["details"]["column"] == column
    assert column in err["message"]
    if expected:
        assert err["details"]["expected"] == expected


def test_missing_required_column_is_named(hgb_classifier):
    rows = _rows(hgb_classifier, 0, 1)
    del rows[0]["plan"]
    err = _error(_client(hgb_classifier).post("/predict", json={"rows": rows}), 422, "missing_columns")
    assert err["details"]["missing"] == ["plan"]


@pytest.mark.parametrize("imputer", [True, False])
def test_a_null_means_what_the_model_saw_as_missing(tmp_path, imputer):
    """sklearn treats None and NaN differently (SimpleImputer fills only NaN; encoders keep None as a
    category). A model fitted on pandas 3 strings (`str` dtype, NaN for missing) must see a JSON null as
    NaN, one fitted on the training side's object columns (None) as None: both answer as sklearn does."""
    import mlflow.sklearn
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    from tests.support.model_examples import tabular_frame, tabular_target

    X = tabular_frame(600)[["city", "visits"]]
    y = tabular_target(tabular_frame(600), "classification")
    X = X.assign(city=X["city"].astype("str"))  # pandas 3 strings: NaN for missing
    assert X["city"].isna().any()
    steps = [("impute", SimpleImputer(strategy="constant", fill_value="__missing__"))] if imputer else []
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1)
    pre = ColumnTransformer([("cat", Pipeline([*steps, ("encode", encoder)]), ["city"])], remainder="passthrough")
    model = HistGradientBoostingClassifier(max_iter=30, categorical_features=[0], random_state=0)
    pipeline = Pipeline([("pre", pre), ("model", model)]).fit(X, y)
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "city", required=False), ColSpec("double", "visits")]),
        outputs=Schema([ColSpec("string")]),
    )
    mlflow.sklearn.save_model(
        pipeline, str(tmp_path / "m"), serialization_format="cloudpickle", signature=signature, pip_requirements=[]
    )
    client = _client(type("M", (), {"path": tmp_path / "m"}))
    assert client.get("/version").get_json()["evaluator"].startswith("compiled ColumnTransformer + fast-hgb")
    rows = [{"city": None, "visits": float(v)} for v in range(0, 50, 5)] + [{"city": "oslo", "visits": 3.0}]
    frame = pd.DataFrame(
        {"city": pd.Series([r["city"] for r in rows], dtype="str"), "visits": [r["visits"] for r in rows]}
    )
    resp = client.post("/predict", json={"rows": rows, "return_probabilities": True})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["predictions"] == pipeline.predict(frame).tolist()
    assert resp.get_json()["probabilities"] == pipeline.predict_proba(frame).tolist()
