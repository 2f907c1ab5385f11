"""The Flask model server: `create_app(config=None)`, served by gunicorn (serving/gunicorn.conf.py).

The model is loaded once, when the app is created (in the gunicorn master with preload_app, so the
workers share it): from a directory baked into the image (SERVING_MODEL_DIR, default /opt/model)
or, when that holds no model, fetched from MLflow at start (MODEL_URI, e.g.
models:/flightdeck-model@champion, with MLFLOW_TRACKING_URI).

The WSGI stack, outermost first: ObservedApp (request id, metrics, access log) -> ApiKeyAuth (serving/auth.py,
only when API keys are configured) -> ScoringRoutes
(serving/scoring.py: POST /predict and /invocations, the hot path, without Flask's per-request
machinery) -> Flask (every other route, and JSON errors for unknown paths and methods).
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from serving import auth
from serving.capture import Capture, CaptureConfig
from serving.model import LoadedModel, ModelLoadError, fetch_model, load_model_dir
from serving.observability import AccessLog, Metrics, configure_logging
from serving.openapi import build_openapi
from serving.scoring import ENV_REQUEST_ID, ENV_ROWS, ScoringRoutes, error_payload, json_bytes

log = logging.getLogger("serving")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def default_config() -> dict[str, Any]:
    """Settings from the environment; `create_app(config)` overrides any of them."""
    return {
        "MODEL_DIR": os.environ.get("SERVING_MODEL_DIR", "/opt/model"),
        "MODEL_CACHE_DIR": os.environ.get("SERVING_MODEL_CACHE_DIR") or None,
        "MODEL_URI": os.environ.get("MODEL_URI") or None,
        "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI") or None,
        "MAX_ROWS": _env_int("SERVING_MAX_ROWS", 5000),
        "MAX_CONTENT_LENGTH": _env_int("SERVING_MAX_BODY_BYTES", 8 * 1024 * 1024),
        "ACCESS_LOG": os.environ.get("SERVING_ACCESS_LOG", "1") not in ("0", "false", "no"),
        "LOG_LEVEL": os.environ.get("SERVING_LOG_LEVEL", "INFO"),
        "MODEL": None,  # an already loaded LoadedModel (tests, embedding)
        **auth.config_from_env(),  # API_KEYS_FILE, API_KEYS, AUTH_OPEN_PATHS: off unless keys are set
        # inference capture (serving/capture.py): CAPTURE_PERCENT, CAPTURE_S3_URI, ...; off unless a percent is set
        "CAPTURE": CaptureConfig.from_env(),
        "CAPTURE_S3_CLIENT": None,  # a factory of S3 clients (tests); default: boto3 from its environment
    }


def _load(config: Mapping[str, Any]) -> LoadedModel:
    if config.get("MODEL") is not None:
        return config["MODEL"]
    model_dir = Path(config["MODEL_DIR"]) if config.get("MODEL_DIR") else None
    if model_dir is not None and (model_dir / "MLmodel").is_file():
        return load_model_dir(model_dir, max_rows=config["MAX_ROWS"], cache_dir=config.get("MODEL_CACHE_DIR"))
    if config.get("MODEL_URI"):
        local, lineage = fetch_model(config["MODEL_URI"], config.get("MLFLOW_TRACKING_URI"))
        lineage["model_uri"] = config["MODEL_URI"]
        return load_model_dir(local, max_rows=config["MAX_ROWS"], lineage=lineage)
    raise ModelLoadError(f"no model: {model_dir} holds no MLmodel and MODEL_URI is not set")


def _capture(
    settings: Mapping[str, Any], lineage: Mapping[str, Any], validator: Any, metrics: Metrics
) -> Capture | None:
    """The capture queue when CAPTURE's percent is above 0, else None (raises CaptureConfigError for a bad config)."""
    config = settings.get("CAPTURE")
    if config is None or not config.enabled:
        return None
    extra = {"client_factory": settings["CAPTURE_S3_CLIENT"]} if settings.get("CAPTURE_S3_CLIENT") else {}
    capture = Capture(
        config,
        metrics,
        str(lineage.get("model_name") or "unknown"),
        str(lineage.get("model_version") or "unknown"),
        [(spec.name, spec.type) for spec in validator.specs],
        **extra,
    )
    log.info("capture: %s%% of scoring responses to %s", config.percent, config.s3_uri)
    return capture


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json_bytes(payload), status, mimetype="application/json")


def _error(status: int, code: str, message: str, details: Mapping[str, Any] | None = None) -> Response:
    return _json(error_payload(status, code, message, details, request.environ.get(ENV_REQUEST_ID)), status)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app and load the model (raises ModelLoadError if it cannot be served)."""
    settings = default_config()
    settings.update(config or {})
    configure_logging(settings["LOG_LEVEL"])
    app = Flask(__name__)
    app.config.update(settings)
    model = _load(settings)
    lineage = {**model.lineage, "flavor": model.flavor, "predict_path": model.predict_path}
    version = str(lineage.get("model_version") or "unknown")
    metrics = Metrics(version, str(lineage.get("model_name") or "unknown"), model.predict_path)
    validator = model.validator
    openapi = orjson.dumps(
        build_openapi(
            validator,
            f"{lineage.get('model_name') or 'model'} server",
            version,
            probabilities=model.predict_proba_batch is not None,
        )
    )
    app.extensions["flightdeck_model"] = model
    app.extensions["flightdeck_metrics"] = metrics
    capture = _capture(settings, lineage, validator, metrics)
    # gunicorn.conf.py starts its writer in each worker (post_worker_init) and flushes it at worker_exit
    app.extensions["flightdeck_capture"] = capture

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = _error(exc.code or 500, code, exc.description or code)
        for name, value in exc.get_headers():  # e.g. Allow on a 405
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error request_id=%s", request.environ.get(ENV_REQUEST_ID))
        return _error(500, "internal_error", f"{type(exc).__name__} while handling the request")

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"})

    # /ping and /health: what MLflow's scoring server answers (its ScoringServerClient.wait_server_ready
    # polls /ping) and SageMaker's container contract asks for (GET /ping, POST /invocations).
    @app.get("/readyz")
    @app.get("/ping")
    @app.get("/health")
    def readyz() -> Response:
        status, payload = readiness()
        if status != 200:
            payload["request_id"] = request.environ.get(ENV_REQUEST_ID)
        return _json(payload, status)

    def readiness() -> tuple[int, dict[str, Any]]:
        """(status, JSON payload): 200 when a smoke prediction passes, 503 naming the failure otherwise."""
        try:
            model.smoke_test()
        except Exception as exc:  # the model broke after loading: not ready, with the reason
            log.warning("readiness smoke prediction failed: %s", exc)
            message = f"smoke prediction failed: {type(exc).__name__}: {exc}"
            return 503, error_payload(503, "not_ready", message, None, None)
        return 200, {"status": "ready", "model_version": lineage.get("model_version")}

    def readiness_json() -> tuple[int, bytes]:
        status, payload = readiness()
        return status, json_bytes(payload)

    # serving/health_port.py answers the load balancer's checks with these, off the request path
    app.extensions["flightdeck_readiness"] = readiness_json
    app.extensions["flightdeck_liveness"] = lambda: (200, json_bytes({"status": "ok"}))

    @app.get("/version")
    def version_info() -> Response:
        return _json(
            {
                **lineage,
                "columns": len(validator.order),
                "max_rows": validator.max_rows,
                "load_seconds": round(model.load_seconds, 3),
                **model.extra,
            }
        )

    @app.get("/metrics")
    def metrics_view() -> Response:
        return Response(metrics.render(), mimetype="text/plain", content_type="text/plain; version=0.0.4")

    @app.get("/openapi.json")
    def openapi_view() -> Response:
        return Response(openapi, mimetype="application/json")

    scoring = ScoringRoutes(app.wsgi_app, model, metrics, lineage, settings["MAX_CONTENT_LENGTH"], capture)
    routes = {rule.rule for rule in app.url_map.iter_rules()} | set(scoring.routes)  # metric labels: a bounded set
    guarded = auth.wrap(scoring, settings)  # API keys when configured (serving/auth.py); 401s still observed
    app.wsgi_app = ObservedApp(guarded, metrics, routes, version, settings["ACCESS_LOG"])  # type: ignore[method-assign]
    return app


class ObservedApp:
    """WSGI middleware: request id, latency histogram, counters and one JSON access-log line.

    Done at the WSGI level rather than with Flask hooks: it costs a fraction of before/after_request
    with their context-local proxies, and it also sees the responses of Flask's error handlers.
    """

    def __init__(self, wsgi_app: Any, metrics: Metrics, routes: set[str], version: str, log: bool) -> None:
        self.wsgi_app = wsgi_app
        self.metrics = metrics
        self.routes = routes
        self.version = version
        self.log = log
        self.access_log = AccessLog()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        t0 = time.perf_counter()
        rid = environ.get("HTTP_X_REQUEST_ID")
        if not rid or not _REQUEST_ID.match(rid):
            # 128 random bits as 32 hex digits; random (reseeded in each forked worker) spares uuid4's
            # urandom syscall per request: an id needs to be unique, not unguessable.
            rid = f"{random.getrandbits(128):032x}"
        environ[ENV_REQUEST_ID] = rid
        seen: list[str] = []

        def _start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append(("X-Request-ID", rid))
            seen.append(status)
            return start_response(status, headers, exc_info)

        body = self.wsgi_app(environ, _start)
        elapsed = time.perf_counter() - t0  # our responses are fully built by now
        status = int(seen[-1][:3]) if seen else 500
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        self.metrics.observe(path if path in self.routes else "unmatched", method, status, elapsed)
        if self.log:
            self.access_log.write(
                f"{method} {path} {status}",
                {
                    "request_id": rid,
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "rows": environ.get(ENV_ROWS, 0),
                    "model_version": self.version,
                    "remote_addr": environ.get("REMOTE_ADDR"),
                },
            )
        return body
