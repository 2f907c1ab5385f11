"""params.yaml `monitor` and `continuous_deploy` read as typed settings; a typo is refused by name."""

from __future__ import annotations

import pytest

from flightdeck.monitoring import config
from flightdeck.pipeline_config import ConfigError


def test_the_projects_params_yaml_reads_with_continuous_deploy_off():
    monitor, cd = config.load()
    assert monitor.capture_percent == 100 and monitor.batch_check is config.BatchCheckAction.WARN
    assert monitor.drift.psi_alert > monitor.drift.psi_warn
    assert cd.enabled is False and cd.strategy == "canary"


def test_missing_sections_take_the_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("dataset: {name: x}\n")
    assert config.load(path) == (config.MonitorConfig(), config.ContinuousDeployConfig())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("monitor: {drift: {psi_alrt: 0.3}}", r"monitor.drift: unknown keys \['psi_alrt'\]"),
        ("monitor: {batch_check: drop}", "monitor.batch_check"),
        ("monitor: {on_drift: {retrain: 'yes'}}", "monitor.on_drift.retrain: expected true or false"),
        ("monitor: {capture_percent: 150}", "capture_percent must be within 0-100"),
        ("continuous_deploy: {enabled: 1}", "continuous_deploy.enabled"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message):
        config.load(path)
