"""The scoring routes, `POST /predict` and `POST /invocations`, as plain WSGI in front of Flask.

These two routes are the server's hot path. Flask's request/app contexts, routing and Response
object cost ~0.2 ms of CPU per request under gunicorn here (0.82 -> 0.63 ms per 1-row request with
the same model when they were taken off this path), about as much as gunicorn's own HTTP handling, so
`ScoringRoutes` answers these routes itself and hands every other path to the Flask app. The
answers are the ones Flask gave: JSON bodies, the same error codes and messages, the same body-size
and Content-Type rules, `405` with `Allow` for another method, `OPTIONS` and `HEAD` as Flask answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from werkzeug.exceptions import ClientDisconnected, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_input_stream

from serving.model import LoadedModel
from serving.observability import Metrics
from serving.schema import Batch, RequestError, json_type, parse_json

log = logging.getLogger("serving")

ENV_REQUEST_ID = "flightdeck.request_id"
ENV_ROWS = "flightdeck.rows"
MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
ALLOWED = "OPTIONS, POST"
PREDICT_METHODS = ("predict", "predict_proba")
PREDICT_SHAPE = (
    'send {"rows": [{column: value, ...}, ...]} or {"columns": {column: [values]}}, '
    'optionally with "return_probabilities": true'
)
# Status lines as werkzeug writes them ("422 UNPROCESSABLE ENTITY").
_STATUS_LINES = {code: f"{code} {phrase.upper()}" for code, phrase in HTTP_STATUS_CODES.items()}

StartResponse = Callable[..., Any]


def json_bytes(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def error_payload(
    status: int, code: str, message: str, details: Mapping[str, Any] | None, request_id: str | None
) -> dict[str, Any]:
    """The one JSON error shape of the server (also used by the Flask app's error handlers)."""
    return {"error": {"code": code, "message": message, "details": dict(details or {})}, "request_id": request_id}


def read_json_body(environ: Mapping[str, Any], max_bytes: int) -> Any:
    """The request body parsed as JSON: 415 unless it is JSON, 413 past `max_bytes`, 400 if unparsable."""
    ctype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    if ctype != "application/json":
        raise RequestError(
            415, "unsupported_media_type", f"Content-Type must be application/json, got {ctype or 'none'}"
        )
    # werkzeug's own body stream, as Flask's request.get_data() reads it (Content-Length, chunked
    # bodies the server terminates, early disconnects). Its limit is asked one byte higher: werkzeug
    # stops a chunked body at the limit without an error, and a cut-off body must be a 413, not bad JSON.
    try:
        data = get_input_stream(environ, max_content_length=max_bytes + 1).read()
    except RequestEntityTooLarge:
        raise _body_too_large(max_bytes) from None
    except ClientDisconnected:
        raise RequestError(400, "bad_request", "the body ended before the Content-Length it announced") from None
    if len(data) > max_bytes:
        raise _body_too_large(max_bytes)
    return parse_json(data)


def _body_too_large(max_bytes: int) -> RequestError:
    return RequestError(413, "body_too_large", f"the body exceeds {max_bytes} bytes", max_bytes=max_bytes)


class ScoringRoutes:
    """WSGI: `/predict` and `/invocations` answered here, every other path passed to `fallback`."""

    def __init__(
        self,
        fallback: Callable[[dict[str, Any], StartResponse], Iterable[bytes]],
        model: LoadedModel,
        metrics: Metrics,
        lineage: Mapping[str, Any],
        max_body_bytes: int,
    ) -> None:
        self.fallback = fallback
        self.model = model
        self.validator = model.validator
        self.rows_metric = metrics.rows_child
        self.model_name = lineage.get("model_name")
        self.model_version = lineage.get("model_version")
        self.max_body_bytes = max_body_bytes
        self.routes: dict[str, Callable[[Any, str | None], tuple[dict[str, Any], int]]] = {
            "/predict": self.predict,
            "/invocations": self.invocations,
        }

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        route = self.routes.get(environ.get("PATH_INFO", ""))
        if route is None:
            return self.fallback(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        try:
            if method == "POST":
                payload, environ[ENV_ROWS] = route(
                    read_json_body(environ, self.max_body_bytes), environ.get(ENV_REQUEST_ID)
                )
                return _respond(start_response, 200, json_bytes(payload))
            if method == "OPTIONS":
                start_response(
                    "200 OK",
                    [("Allow", ALLOWED), ("Content-Type", "text/html; charset=utf-8"), ("Content-Length", "0")],
                )
                return [b""]
            raise RequestError(405, "method_not_allowed", MethodNotAllowed.description)
        except RequestError as exc:
            error = exc
        except Exception as exc:  # a bug or a broken model: a JSON 500, logged with the request id
            log.exception("unhandled error request_id=%s", environ.get(ENV_REQUEST_ID))
            error = RequestError(500, "internal_error", f"{type(exc).__name__} while handling the request")
        body = json_bytes(
            error_payload(error.status, error.code, error.message, error.details, environ.get(ENV_REQUEST_ID))
        )
        headers = [("Allow", ALLOWED)] if error.status == 405 else []
        # A HEAD answer keeps the length of the body it leaves out (as werkzeug does).
        return _respond(start_response, error.status, body, headers, omit_body=method == "HEAD")

    def _score(self, batch: Batch) -> list[Any]:
        predictions = self.model.predict(batch)
        self.rows_metric.inc(batch.n_rows)
        return predictions

    def predict(self, body: Any, request_id: str | None) -> tuple[dict[str, Any], int]:
        """`{"rows": [...]}` or `{"columns": {...}}`, plus `"return_probabilities": true` for classifiers.

        Returns `{"predictions", "model_name", "model_version", "request_id"}` and, with probabilities,
        `"probabilities"` (one list per row) and `"classes"` (the label of each list position).
        """
        if type(body) is not dict:
            raise RequestError(400, "bad_shape", PREDICT_SHAPE)
        inputs = [k for k in ("rows", "columns") if k in body]
        extra = sorted(set(body) - {"rows", "columns", "return_probabilities"})
        if len(inputs) != 1 or extra:
            raise RequestError(400, "bad_shape", PREDICT_SHAPE + (f"; unknown keys {extra}" if extra else ""))
        want_proba = body.get("return_probabilities", False)
        if type(want_proba) is not bool:
            raise RequestError(
                422, "bad_param", f"'return_probabilities' must be true or false, got {json_type(want_proba)}"
            )
        batch = self.validator.records(body["rows"]) if "rows" in body else self.validator.columnar(body["columns"])
        payload: dict[str, Any] = {
            "predictions": self._score(batch),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "request_id": request_id,
        }
        if want_proba:
            payload["probabilities"] = self.model.predict_proba(batch)
            payload["classes"] = self.model.classes
        return payload, batch.n_rows

    def invocations(self, body: Any, request_id: str | None) -> tuple[dict[str, Any], int]:
        """MLflow's scoring protocol; `"params": {"predict_method": "predict_proba"}` asks for probabilities.

        MLflow 3.17's sklearn pyfunc has no per-request method (`pyfunc_predict_fn` is fixed when the
        model is logged; its `predict` ignores `params`). A model logged with
        `pyfunc_predict_fn="predict_proba"` answers `{"predictions": [[p, ...], ...]}`; this param gives
        that answer from the same model. Any other param is refused (MLflow would log and ignore it).
        """
        if type(body) is not dict:
            raise RequestError(400, "bad_shape", f"the body must be an object with one of {list(MLFLOW_KEYS)}")
        keys = [k for k in MLFLOW_KEYS if k in body]
        unknown = sorted(set(body) - set(MLFLOW_KEYS) - {"params"})
        if len(keys) != 1 or unknown:
            raise RequestError(
                400,
                "bad_shape",
                f"the body must have exactly one of {list(MLFLOW_KEYS)}"
                + (f"; unknown keys {unknown}" if unknown else ""),
            )
        method = _predict_method(body.get("params"))
        key = keys[0]
        payload = body[key]
        if key == "dataframe_split":
            batch = self.validator.split(payload, key)
        elif key == "dataframe_records" or type(payload) is list:
            batch = self.validator.records(payload, key)
        else:
            batch = self.validator.columnar(payload, key)
        if method == "predict_proba":
            predictions = self.model.predict_proba(batch)
            self.rows_metric.inc(batch.n_rows)
            return {"predictions": predictions}, batch.n_rows
        return {"predictions": self._score(batch)}, batch.n_rows


def _predict_method(params: Any) -> str:
    """The `predict_method` of /invocations' `params` ("predict" without one); RequestError otherwise."""
    if params is None or params == {}:
        return "predict"
    if type(params) is not dict:
        raise RequestError(400, "bad_shape", f"'params' must be an object, got {json_type(params)}")
    unknown = sorted(set(params) - {"predict_method"})
    if unknown:
        raise RequestError(
            422,
            "params_not_supported",
            f"unknown inference params {unknown}; this server takes only 'predict_method'",
            unknown=unknown,
        )
    method = params["predict_method"]
    if method not in PREDICT_METHODS:
        raise RequestError(
            422,
            "bad_param",
            f"params.predict_method must be one of {list(PREDICT_METHODS)}, got {method!r}",
            allowed=list(PREDICT_METHODS),
        )
    return str(method)


def _respond(
    start_response: StartResponse,
    status: int,
    body: bytes,
    extra: list[tuple[str, str]] | None = None,
    omit_body: bool = False,
) -> list[bytes]:
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response(_STATUS_LINES[status], headers + (extra or []))
    return [b"" if omit_body else body]
