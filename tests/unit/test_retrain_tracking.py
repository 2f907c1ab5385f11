"""MLflow-side helpers that need no server: requirements pinning, params flattening, outage messages."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from flightdeck import tracking
from flightdeck.reachability import ServiceUnavailable, ping_mlflow


def test_pip_requirements_are_pinned_to_the_installed_stack_and_flask_free():
    reqs = tracking.pip_requirements()
    assert f"scikit-learn=={version('scikit-learn')}" in reqs
    assert f"numpy=={version('numpy')}" in reqs
    assert f"skops=={version('skops')}" in reqs
    assert f"mlflow-skinny=={version('mlflow')}" in reqs
    assert all("==" in r for r in reqs)
    assert not any(r.startswith(("flask", "mlflow==")) for r in reqs)


def test_flatten_params():
    out: dict[str, str] = {}
    tracking._flatten("", {"train": {"cv": 3, "search": {"C": [0.1, 1.0]}, "x": None, "b": True}}, out)
    assert out == {"train.cv": "3", "train.search.C": "[0.1, 1.0]", "train.x": "null", "train.b": "true"}


def test_unreachable_mlflow_message_names_service_and_address():
    with pytest.raises(ServiceUnavailable) as err:
        ping_mlflow("http://127.0.0.1:8297", timeout=2)
    assert str(err.value).startswith("MLflow unreachable at http://127.0.0.1:8297: ConnectionError")
    assert err.value.service == "MLflow"


def test_run_context_tags():
    from flightdeck import pipeline_config

    cfg = pipeline_config.load("wine")
    ctx = tracking.RunContext("retrain", "manual__1", "abc", "def", "123")
    assert ctx.tags(cfg) == {
        "dataset": "wine",
        "data_version": "abc",
        "holdout_version": "def",
        "params_hash": "123",
        "airflow.dag_id": "retrain",
        "airflow.run_id": "manual__1",
    }


def _customers_schema():
    from flightdeck.data.schema import infer
    from tests.support.own_data import customers

    return infer(customers(200, seed=2), "churned")


def test_model_signature_keeps_strings_and_marks_nullable_columns_optional():
    schema = _customers_schema()
    signature = tracking.model_signature(schema, None)
    inputs = {c["name"]: (c["type"], c["required"]) for c in signature.inputs.to_dict()}
    assert inputs == {
        "tenure_months": ("long", True),
        "monthly_charges": ("double", False),  # nullable: optional in requests
        "plan": ("string", True),  # strings stay strings
        "region": ("string", False),
        "support_calls": ("long", True),
        "autopay": ("boolean", True),
    }
    assert "churned" not in inputs
    # String class labels come back as strings.
    assert [c["type"] for c in signature.outputs.to_dict()] == ["string"]


def test_model_signature_output_follows_the_labels_and_is_double_for_a_regression():
    from flightdeck.data.schema import ColumnSpec, ColumnType, DatasetSchema, Task

    features = (ColumnSpec("x", ColumnType.NUMBER),)
    for label_type, expected in ((ColumnType.INTEGER, "long"), (ColumnType.BOOLEAN, "boolean")):
        schema = DatasetSchema((*features, ColumnSpec("y", label_type)), "y", Task.CLASSIFICATION)
        assert [c["type"] for c in tracking.model_signature(schema, None).outputs.to_dict()] == [expected]
    # A regression predicts floats, even when its target column holds integers.
    for target_type in (ColumnType.NUMBER, ColumnType.INTEGER):
        regression = DatasetSchema((*features, ColumnSpec("y", target_type)), "y", Task.REGRESSION)
        assert [c["type"] for c in tracking.model_signature(regression, None).outputs.to_dict()] == ["double"]


def test_code_paths_are_the_modules_and_packages_of_the_user_folder(tmp_path):
    (tmp_path / "churn_training.py").write_text("def train(frame, schema, params): ...\n")
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "__init__.py").write_text("")
    (tmp_path / "notes").mkdir()  # not a package: not shipped
    (tmp_path / "README.md").write_text("not code")
    (tmp_path / ".hidden.py").write_text("")
    assert tracking._code_paths(tmp_path) == [str(tmp_path / "churn_training.py"), str(tmp_path / "helpers")]
    assert tracking._code_paths(None) is None
