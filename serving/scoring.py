"""The scoring routes, `POST /predict` and `POST /invocations`, as plain WSGI in front of Flask.

These two routes are the server's hot path. Flask's request/app contexts, routing and Response
object cost ~0.2 ms of CPU per request under gunicorn here (0.82 -> 0.63 ms per 1-row request with
the same model when they were taken off this path), about as much as gunicorn's own HTTP handling, so
`ScoringRoutes` answers these routes itself and hands every other path to the Flask app. The
answers are the ones Flask gave: JSON bodies, the same error codes and messages, the same body-size
and Content-Type rules, `405` with `Allow` for another method, `OPTIONS` and `HEAD` as Flask answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from werkzeug.exceptions import ClientDisconnected, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_input_stream

from serving.capture import Capture
from serving.mlflow_protocol import (
    CONTENT_CSV,
    CONTENT_JSON,
    Parsed,
    body_keys,
    coerce,
    csv_columns,
    has_all_columns,
    json_columns,
    media_type,
    parquet_columns,
)
from serving.model import LoadedModel
from serving.observability import Metrics
from serving.schema import Batch, RequestError, json_type, parse_json

log = logging.getLogger("serving")

ENV_REQUEST_ID = "flightdeck.request_id"
ENV_ROWS = "flightdeck.rows"
ALLOWED = "OPTIONS, POST"
PREDICT_METHODS = ("predict", "predict_proba")
PREDICT_SHAPE = (
    'send {"rows": [{column: value, ...}, ...]} or {"columns": {column: [values]}}, '
    'optionally with "return_probabilities": true'
)
# Status lines as werkzeug writes them ("422 UNPROCESSABLE ENTITY").
_STATUS_LINES = {code: f"{code} {phrase.upper()}" for code, phrase in HTTP_STATUS_CODES.items()}

StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]
IGNORED_COLUMNS_HEADER = "X-Ignored-Columns"
IGNORED_PARAMS_HEADER = "X-Ignored-Params"
_HEADER_NAMES_MAX = 100  # names listed in an X-Ignored-* header; the count header says how many in all


def json_bytes(payload: Any) -> bytes:
    """`payload` as compact UTF-8 JSON; numpy arrays and scalars serialize natively (orjson OPT_SERIALIZE_NUMPY)."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def error_payload(
    status: int, code: str, message: str, details: Mapping[str, Any] | None, request_id: str | None
) -> dict[str, Any]:
    """The one JSON error shape of the server (also used by the Flask app's error handlers)."""
    return {"error": {"code": code, "message": message, "details": dict(details or {})}, "request_id": request_id}


def read_json_body(environ: Mapping[str, Any], max_bytes: int) -> Any:
    """The request body parsed as JSON.

    Raises RequestError: 415 unless it is JSON, 413 past `max_bytes` bytes, 400 if unparsable."""
    ctype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    if ctype != "application/json":
        raise RequestError(
            415, "unsupported_media_type", f"Content-Type must be application/json, got {ctype or 'none'}"
        )
    return parse_json(read_body(environ, max_bytes))


def read_body(environ: Mapping[str, Any], max_bytes: int) -> bytes:
    """The raw request body, at most `max_bytes` long.

    Raises RequestError: 413 `body_too_large` past `max_bytes` (after draining what the client still
    sends, see `_drain`), 400 `bad_request` for a body shorter than its Content-Length, 408
    `request_timeout` when the client stops sending (a socket timeout).
    """
    # werkzeug's own body stream, as Flask's request.get_data() reads it (Content-Length, chunked
    # bodies the server terminates, early disconnects). Its limit is asked one byte higher: werkzeug
    # stops a chunked body at the limit without an error, and a cut-off body must be a 413, not bad JSON.
    try:
        data = get_input_stream(environ, max_content_length=max_bytes + 1).read()
    except RequestEntityTooLarge:
        _drain(environ)
        raise _body_too_large(max_bytes) from None
    except ClientDisconnected as exc:
        # werkzeug turns the socket timeout the worker sets (serving/gunicorn_worker.py) into this too
        if isinstance(exc.__context__, TimeoutError):
            raise RequestError(408, "request_timeout", "the client paused too long while sending the body") from None
        raise RequestError(400, "bad_request", "the body ended before the Content-Length it announced") from None
    if len(data) > max_bytes:
        _drain(environ)
        raise _body_too_large(max_bytes)
    return data


# A client writes its whole body before it reads an answer (requests, urllib; curl after a
# `100 Continue`). Answering a too-large body and closing while it still writes resets the
# connection: the client sees a broken pipe, not the 413. So the rest is read and dropped first, up
# to this many bytes (~0.1 s on loopback); past that the connection is closed unread.
DRAIN_MAX_BYTES = 64 * 1024 * 1024
_DRAIN_CHUNK = 256 * 1024


def _drain(environ: Mapping[str, Any]) -> None:
    """Read and drop the rest of a refused body (at most DRAIN_MAX_BYTES; a read error ends it)."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > DRAIN_MAX_BYTES:
        return
    left = DRAIN_MAX_BYTES
    try:
        while left > 0:
            chunk = stream.read(min(_DRAIN_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
    except (OSError, ValueError):  # the client went away or stalled: nothing more to do
        return


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
        capture: Capture | None = None,
    ) -> None:
        self.fallback = fallback
        self.capture = capture  # records sampled 200 answers (serving/capture.py); None = off
        self.model = model
        self.validator = model.validator
        self.rows_metric = metrics.rows_child
        self.model_name = lineage.get("model_name")
        self.model_version = lineage.get("model_version")
        self.max_body_bytes = max_body_bytes
        # MLflow's sklearn flavor cannot score without a column the estimator was fitted on, even an
        # optional one: /invocations refuses an optional column absent from the whole request, as it does.
        self.optional = [name for name in self.validator.order if name not in self.validator.required]
        self.absent_optional_ok = model.flavor != "sklearn" or not self.optional
        self.routes: dict[str, Callable[[dict[str, Any], str | None], tuple[dict[str, Any], int, Headers]]] = {
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
                payload, environ[ENV_ROWS], headers = route(environ, environ.get(ENV_REQUEST_ID))
                return _respond(start_response, 200, json_bytes(payload), headers)
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

    def predict(self, environ: dict[str, Any], request_id: str | None) -> tuple[dict[str, Any], int, Headers]:
        """`{"rows": [...]}` or `{"columns": {...}}`, plus `"return_probabilities": true` for classifiers.

        Returns `{"predictions", "model_name", "model_version", "request_id"}` and, with probabilities,
        `"probabilities"` (one list per row) and `"classes"` (the label of each list position).

        Strict by design, unlike `/invocations`: JSON only, exactly the signature's columns (an unknown
        column is a 422 naming it, not ignored), values of the signature's types (integers are valid
        doubles; no numeric strings, no 0/1 for booleans), nulls only in optional columns (which may
        also be left out).

        Raises RequestError (400/413/415/422, the JSON error body's `code` naming the problem) for any
        request that breaks these rules.
        """
        body = read_json_body(environ, self.max_body_bytes)
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
        if self.capture is not None:  # only now is the answer a 200
            self.capture.offer(request_id, "/predict", batch.columns, batch.matrix, payload["predictions"])
        return payload, batch.n_rows, []

    def invocations(self, environ: dict[str, Any], request_id: str | None) -> tuple[dict[str, Any], int, Headers]:
        """MLflow's scoring protocol, as `mlflow models serve` (3.x) accepts it (serving/mlflow_protocol.py).

        JSON (`dataframe_split`, `dataframe_records`, `instances`, `inputs`, with `params`), CSV and
        Parquet bodies. Columns outside the signature are ignored and named in `X-Ignored-Columns` (a
        JSON array), params this server does not use in `X-Ignored-Params`; each comes with an
        `...-Count` header when there are more names than it lists.

        `"params": {"predict_method": "predict_proba"}` asks for probabilities. MLflow 3.17's sklearn
        pyfunc has no per-request method (`pyfunc_predict_fn` is fixed when the model is logged; its
        `predict` ignores `params`). A model logged with `pyfunc_predict_fn="predict_proba"` answers
        `{"predictions": [[p, ...], ...]}`; this param gives that answer from the same model. Other
        params are ignored, as MLflow ignores them for a model without a params schema.

        Raises RequestError (400/413/415/422) where MLflow's server answers an error for the same request.
        """
        mime = media_type(environ.get("CONTENT_TYPE"))
        data = read_body(environ, self.max_body_bytes)
        method, ignored_params = "predict", []
        if mime == CONTENT_JSON:
            body = parse_json(data)
            key = body_keys(body)
            method, ignored_params = _predict_method(body.get("params"))
            parsed = self._json_input(key, body[key])
        else:
            if not data.strip():
                raise RequestError(400, "empty_body", f"the request body is empty; send {mime}")
            columns = csv_columns(data) if mime == CONTENT_CSV else parquet_columns(data)
            where = "csv" if mime == CONTENT_CSV else "parquet"
            parsed = coerce(
                self.validator, columns, where, text=mime == CONTENT_CSV, absent_optional_ok=self.absent_optional_ok
            )
        batch = parsed.batch
        headers = _names_header(IGNORED_COLUMNS_HEADER, parsed.ignored) + _names_header(
            IGNORED_PARAMS_HEADER, ignored_params
        )
        if method == "predict_proba":
            predictions = self.model.predict_proba(batch)
            self.rows_metric.inc(batch.n_rows)
        else:
            predictions = self._score(batch)
        # Captures hold predictions (what drift and live quality compare); a probabilities answer is not recorded.
        if self.capture is not None and method == "predict":
            self.capture.offer(request_id, "/invocations", batch.columns, batch.matrix, predictions)
        return {"predictions": predictions}, batch.n_rows, headers

    def _json_input(self, key: str, payload: Any) -> Parsed:
        """The strict validator first (the hot path: exact columns and types); MLflow's reading otherwise."""
        validator = self.validator
        try:
            if key == "dataframe_split":
                batch = validator.split(payload, key)
            elif key == "dataframe_records" or type(payload) is list:
                batch = validator.records(payload, key)
            else:
                batch = validator.columnar(payload, key)
        except RequestError as strict:
            if strict.status == 413:
                raise
        else:
            if self.absent_optional_ok or has_all_columns(key, payload, self.optional):
                return Parsed(batch, [])
        columns = json_columns(key, payload, validator)
        return coerce(validator, columns, key, absent_optional_ok=self.absent_optional_ok)


def _names_header(name: str, names: list[str]) -> Headers:
    """`name: ["a", "b"]` (a JSON array, ASCII-escaped as a header must be) and a count past the limit."""
    if not names:
        return []
    headers = [(name, json.dumps(names[:_HEADER_NAMES_MAX], ensure_ascii=True))]
    if len(names) > _HEADER_NAMES_MAX:
        headers.append((f"{name}-Count", str(len(names))))
    return headers


def _predict_method(params: Any) -> tuple[str, list[str]]:
    """The `predict_method` of /invocations' `params` ("predict" without one) and the params ignored.

    MLflow ignores params a model does not declare (a sklearn model declares none), whatever their
    shape; so does this server, naming them. Only a `predict_method` it cannot honour is a 422.
    """
    if params is None or params == {}:
        return "predict", []
    if type(params) is not dict:
        return "predict", ["params"]
    ignored = [str(name) for name in params if name != "predict_method"]
    method = params.get("predict_method", "predict")
    if method not in PREDICT_METHODS:
        raise RequestError(
            422,
            "bad_param",
            f"params.predict_method must be one of {list(PREDICT_METHODS)}, got {method!r}",
            allowed=list(PREDICT_METHODS),
        )
    return str(method), ignored


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
