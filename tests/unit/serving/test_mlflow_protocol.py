"""/invocations reads what MLflow's scoring server reads: shapes, CSV, params, coercions, extra columns.

Answers are compared with MLflow's own `scoring_server.invocations` called in process on the same model
directory (the integration test does the same against `mlflow models serve` over a generated corpus).
"""

from __future__ import annotations

import json
import logging

import pytest

from serving.app import create_app
from serving.mlflow_protocol import csv_columns, media_type
from serving.schema import RequestError

ROW = {"city": "oslo", "visits": 3, "member": True, "spend": 100.5}


@pytest.fixture(scope="module")
def client(mixed_model):
    return create_app({"MODEL_DIR": str(mixed_model.path)}).test_client()


@pytest.fixture(scope="module")
def mlflow_answer(mixed_model):
    """(status, predictions or None) from MLflow's own scoring code on the same model."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(str(mixed_model.path))
    logging.getLogger("mlflow").setLevel(logging.ERROR)

    def answer(body: str, ctype: str) -> tuple[int, list | None]:
        try:
            result = scoring_server.invocations(body, ctype, model, model.metadata.get_input_schema())
        except MlflowException as exc:
            return exc.get_http_status_code(), None
        return result.status, json.loads(result.response)["predictions"] if result.status == 200 else None

    return answer


def _both(client, mlflow_answer, body, ctype="application/json"):
    text = body if isinstance(body, str) else json.dumps(body)
    resp = client.post("/invocations", data=text, headers={"Content-Type": ctype})
    theirs = mlflow_answer(text, ctype)
    return resp, theirs


ACCEPTED = {
    "extra_field_next_to_the_features": {"dataframe_records": [{**ROW, "request_id": "r-1"}]},
    "integral_float_for_a_long": {"dataframe_records": [{**ROW, "visits": 3.0}]},
    "integer_string_for_a_long": {"instances": [{**ROW, "visits": " 3 "}]},
    "numeric_string_for_a_double": {"dataframe_records": [{**ROW, "spend": "100.5"}]},
    "integer_for_a_double": {"inputs": {**{k: [v] for k, v in ROW.items()}, "spend": [100]}},
    "one_and_zero_for_booleans": {"dataframe_split": {"columns": list(ROW), "data": [["oslo", 3, 1, 100.5]]}},
    "split_with_index": {"dataframe_split": {"index": [9], "columns": list(ROW), "data": [list(ROW.values())]}},
    "split_rows_as_objects": {"dataframe_split": {"columns": list(ROW), "data": [ROW]}},
    "inputs_as_one_row_of_scalars": {"inputs": ROW},
    "inputs_as_records": {"inputs": [ROW, {**ROW, "city": "rome"}]},
    "instances_as_columns": {"instances": {k: [v, v] for k, v in ROW.items()}},
    "scalar_repeated_next_to_lists": {"inputs": {**{k: [v, v] for k, v in ROW.items()}, "city": "rome"}},
    "params_mlflow_ignores": {"dataframe_records": [ROW], "params": {"temperature": 0.1}},
    "params_not_an_object": {"dataframe_records": [ROW], "params": [1]},
    "top_level_keys_mlflow_ignores": {"dataframe_records": [ROW], "client": "x"},
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_inputs_mlflow_accepts_get_mlflows_predictions(client, mlflow_answer, case):
    resp, (status, predictions) = _both(client, mlflow_answer, ACCEPTED[case])
    assert status == 200
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["predictions"] == predictions


CSV = "city,visits,member,spend\noslo,3,True,100.5\nrome,4,false,90\n"
CSV_ACCEPTED = {
    "plain": (CSV, "text/csv"),
    "with_charset": (CSV, "text/csv; charset=UTF-8"),
    "pandas_index_column": (",city,visits,member,spend\n0,oslo,3,True,100.5\n", "text/csv"),
    "reordered_and_extra_columns": ("rid,spend,city,visits,member\na,100.5,oslo,3,1\n", "text/csv"),
    "float_text_for_a_long_and_exponent": ("city,visits,member,spend\noslo,3.0,TRUE,1e2\n", "text/csv"),
    "quoted_cells_crlf_and_bom": ('\ufeffcity,visits,member,spend\r\n"oslo","3",True,"100.5"\r\n', "text/csv"),
}


@pytest.mark.parametrize("case", list(CSV_ACCEPTED))
def test_csv_bodies_get_mlflows_predictions(client, mlflow_answer, case):
    body, ctype = CSV_ACCEPTED[case]
    resp, (status, predictions) = _both(client, mlflow_answer, body, ctype)
    assert status == 200
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["predictions"] == predictions


REFUSED = {
    "missing_column": ({"dataframe_records": [{k: v for k, v in ROW.items() if k != "spend"}]}, "application/json"),
    "unparsable_number": ({"dataframe_records": [{**ROW, "spend": "abc"}]}, "application/json"),
    "null_in_a_long": ({"instances": [{**ROW, "visits": None}]}, "application/json"),
    "two_input_keys": ({"dataframe_records": [ROW], "inputs": [ROW]}, "application/json"),
    "llm_key": ({"dataframe_records": [ROW], "messages": []}, "application/json"),
    "ragged_split_row": ({"dataframe_split": {"columns": list(ROW), "data": [[1, 2]]}}, "application/json"),
    "one_row_inputs_with_extra_key": ({"inputs": {**ROW, "rid": "x"}}, "application/json"),
    "csv_fractional_long": ("city,visits,member,spend\noslo,3.5,True,1\n", "text/csv"),
    "csv_empty_boolean": ("city,visits,member,spend\noslo,3,,1\n", "text/csv"),
    "csv_digit_separator": ("city,visits,member,spend\noslo,3,True,1_0\n", "text/csv"),
    "csv_header_only": ("city,visits,member,spend\n", "text/csv"),
    "latin1_charset": (CSV, "text/csv; charset=latin-1"),
    "unknown_content_type_parameter": (CSV, "text/csv; header=present"),
    "xml": ("<a/>", "application/xml"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_inputs_mlflow_refuses_get_the_same_status_class(client, mlflow_answer, case):
    body, ctype = REFUSED[case]
    resp, (status, _) = _both(client, mlflow_answer, body, ctype)
    assert status // 100 == 4
    assert resp.status_code // 100 == 4, resp.get_data(as_text=True)
    assert resp.get_json()["error"]["message"]
    if status == 415:
        assert resp.status_code == 415


def test_extra_columns_are_ignored_and_named_in_x_ignored_columns(client):
    rows = [{**ROW, "request_id": "r-1", "trace": 7}, {**ROW, "région": None}]
    resp = client.post("/invocations", json={"dataframe_records": rows})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert json.loads(resp.headers["X-Ignored-Columns"]) == ["request_id", "trace", "région"]
    assert resp.headers["X-Ignored-Columns"].isascii()
    assert "X-Ignored-Columns" not in client.post("/invocations", json={"dataframe_records": [ROW]}).headers


def test_ignored_columns_header_lists_at_most_100_names_and_counts_them(client):
    row = {**ROW, **{f"x{i}": i for i in range(150)}}
    resp = client.post("/invocations", json={"dataframe_records": [row]})
    assert len(json.loads(resp.headers["X-Ignored-Columns"])) == 100
    assert resp.headers["X-Ignored-Columns-Count"] == "150"


@pytest.mark.parametrize(
    ("value", "why"),
    [(3.7, "truncate"), ("false", "true/false"), (None, "null"), (2, "true/false")],
)
def test_casts_that_would_change_a_value_are_refused_naming_it(client, value, why):
    column = "visits" if value == 3.7 else "member"
    resp = client.post("/invocations", json={"dataframe_records": [{**ROW, column: value}]})
    assert resp.status_code == 422, resp.get_data(as_text=True)
    err = resp.get_json()["error"]
    assert err["details"]["column"] == column and why in err["message"]


def test_predict_stays_strict(client):
    resp = client.post("/predict", json={"rows": [{**ROW, "request_id": "r"}]})
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "unknown_columns"
    resp = client.post("/predict", data=CSV, headers={"Content-Type": "text/csv"})
    assert resp.status_code == 415


def test_absent_optional_column_is_refused_on_invocations_as_mlflows_sklearn_flavor_does(forest_bool_labels):
    client = create_app({"MODEL_DIR": str(forest_bool_labels.path)}).test_client()
    row = {"age": 40.0, "visits": 3, "city": "oslo", "plan": "pro", "member": True}
    without_city = {k: v for k, v in row.items() if k != "city"}
    resp = client.post("/invocations", json={"dataframe_records": [without_city]})
    assert resp.status_code == 422 and resp.get_json()["error"]["details"]["missing"] == ["city"]
    # Left out of one row only, it is a null there (as in MLflow's DataFrame); /predict fills it always.
    assert client.post("/invocations", json={"dataframe_records": [row, without_city]}).status_code == 200
    assert client.post("/predict", json={"rows": [without_city]}).status_code == 200


def test_media_type_follows_mlflows_rules():
    assert media_type("text/csv; charset=utf-8") == "text/csv"
    assert media_type("Application/JSON") == "application/json"
    for bad in (None, "text/plain", "application/json; charset=utf-16", "text/csv; sep=;"):
        with pytest.raises(RequestError) as exc:
            media_type(bad)
        assert exc.value.status == 415


def test_csv_columns_reads_as_pandas_does():
    cols = csv_columns(b'\xef\xbb\xbf,a,a,b\r\n0,1,"x,y",\r\n\r\n1,2,z\r\n')
    assert cols == {"Unnamed: 0": ["0", "1"], "a": ["1", "2"], "a.1": ["x,y", "z"], "b": ["", ""]}
