"""The generated haproxy.cfg: valid for the installed HAProxy, checks on the health ports, retries."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from flightdeck.deploy.haproxy import LbConfig, render_config


def _config(tmp_path) -> tuple[LbConfig, str]:
    cfg = LbConfig(state_dir=tmp_path, bind_port=8490, port_base=8490, slots=3)
    return cfg, render_config(cfg)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="HAProxy is installed by `make up`")
def test_config_is_accepted_by_haproxy(tmp_path):
    cfg, text = _config(tmp_path)
    cfg.cfg_path.write_text(text)
    check = subprocess.run(["haproxy", "-c", "-f", str(cfg.cfg_path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_slot_is_checked_on_its_health_port_not_its_serving_port(tmp_path):
    cfg, text = _config(tmp_path)
    for kind in ("s", "b"):
        for i in range(1, cfg.slots + 1):
            line = re.search(rf"^\s+server {kind}{i} (\S+) port (\d+) ", text, re.M)
            assert line and line.group(1) == f"127.0.0.1:{8490 + i}", text
            assert int(line.group(2)) == cfg.health_port(i) == 8590 + i


def test_failed_requests_are_buffered_and_retried_elsewhere_without_a_queue(tmp_path):
    _, text = _config(tmp_path)
    assert "option http-buffer-request" in text and "timeout http-request 10s" in text
    assert re.search(r"retry-on .*\b500 502 503 504\b", text) and "option redispatch 1" in text
    assert "maxconn" not in text.split("defaults", 1)[1]  # no per-server queue: see render_config
    assert "shutdown-sessions" not in text  # in-flight requests of a server marked down finish or retry
