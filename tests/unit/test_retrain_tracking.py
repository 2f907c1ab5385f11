"""MLflow-side helpers that need no server: requirements pinning, params flattening, outage messages."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from flightdeck import tracking
from flightdeck.services import ServiceUnavailable, ping_mlflow


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
