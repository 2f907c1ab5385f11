"""Flask test-client tests: every endpoint and every class of bad input."""

from __future__ import annotations

import io
import json
import logging
import re

import numpy as np
import pytest

from serving.app import create_app
from serving.observability import ACCESS_LOGGER, JsonFormatter, JsonStdoutHandler


@pytest.fixture(scope="module")
def app(lr_model):
    return create_app({"MODEL_DIR": str(lr_model.path), "MAX_ROWS": 50, "MAX_CONTENT_LENGTH": 200_000})


@pytest.fixture()
def client(app):
    return app.test_client()


def _error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert body["request_id"]
    return body["error"]


# ---- happy paths ----------------------------------------------------------------------------


def test_healthz(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok"}


def test_readyz_runs_a_smoke_prediction(client):
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json()["status"] == "ready"


def test_readyz_fails_when_the_model_stops_predicting(lr_model):
    app = create_app({"MODEL_DIR": str(lr_model.path)})
    model = app.extensions["flightdeck_model"]

    def broken(batch):  # fault injection: the loaded model raises on every call
        raise RuntimeError("weights gone")

    model.predict_batch = broken
    resp = app.test_client().get("/readyz")
    err = _error(resp, 503, "not_ready")
    assert "weights gone" in err["message"]


def test_version_reports_lineage_from_env(lr_model, monkeypatch):
    lineage = {
        "MODEL_NAME": "serving-test-model",
        "MODEL_VERSION": "7",
        "RUN_ID": "abc123",
        "DATA_VERSION": "batch-0003",
        "GIT_SHA": "deadbeef",
        "IMAGE_TAG": "registry/serving:7",
        "IMAGE_DIGEST": "sha256:0123",
    }
    for key, value in lineage.items():
        monkeypatch.setenv(key, value)
    body = create_app({"MODEL_DIR": str(lr_model.path)}).test_client().get("/version").get_json()
    assert body["model_name"] == "serving-test-model"
    assert body["model_version"] == "7"
    assert body["run_id"] == "abc123"
    assert body["data_version"] == "batch-0003"
    assert body["git_sha"] == "deadbeef"
    assert body["image_tag"] == "registry/serving:7"
    assert body["image_digest"] == "sha256:0123"
    assert body["predict_path"] == "sklearn-native"
    assert body["columns"] == 30


def test_predict_rows_matches_the_estimator(client, lr_model):
    resp = client.post("/predict", json={"rows": lr_model.records(0, 25)})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["predictions"] == lr_model.expected(0, 25)
    assert resp.headers["X-Request-ID"] == resp.get_json()["request_id"]


def test_predict_columns_matches_the_estimator(client, lr_model):
    frame = lr_model.X.iloc[100:110]
    columns = {c: frame[c].tolist() for c in reversed(lr_model.columns)}  # order must not matter
    resp = client.post("/predict", json={"columns": columns})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["predictions"] == lr_model.expected(100, 10)


def test_integers_are_valid_doubles(client, lr_model):
    row = {k: int(round(v)) for k, v in lr_model.records(3)[0].items()}
    resp = client.post("/predict", json={"rows": [row]})
    assert resp.status_code == 200
    frame = lr_model.X.iloc[[0]].copy()
    frame.iloc[0] = [row[c] for c in lr_model.columns]
    assert resp.get_json()["predictions"] == lr_model.estimator.predict(frame).tolist()


@pytest.mark.parametrize("fmt", ["dataframe_split", "dataframe_records", "instances", "inputs", "inputs_columns"])
def test_invocations_speaks_the_mlflow_scoring_protocol(client, lr_model, fmt):
    frame = lr_model.X.iloc[40:52]
    if fmt == "dataframe_split":
        split = json.loads(frame.to_json(orient="split"))
        split["columns"] = list(reversed(split["columns"]))  # a different column order
        split["data"] = [list(reversed(r)) for r in split["data"]]
        body = {"dataframe_split": split}
    elif fmt == "inputs_columns":
        body = {"inputs": {c: frame[c].tolist() for c in frame.columns}}
    else:
        body = {fmt: frame.to_dict(orient="records")}
    resp = client.post("/invocations", json=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json() == {"predictions": lr_model.expected(40, 12)}


def test_forest_served_natively(rf_model):
    client = create_app({"MODEL_DIR": str(rf_model.path)}).test_client()
    assert client.get("/version").get_json()["predict_path"] == "sklearn-native"
    resp = client.post("/predict", json={"rows": rf_model.records(200, 30)})
    assert resp.get_json()["predictions"] == rf_model.expected(200, 30)


def test_mixed_types_are_served_natively_with_the_same_checks(mixed_model):
    client = create_app({"MODEL_DIR": str(mixed_model.path)}).test_client()
    version = client.get("/version").get_json()
    assert version["predict_path"] == "sklearn-native"
    assert version["evaluator"].startswith("compiled ColumnTransformer + ")
    rows = mixed_model.records(0, 20)
    resp = client.post("/predict", json={"rows": rows})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["predictions"] == mixed_model.expected(0, 20)
    bad = dict(rows[0], visits=2.5)  # a double where the signature says long
    err = _error(client.post("/predict", json={"rows": [bad]}), 422, "wrong_type")
    assert err["details"]["column"] == "visits" and err["details"]["expected"] == "long"
    err = _error(client.post("/predict", json={"rows": [dict(rows[0], member=1)]}), 422, "wrong_type")
    assert err["details"]["column"] == "member"
    err = _error(client.post("/predict", json={"rows": [dict(rows[0], visits=2**63)]}), 422, "out_of_range")


# ---- bad input: always a 4xx with a JSON error naming the problem ----------------------------


def test_missing_column_is_named(client, lr_model):
    row = lr_model.records()[0]
    del row["mean radius"]
    err = _error(client.post("/predict", json={"rows": [row]}), 422, "missing_columns")
    assert err["details"]["missing"] == ["mean radius"]
    assert "mean radius" in err["message"]


def test_extra_column_is_named(client, lr_model):
    rows = lr_model.records(0, 3)
    rows[2]["colour"] = 1.0
    err = _error(client.post("/predict", json={"rows": rows}), 422, "unknown_columns")
    assert err["details"] == {"unknown": ["colour"], "row": 2}


def test_split_with_missing_and_extra_columns(client, lr_model):
    cols = lr_model.columns[1:] + ["bogus"]
    body = {"dataframe_split": {"columns": cols, "data": [[0.0] * len(cols)]}}
    err = _error(client.post("/invocations", json=body), 422, "missing_columns")
    assert err["details"]["missing"] == [lr_model.columns[0]]


@pytest.mark.parametrize(
    ("value", "got"), [("12.5", "string"), (None, "null"), (True, "boolean"), ([1.0], "array"), ({}, "object")]
)
def test_wrong_type_names_row_column_and_type(client, lr_model, value, got):
    rows = lr_model.records(0, 2)
    rows[1]["worst area"] = value
    err = _error(client.post("/predict", json={"rows": rows}), 422, "wrong_type")
    assert err["details"] == {"row": 1, "column": "worst area", "expected": "double", "got": got}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_rejected(client, lr_model, literal):
    row = lr_model.records()[0]
    text = json.dumps({"rows": [row]}).replace(str(row["mean area"]), literal, 1)
    err = _error(client.post("/predict", data=text, content_type="application/json"), 422, "non_finite")
    assert literal.lstrip("-") in err["message"]


def test_overflowing_number_is_rejected_with_its_position(client, lr_model):
    rows = lr_model.records(0, 3)
    text = json.dumps({"rows": rows})
    needle = json.dumps(rows[2]["mean texture"])
    text = text[: text.rindex(needle)] + "1e999" + text[text.rindex(needle) + len(needle) :]
    err = _error(client.post("/predict", data=text, content_type="application/json"), 422, "non_finite")
    assert err["details"] == {"row": 2, "column": "mean texture"}


def test_empty_inputs(client):
    _error(client.post("/predict", json={"rows": []}), 400, "empty_input")
    _error(client.post("/predict", json={"columns": {}}), 422, "missing_columns")
    _error(client.post("/invocations", json={"dataframe_records": []}), 400, "empty_input")
    _error(client.post("/predict", data=b"", content_type="application/json"), 400, "empty_body")


def test_too_many_rows(client, lr_model):
    rows = lr_model.records(0, 51)  # MAX_ROWS is 50 in this app
    err = _error(client.post("/predict", json={"rows": rows}), 413, "too_many_rows")
    assert err["details"]["max_rows"] == 50


def test_body_too_large(client):
    blob = b'{"rows": [' + b" " * 300_000 + b"]}"
    err = _error(client.post("/predict", data=blob, content_type="application/json"), 413, "body_too_large")
    assert err["details"]["max_bytes"] == 200_000


@pytest.mark.parametrize("payload", [b"{not json", b"\xff\xfe\x00", b'{"rows": [1, 2'])
def test_non_json(client, payload):
    _error(client.post("/predict", data=payload, content_type="application/json"), 400, "invalid_json")


def test_wrong_content_type(client, lr_model):
    resp = client.post("/predict", data=json.dumps({"rows": lr_model.records()}), content_type="text/csv")
    _error(resp, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/predict", []),
        ("/predict", {"rows": [], "columns": {}}),
        ("/predict", {"records": []}),
        ("/predict", {"rows": {"a": 1}}),
        ("/invocations", {"dataframe_split": {"columns": ["a"]}, "instances": []}),
        ("/invocations", {"dataframe_split": [1, 2]}),
        ("/invocations", "a string"),
        ("/invocations", {"tensor": [1]}),
    ],
)
def test_wrong_shape(client, path, body):
    _error(client.post(path, json=body), 400, "bad_shape")


def test_rows_that_are_not_objects(client):
    _error(client.post("/predict", json={"rows": [[1.0, 2.0]]}), 422, "bad_row")


def test_ragged_columns(client, lr_model):
    columns = {c: [1.0, 2.0] for c in lr_model.columns}
    columns["mean radius"] = [1.0]
    _error(client.post("/predict", json={"columns": columns}), 422, "ragged_columns")


def test_unknown_params_are_ignored_as_mlflow_ignores_them_and_named(client, lr_model):
    body = {"dataframe_records": lr_model.records(), "params": {"threshold": 0.3}}
    resp = client.post("/invocations", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json["predictions"] == lr_model.expected()
    assert json.loads(resp.headers["X-Ignored-Params"]) == ["threshold"]


def test_unknown_route_and_method_are_json(client):
    _error(client.get("/nope"), 404, "not_found")
    _error(client.get("/predict"), 405, "method_not_allowed")


@pytest.mark.parametrize("path", ["/predict", "/invocations"])
def test_scoring_routes_answer_other_methods_as_flask_does(client, path):
    # The scoring routes bypass Flask (serving/scoring.py); their 405/OPTIONS/HEAD answers must not change.
    for method in ("GET", "PUT", "DELETE"):
        resp = client.open(path, method=method)
        _error(resp, 405, "method_not_allowed")
        assert resp.headers["Allow"] == "OPTIONS, POST"
    options = client.options(path)
    assert options.status_code == 200 and options.headers["Allow"] == "OPTIONS, POST"
    head = client.head(path)
    assert head.status_code == 405 and head.get_data() == b""
    assert int(head.headers["Content-Length"]) > 0  # the length of the body a GET would get


def test_a_model_failure_is_a_logged_json_500(lr_model, caplog):
    app = create_app({"MODEL_DIR": str(lr_model.path)})

    def broken(batch):  # fault injection: the estimator raises mid-request
        raise MemoryError("no room")

    app.extensions["flightdeck_model"].predict_batch = broken
    with caplog.at_level(logging.ERROR, logger="serving"):
        resp = app.test_client().post("/predict", json={"rows": lr_model.records()}, headers={"X-Request-ID": "r-9"})
    err = _error(resp, 500, "internal_error")
    assert err["message"] == "MemoryError while handling the request"
    assert "request_id=r-9" in caplog.text and "no room" in caplog.text  # the traceback is logged, not sent


def test_chunked_body_is_read_and_limited(client, lr_model):
    # As gunicorn passes a chunked body: no Content-Length, the server ends the stream.
    chunked = {"headers": {"Transfer-Encoding": "chunked"}, "environ_overrides": {"wsgi.input_terminated": True}}
    body = json.dumps({"rows": lr_model.records(0, 2)}).encode()
    resp = client.post("/predict", input_stream=io.BytesIO(body), content_type="application/json", **chunked)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["predictions"] == lr_model.expected(0, 2)
    blob = io.BytesIO(b'{"rows": [' + b" " * 300_000 + b"]}")
    resp = client.post("/predict", input_stream=blob, content_type="application/json", **chunked)
    assert _error(resp, 413, "body_too_large")["details"]["max_bytes"] == 200_000


# ---- observability ---------------------------------------------------------------------------


def test_metrics_count_requests_by_route_status_and_model_version(lr_model, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("MODEL_VERSION", "42")
    client = create_app({"MODEL_DIR": str(lr_model.path)}).test_client()
    for _ in range(3):
        client.post("/predict", json={"rows": lr_model.records(0, 2)})
    client.post("/predict", json={"rows": []})
    client.get("/does-not-exist")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'flightdeck_http_requests_total{method="POST",model_version="42",route="/predict",status="200"} 3.0' in text
    assert 'route="/predict",status="400"} 1.0' in text
    assert 'route="unmatched",status="404"} 1.0' in text
    assert (
        'flightdeck_http_request_duration_seconds_count{method="POST",model_version="42",route="/predict"} 4.0' in text
    )
    assert 'flightdeck_predicted_rows_total{model_version="42"} 6.0' in text
    assert 'flightdeck_model_info{model_name="unknown",model_version="42",predict_path="sklearn-native"} 1.0' in text


def test_a_body_shorter_than_its_content_length_is_a_400(client):
    short = io.BytesIO(b'{"rows": [')  # the client went away before sending the 100 bytes it announced
    announced = {"environ_overrides": {"CONTENT_LENGTH": "100"}}
    resp = client.post("/predict", input_stream=short, content_type="application/json", **announced)
    assert "Content-Length" in _error(resp, 400, "bad_request")["message"]  # not a 500, not "invalid JSON"


def test_access_log_is_json_with_the_request_id(client, lr_model):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    try:
        resp = client.post("/predict", json={"rows": lr_model.records(0, 4)}, headers={"X-Request-ID": "req-123"})
        client.post("/predict", json={"rows": []}, headers={"X-Request-ID": "bad id with spaces"})
    finally:
        logger.removeHandler(handler)
    assert resp.headers["X-Request-ID"] == "req-123"
    ok, bad = (json.loads(line) for line in stream.getvalue().splitlines())
    assert ok["request_id"] == "req-123" and ok["status"] == 200 and ok["rows"] == 4
    assert ok["path"] == "/predict" and ok["duration_ms"] > 0 and ok["level"] == "info"
    assert bad["status"] == 400 and bad["request_id"] != "bad id with spaces" and len(bad["request_id"]) == 32


def test_access_log_lines_are_the_same_written_directly_or_through_logging(client, lr_model, monkeypatch):
    # The server's set-up (one JSON stdout handler) writes lines straight to its stream; any other
    # set-up goes through a LogRecord. Both must produce the same line.
    logger = logging.getLogger(ACCESS_LOGGER)
    stream = io.StringIO()
    only = JsonStdoutHandler()
    only.setStream(stream)
    monkeypatch.setattr(logger, "handlers", [only])
    body = {"rows": lr_model.records(0, 2)}
    client.post("/predict", json=body, headers={"X-Request-ID": "same-1"})
    records: list[logging.LogRecord] = []
    monkeypatch.setattr(logger, "filters", [lambda r: records.append(r) or True])  # a filter: the LogRecord path
    client.post("/predict", json=body, headers={"X-Request-ID": "same-1"})
    assert len(records) == 1  # the second line went through logging, the first did not
    direct, logged = (json.loads(line) for line in stream.getvalue().splitlines())
    for line in (direct, logged):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("ts"))
        assert line.pop("duration_ms") > 0
    assert direct == logged
    assert direct["msg"] == "POST /predict 200" and direct["logger"] == ACCESS_LOGGER and direct["rows"] == 2


def test_openapi_names_the_signature_columns(client, lr_model):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/predict", "/invocations", "/healthz", "/readyz", "/version", "/metrics"}
    row = doc["components"]["schemas"]["Row"]
    assert row["required"] == lr_model.columns and row["additionalProperties"] is False
    assert row["properties"]["mean radius"] == {"type": "number"}


def test_predictions_are_plain_json_numbers(client, lr_model):
    preds = client.post("/predict", json={"rows": lr_model.records(0, 3)}).get_json()["predictions"]
    assert all(type(p) is int for p in preds)
    assert np.array_equal(preds, lr_model.expected(0, 3))


@pytest.mark.parametrize("path", ["/ping", "/health"])
def test_ping_and_health_answer_like_mlflows_scoring_server(client, path):
    resp = client.get(path)
    assert resp.status_code == 200 and resp.get_json()["status"] == "ready"


@pytest.mark.parametrize("path", ["/predict", "/invocations"])
@pytest.mark.parametrize(
    "body",
    ["[" * 5000 + "]" * 5000, '{"a":' * 5000 + "1" + "}" * 5000, '{"rows": ' + "[" * 3000 + "]" * 3000 + "}"],
    ids=["arrays", "objects", "under-a-key"],
)
def test_json_nested_beyond_the_parsers_limit_is_a_400_naming_it(client, path, body):
    resp = client.post(path, data=body, content_type="application/json")
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "too_deep"
    assert "deeper than 1024 levels" in resp.get_json()["error"]["message"]


def test_an_unscorable_row_is_a_422_not_a_null_probability(client, lr_model):
    """Doubles at the edge of float64 (the fuzz test found +-1.8e308 side by side) make the linear score
    inf - inf = NaN: JSON has no NaN, so the server names the rows instead of answering null probabilities."""
    good = lr_model.records()[0]
    edge = {name: (1.7976931348623157e308 if i % 2 else -1.7976931348623157e308) for i, name in enumerate(good)}
    resp = client.post("/predict", json={"rows": [good, edge], "return_probabilities": True})
    body = _error(resp, 422, "non_finite_output")
    assert "row(s) [1]" in body["message"]
    ok = client.post("/predict", json={"rows": [good], "return_probabilities": True})
    assert ok.status_code == 200 and all(0 <= p <= 1 for p in ok.get_json()["probabilities"][0])
