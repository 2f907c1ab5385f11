"""API-key authentication on the model endpoint (serving/auth.py), through the Flask test client."""

from __future__ import annotations

import os
import time

import pytest

from serving import auth
from serving.app import create_app

KEY_OLD = "old-key-0123456789abcdef"
KEY_NEW = "new-key-fedcba9876543210"


@pytest.fixture()
def keys_file(tmp_path):
    path = tmp_path / "api-keys"
    path.write_text(f"# serving keys, one a line\n{KEY_OLD}\n")
    return path


@pytest.fixture()
def app(lr_model, keys_file):
    return create_app({"MODEL_DIR": str(lr_model.path), "API_KEYS_FILE": str(keys_file)})


@pytest.fixture()
def client(app):
    return app.test_client()


def _row(lr_model) -> dict:
    return {"rows": lr_model.records(0, 1)}


def _unauthorized(resp, error: str | None) -> dict:
    assert resp.status_code == 401, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="model"')
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)
    body = resp.get_json()
    assert body["error"]["code"] == "unauthorized" and body["error"]["message"]
    assert body["request_id"] == resp.headers["X-Request-ID"]  # the server's one error shape, observed
    return body


def test_auth_is_off_without_keys(lr_model, client):
    plain = create_app({"MODEL_DIR": str(lr_model.path), "API_KEYS_FILE": None, "API_KEYS": None}).test_client()
    assert plain.post("/predict", json=_row(lr_model)).status_code == 200
    assert plain.get("/version").status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_endpoints_stay_open_for_the_load_balancer(client, path):
    assert client.get(path).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/predict"),
        ("POST", "/invocations"),
        ("GET", "/version"),
        ("GET", "/openapi.json"),
        ("GET", "/metrics"),
        ("GET", "/no-such-path"),
    ],
)
def test_everything_else_needs_a_key(client, lr_model, method, path):
    resp = client.open(path, method=method, json=_row(lr_model) if method == "POST" else None)
    _unauthorized(resp, None)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong-key"},
        {"X-API-Key": "wrong-key"},
        {"Authorization": f"Basic {KEY_OLD}"},
        {"Authorization": f"Bearer {KEY_OLD}x"},
        {"X-API-Key": KEY_OLD[:-1]},
    ],
)
def test_a_wrong_key_is_refused(client, lr_model, headers):
    resp = client.post("/predict", json=_row(lr_model), headers=headers)
    _unauthorized(resp, None if headers.get("Authorization", "").startswith("Basic") else "invalid_token")


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {KEY_OLD}"}, {"X-API-Key": KEY_OLD}, {"authorization": f"bearer  {KEY_OLD} "}],
)
def test_either_header_with_the_key_is_served(client, lr_model, headers):
    resp = client.post("/predict", json=_row(lr_model), headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert "predictions" in resp.get_json()
    assert client.get("/version", headers=headers).status_code == 200
    assert (
        client.post("/invocations", json={"dataframe_records": _row(lr_model)["rows"]}, headers=headers).status_code
        == 200
    )


def test_refusals_are_counted_and_logged(client):
    client.get("/version")
    metrics = client.get("/metrics", headers={"X-API-Key": KEY_OLD}).get_data(as_text=True)
    assert any(
        line.startswith("flightdeck_http_requests_total{") and 'status="401"' in line and 'route="/version"' in line
        for line in metrics.splitlines()
    ), metrics


def test_rotation_with_two_keys_in_the_file(client, lr_model, keys_file, monkeypatch):
    monkeypatch.setattr(auth, "RELOAD_SECONDS", 0.0)
    source = _source(client)
    source.reload_seconds = 0.0
    # step 1: add the new key next to the old one; both are accepted
    keys_file.write_text(f"{KEY_OLD}\n{KEY_NEW}\n")
    _bump_mtime(keys_file)
    for key in (KEY_OLD, KEY_NEW):
        assert client.post("/predict", json=_row(lr_model), headers={"X-API-Key": key}).status_code == 200
    # step 2: clients moved; remove the old key
    keys_file.write_text(f"{KEY_NEW}\n")
    _bump_mtime(keys_file)
    _unauthorized(client.post("/predict", json=_row(lr_model), headers={"X-API-Key": KEY_OLD}), "invalid_token")
    assert (
        client.post("/predict", json=_row(lr_model), headers={"Authorization": f"Bearer {KEY_NEW}"}).status_code == 200
    )
    # an emptied or vanished file keeps the last keys: the endpoint never falls open
    keys_file.write_text("")
    _bump_mtime(keys_file)
    _unauthorized(client.post("/predict", json=_row(lr_model)), None)
    keys_file.unlink()
    assert client.post("/predict", json=_row(lr_model), headers={"X-API-Key": KEY_NEW}).status_code == 200


def test_keys_from_the_environment_value_as_ecs_injects_them(lr_model):
    app = create_app({"MODEL_DIR": str(lr_model.path), "API_KEYS_FILE": None, "API_KEYS": f"{KEY_OLD},{KEY_NEW}\n"})
    client = app.test_client()
    for key in (KEY_OLD, KEY_NEW):
        assert client.post("/predict", json=_row(lr_model), headers={"X-API-Key": key}).status_code == 200
    _unauthorized(client.post("/predict", json=_row(lr_model), headers={"X-API-Key": "other"}), "invalid_token")


def test_extra_open_paths_are_configurable(lr_model):
    app = create_app({"MODEL_DIR": str(lr_model.path), "API_KEYS": KEY_OLD, "AUTH_OPEN_PATHS": "/metrics"})
    client = app.test_client()
    assert client.get("/metrics").status_code == 200
    _unauthorized(client.get("/version"), None)


@pytest.mark.parametrize("content", [None, "", "# only a comment\n\n"])
def test_a_configured_but_empty_secret_refuses_to_start(lr_model, tmp_path, content):
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
    with pytest.raises(auth.AuthConfigError):
        create_app({"MODEL_DIR": str(lr_model.path), "API_KEYS_FILE": str(path)})


def _source(client) -> auth.KeySource:
    layer = client.application.wsgi_app.wsgi_app  # ObservedApp -> ApiKeyAuth
    assert isinstance(layer, auth.ApiKeyAuth)
    return layer.source


def _bump_mtime(path) -> None:
    if path.exists():
        t = time.time() + 10
        os.utime(path, (t, t))
