"""The deploy's side of inference capture: the Param, the revision env, the local target's S3 relay.

Records live in an in-process S3 (moto, the `store` fixture); the register step needs no target beyond
`rolls_in_place`. The relay's HAProxy config is checked by HAProxy itself (`haproxy -c`).
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from flightdeck import settings as settings_mod
from flightdeck.deploy.backend import RevisionSpec
from flightdeck.deploy.haproxy import LbConfig, S3Relay, render_config
from flightdeck.deploy.local import LocalBackend
from flightdeck.deploy.params import DEFAULTS, DeployParams, InvalidParams
from flightdeck.deploy.steps import Deploy
from flightdeck.monitoring.capture import hour_prefixes
from flightdeck.monitoring.config import monitor_config

IMAGE = "reg:5050/m@sha256:" + "d" * 64


def _register(store, **params) -> dict:
    backend = SimpleNamespace(rolls_in_place=False, name="memory")
    d = Deploy("manual__cap", {"model": "none", "image": IMAGE, **params}, store=store, backend=backend)
    d.resolve()
    d.build()
    return d.register()


def test_the_capture_percent_param_defaults_to_params_yaml_and_refuses_out_of_range():
    assert DEFAULTS.capture_percent is None  # read when a run starts, not when the DAG file is parsed
    assert DeployParams.resolve({}).capture_percent == monitor_config().capture_percent
    with pytest.raises(InvalidParams, match="capture_percent"):
        DeployParams.resolve({"capture_percent": 101})


def test_register_puts_capture_settings_without_credentials_in_the_revision_env(store):
    env = _register(store, capture_percent=25)["env"]
    bucket = settings_mod.load().data_bucket
    assert env["CAPTURE_PERCENT"] == "25" and env["CAPTURE_S3_URI"] == f"s3://{bucket}/capture"
    assert not any(k.startswith("AWS_") for k in env)  # the env lands in records: the target adds credentials


def test_capture_off_passes_zero_and_no_destination(store):
    env = _register(store, capture_percent=0)["env"]
    assert env["CAPTURE_PERCENT"] == "0" and "CAPTURE_S3_URI" not in env


def test_ecs_captures_only_with_a_task_role_to_write_with(store, monkeypatch):
    monkeypatch.delenv("FLIGHTDECK_ECS_TASK_ROLE_ARN", raising=False)
    env = _register(store, capture_percent=100, target="ecs")["env"]
    assert env["CAPTURE_PERCENT"] == "0" and "CAPTURE_S3_URI" not in env  # no credentials: off, not failing
    monkeypatch.setenv("FLIGHTDECK_ECS_TASK_ROLE_ARN", "arn:aws:iam::123456789012:role/flightdeck-serving-task")
    d = Deploy("manual__cap2", {"model": "none", "image": IMAGE, "capture_percent": 100, "target": "ecs"}, store=store)
    assert d._capture_percent() == 100.0


def test_the_s3_relay_is_a_tcp_listen_haproxy_accepts(tmp_path):
    relay = S3Relay("172.17.0.1", 8779, "127.0.0.1", 8333)
    cfg = LbConfig(state_dir=tmp_path, bind_port=18690, port_base=18690, slots=2, s3_relay=relay)
    text = render_config(cfg)
    section = text.split("listen s3_relay", 1)[1]
    assert "mode tcp" in section and "bind 172.17.0.1:8779" in section and "server s3 127.0.0.1:8333" in section
    (tmp_path / "haproxy.cfg").write_text(text)
    subprocess.run(["haproxy", "-c", "-q", "-f", str(tmp_path / "haproxy.cfg")], check=True)
    assert "listen s3_relay" not in render_config(LbConfig(state_dir=tmp_path))


def test_a_capturing_container_gets_the_relay_and_local_keys_only_at_start(tmp_path):
    relay = S3Relay("172.17.0.1", 8779, "127.0.0.1", 8333)
    lb = LbConfig(state_dir=tmp_path, s3_relay=relay)
    backend = LocalBackend(lb, client=SimpleNamespace(), relay_s3=False)  # type: ignore[arg-type]
    capturing = RevisionSpec(revision="r", image="i", env={"CAPTURE_S3_URI": "s3://b/capture"})
    env = backend.s3_env(capturing)
    assert env["AWS_ENDPOINT_URL_S3"] == "http://172.17.0.1:8779"
    assert env["AWS_ACCESS_KEY_ID"] == settings_mod.environment()["AWS_ACCESS_KEY_ID"]
    assert backend.s3_env(RevisionSpec(revision="r", image="i", env={})) == {}


def test_a_window_lists_only_the_hours_it_overlaps():
    start = datetime(2026, 12, 7, 22, 30, tzinfo=UTC)
    end = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
    assert hour_prefixes("capture", "m", "3", start, end) == [
        "capture/m/3/2026-12-07/22/",
        "capture/m/3/2026-12-07/23/",
        "capture/m/3/2026-12-08/00/",
    ]
    assert hour_prefixes("capture", "m", "3", end, end) == []


def test_local_backend_adds_no_relay_when_s3_is_remote(tmp_path, monkeypatch):
    monkeypatch.setenv("FLIGHTDECK_S3_ENDPOINT", "https://s3.eu-west-1.amazonaws.com")
    backend = LocalBackend(LbConfig(state_dir=Path(tmp_path)), client=SimpleNamespace())  # type: ignore[arg-type]
    assert backend.lb.s3_relay is None
