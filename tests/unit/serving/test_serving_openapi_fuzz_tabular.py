"""Schemathesis against a model with string categories, optional (nullable) columns, an integer and a
boolean column and class probabilities: no input may produce a 5xx (see test_serving_openapi_fuzz.py)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from serving.app import create_app


@pytest.fixture(scope="module")
def tabular_model(tmp_path_factory):
    from sklearn.ensemble import HistGradientBoostingClassifier

    from tests.support.model_examples import save_tabular_model

    est = HistGradientBoostingClassifier(max_iter=20, random_state=0)
    return save_tabular_model(tmp_path_factory.mktemp("fuzz-tabular") / "model", est)


@pytest.fixture(scope="module")
def api_schema(tabular_model):
    app = create_app({"MODEL_DIR": str(tabular_model.path), "MAX_ROWS": 20, "ACCESS_LOG": False})
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": ["400", "413", "415", "422"]}}}
    )
    return schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)


def _schema_cannot_say_it(body: object) -> bool:
    """Bodies JSON Schema (OpenAPI 3.0) cannot fully describe: ragged columns, per-position split cells."""
    if not isinstance(body, dict) or not body:
        return False
    key = next(k for k in body if k not in ("params", "return_probabilities")) if len(body) > 1 else next(iter(body))
    value = body.get(key)
    return key == "dataframe_split" or (
        key in ("columns", "instances", "inputs")
        and isinstance(value, dict)
        and len({len(v) for v in value.values() if isinstance(v, list)}) > 1
    )


def _leaves_out_an_optional_column(path: str, body: object) -> bool:
    """/invocations refuses an optional column absent from the whole request (as MLflow's sklearn flavor)."""
    if path != "/invocations" or not isinstance(body, dict):
        return False
    value = next((v for k, v in body.items() if k != "params"), None)
    if isinstance(value, dict):
        names = set(value.get("columns") or []) if "data" in value else set(value)
    elif isinstance(value, list):
        names = set().union(*(r for r in value if isinstance(r, dict)))
    else:
        return False
    return not {"age", "city"} <= names


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_input_makes_a_server_error(api_schema, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    calls = []
    for operation in operations:
        if operation.method.upper() == "GET":
            continue

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case):
            if mode is GenerationMode.POSITIVE and (
                _schema_cannot_say_it(case.body) or _leaves_out_an_optional_column(case.operation.path, case.body)
            ):
                # Schema-valid, yet a cell of the wrong column's type or ragged columns: a 422 naming it.
                response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
                assert response.status_code in (200, 422), response.text
            else:
                # /invocations documents the canonical MLflow payload but accepts, as MLflow does, more
                # (extra columns, numeric strings, ...): a schema-invalid body may be scored, never a 5xx.
                lenient = [negative_data_rejection] if case.operation.path == "/invocations" else []
                response = case.call_and_validate(excluded_checks=lenient)
            calls.append((case.operation.path, response.status_code))

        run()
    assert calls and all(status < 500 for _, status in calls)
    if mode is GenerationMode.POSITIVE:
        assert ("/predict", 200) in calls and ("/invocations", 200) in calls
