"""The serving image is chosen from the model's own MLmodel: lean (no pandas, no MLflow) when the
native path serves it, WITH_MLFLOW=1 otherwise; the lean image then really loads the lean choices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flightdeck import images


def _mlmodel(path: Path) -> dict:
    return yaml.safe_load((path / "MLmodel").read_text())


@pytest.mark.parametrize("name", ["lr_model", "rf_model", "hgb_regressor", "onehot_logistic", "forest_bool_labels"])
def test_sklearn_models_get_the_lean_image(request, name):
    model = request.getfixturevalue(name)
    assert images.full_image_reason(_mlmodel(model.path)) is None
    assert images.serving_build_args(model.path) == {"WITH_MLFLOW": "0"}


def test_a_datetime_column_gets_the_full_image(hgb_classifier):
    reason = images.full_image_reason(_mlmodel(hgb_classifier.path))
    assert reason and "datetime" in reason
    assert images.serving_build_args(hgb_classifier.path) == {"WITH_MLFLOW": "1"}


def test_pyfunc_models_and_user_code_get_the_full_image(tmp_path, lr_model):
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input["x"].tolist()

    signature = ModelSignature(inputs=Schema([ColSpec("double", "x")]), outputs=Schema([ColSpec("double")]))
    mlflow.pyfunc.save_model(str(tmp_path / "pyfunc"), python_model=Echo(), signature=signature, pip_requirements=[])
    assert "mlflow.pyfunc" in images.full_image_reason(_mlmodel(tmp_path / "pyfunc"))
    assert images.serving_build_args(tmp_path / "pyfunc") == {"WITH_MLFLOW": "1"}

    with_code = _mlmodel(lr_model.path)
    with_code["flavors"]["sklearn"]["code"] = "code"
    assert "code_paths" in images.full_image_reason(with_code)


def test_other_choices_from_the_mlmodel(lr_model):
    base = _mlmodel(lr_model.path)
    proba = json.loads(json.dumps(base))
    proba["flavors"]["python_function"]["predict_fn"] = "predict_proba"
    assert images.full_image_reason(proba) is None  # all-numeric: the matrix path calls predict_proba
    proba["signature"]["inputs"] = json.dumps([{"name": "a", "type": "string"}])
    assert "predict_proba" in images.full_image_reason(proba)
    binary = json.loads(json.dumps(base))
    binary["signature"]["inputs"] = json.dumps([{"name": "blob", "type": "binary"}])
    assert "binary" in images.full_image_reason(binary)
    assert images.serving_build_args(None) == {"WITH_MLFLOW": "1"}  # fetched at start: needs the client
