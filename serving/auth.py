"""Optional authentication on the model endpoint: an API key, sent as a bearer token or an X-API-Key.

Off unless keys are configured (the default, locally). Keys come from a secret, never from the image:
    SERVING_API_KEYS_FILE  a file, one key per line (blank lines and `#` comments skipped): what the local
                           target mounts read-only. It is re-read when it changes (checked every few seconds),
                           so a key rotates without a restart: add the new key as a second line, move the
                           clients, delete the old line.
    SERVING_API_KEYS       keys separated by newlines, commas or spaces: what an ECS task gets from Secrets
                           Manager through the task definition's `secrets` (rotation = a new deployment).
A request passes with `Authorization: Bearer <key>` or `X-API-Key: <key>`; the key is compared with every
configured key by hmac.compare_digest (constant time). Otherwise: 401 in the server's one error shape
(serving/scoring.py error_payload) with `WWW-Authenticate: Bearer realm="model"`.

Open without a key: /healthz, /readyz, /ping and /health, the load balancer's and the orchestrator's probes
(they say "alive" / "ready" and the model version, nothing else). Everything else needs a key: /predict and
/invocations; /version and /openapi.json too, because they name the model, its run, image, git sha and
every input feature; and /metrics, because the LB exposes every path and the counters describe the traffic
(Prometheus sends the key with `authorization: {credentials_file: ...}`). SERVING_AUTH_OPEN_PATHS adds paths
(comma-separated, e.g. `/metrics` for a scraper that cannot send a header).

Wired in serving/app.py just inside ObservedApp, so refused requests still get a request id, are counted in
the metrics and appear in the access log.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from serving.errors import ServingError
from serving.scoring import ENV_REQUEST_ID, error_payload, json_bytes

log = logging.getLogger("serving.auth")

HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/ping", "/health"})
RELOAD_SECONDS = 5.0
_SEPARATORS = re.compile(r"[\s,]+")


class AuthConfigError(ServingError, ValueError):
    """Authentication is asked for but no usable key is configured (the server must not start open)."""


def parse_keys(text: str, *, lines: bool) -> tuple[bytes, ...]:
    """Keys from a file (`lines`: one per line, `#` comments) or an env value (newline/comma/space separated)."""
    if lines:
        found = [line.strip() for line in text.splitlines()]
        found = [k for k in found if k and not k.startswith("#")]
    else:
        found = [k for k in _SEPARATORS.split(text) if k]
    return tuple(dict.fromkeys(k.encode() for k in found))


class KeySource:
    """The configured keys; a file is re-read when its mtime or size changes (checked every RELOAD_SECONDS)."""

    def __init__(self, path: str | None = None, value: str | None = None, reload_seconds: float = RELOAD_SECONDS):
        self.path = Path(path) if path else None
        self.reload_seconds = reload_seconds
        self._static = parse_keys(value, lines=False) if value else ()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._from_file: tuple[bytes, ...] = ()
        if self.path is not None:
            self._reload(initial=True)
        if not self.keys():
            where = f"{self.path}" if self.path else "SERVING_API_KEYS"
            raise AuthConfigError(f"API key authentication is configured but {where} holds no key")

    def keys(self) -> tuple[bytes, ...]:
        """The keys in force: the file's (re-read when `reload_seconds` have passed and it changed) plus
        the static ones."""
        if self.path is not None and time.monotonic() - self._checked >= self.reload_seconds:
            self._reload()
        return self._from_file + self._static

    def _reload(self, initial: bool = False) -> None:
        if self.path is None:
            return
        with self._lock:
            self._checked = time.monotonic()
            try:
                st = self.path.stat()
                stamp = (st.st_mtime_ns, st.st_size)
                if stamp == self._stamp:
                    return
                keys = parse_keys(self.path.read_text(), lines=True)
            except OSError as exc:
                if initial:
                    raise AuthConfigError(f"cannot read SERVING_API_KEYS_FILE {self.path}: {exc}") from exc
                log.warning(
                    "API keys file %s unreadable (%s): keeping the %d keys loaded", self.path, exc, len(self._from_file)
                )
                return
            if not keys and not initial:
                log.warning(
                    "API keys file %s holds no key: keeping the %d keys loaded", self.path, len(self._from_file)
                )
                return
            if not initial and keys != self._from_file:
                log.info("API keys reloaded from %s: %d keys", self.path, len(keys))
            self._stamp, self._from_file = stamp, keys

    def accepts(self, presented: bytes) -> bool:
        """True when `presented` equals one of the keys; compared with hmac.compare_digest against every
        key, so the time taken does not say which one matched."""
        ok = False
        for key in self.keys():  # every key compared: no early exit that times which one matched
            ok |= hmac.compare_digest(key, presented)
        return ok


def presented_key(environ: Mapping[str, Any]) -> bytes | None:
    """The key a request carries: `Authorization: Bearer <key>` or `X-API-Key: <key>` (WSGI strings are latin-1)."""
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip().encode("latin-1")
    api_key = environ.get("HTTP_X_API_KEY", "").strip()
    return api_key.encode("latin-1") if api_key else None


class ApiKeyAuth:
    """WSGI middleware: requests outside `open_paths` need a configured key, else a JSON 401."""

    def __init__(self, app: Any, source: KeySource, open_paths: Iterable[str] = HEALTH_PATHS) -> None:
        self.app = app
        self.source = source
        self.open_paths = frozenset(open_paths)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO", "") in self.open_paths:
            return self.app(environ, start_response)
        key = presented_key(environ)
        if key is not None and self.source.accepts(key):
            return self.app(environ, start_response)
        if key is None:
            message = "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
            challenge = 'Bearer realm="model"'
        else:
            message = "the API key is not valid"
            challenge = 'Bearer realm="model", error="invalid_token"'
        body = json_bytes(error_payload(401, "unauthorized", message, None, environ.get(ENV_REQUEST_ID)))
        start_response(
            "401 UNAUTHORIZED",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("WWW-Authenticate", challenge),
            ],
        )
        return [body]


def wrap(app: Any, config: Mapping[str, Any]) -> Any:
    """`app` behind ApiKeyAuth when the config names keys (API_KEYS_FILE / API_KEYS), else `app` itself."""
    path, value = config.get("API_KEYS_FILE"), config.get("API_KEYS")
    if not path and not value:
        return app
    source = KeySource(path, value)
    extra = [p.strip() for p in str(config.get("AUTH_OPEN_PATHS") or "").split(",") if p.strip()]
    log.info(
        "API key authentication on (%d keys; open paths: %s)",
        len(source.keys()),
        ", ".join(sorted(HEALTH_PATHS | set(extra))),
    )
    return ApiKeyAuth(app, source, HEALTH_PATHS | set(extra))


def config_from_env() -> dict[str, Any]:
    """The three settings of serving/app.py's default_config."""
    return {
        "API_KEYS_FILE": os.environ.get("SERVING_API_KEYS_FILE") or None,
        "API_KEYS": os.environ.get("SERVING_API_KEYS") or None,
        "AUTH_OPEN_PATHS": os.environ.get("SERVING_AUTH_OPEN_PATHS") or "",
    }
