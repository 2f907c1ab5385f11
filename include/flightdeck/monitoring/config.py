"""The `monitor` and `continuous_deploy` sections of params.yaml as typed, validated settings.

They sit outside the DVC stages' params (pipeline_config.STAGE_SECTIONS), so changing how live models are
watched or deployed never retrains. `load()` reads them; a missing section or key takes the default below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from flightdeck.pipeline_config import ConfigError, read_params


class BatchCheckAction(StrEnum):
    """What happens to a landed training batch whose distribution drifted from the reference."""

    WARN = "warn"  # merged, with a warning in the task log and the sync result
    QUARANTINE = "quarantine"  # moved to quarantine/ with the drift report as the reason, not merged


@dataclass(frozen=True)
class DriftThresholds:
    """When a feature (or the predictions) counts as drifted; the rule is monitoring.drift's docstring."""

    psi_warn: float = 0.1  # PSI at or above: a moderate shift (warn)
    psi_alert: float = 0.25  # PSI at or above, the binned chi-squared test significant: a major shift (drift)
    p_value: float = 0.001  # two-sample test p-value below this (and PSI >= psi_warn): drifted
    prediction_psi_alert: float = 0.25  # psi_alert for the model's predictions
    max_null_share_increase: float = 0.1  # null share above baseline + this: a data-quality violation


@dataclass(frozen=True)
class OnDrift:
    """What a drifted window triggers."""

    notify: bool = True
    retrain: bool = False  # emit the drift Asset event the retrain DAG is scheduled on


@dataclass(frozen=True)
class LiveQualityGate:
    """The live-quality gate on late labels joined to captures."""

    lookback_hours: float = 168.0  # captures this far back are joined to the labels landed since
    min_labeled_rows: int = 30
    rollback: bool = False  # below the gates' thresholds: deploy `previous` with blue_green


@dataclass(frozen=True)
class MonitorConfig:
    """params.yaml `monitor`."""

    capture_percent: float = 100.0  # 0-100
    window_hours: float = 1.0
    min_rows: int = 30
    drift: DriftThresholds = field(default_factory=DriftThresholds)
    on_drift: OnDrift = field(default_factory=OnDrift)
    live_quality: LiveQualityGate = field(default_factory=LiveQualityGate)
    batch_check: BatchCheckAction = BatchCheckAction.WARN


@dataclass(frozen=True)
class ContinuousDeployConfig:
    """params.yaml `continuous_deploy`: deploy each new champion without a person (off by default)."""

    enabled: bool = False
    target: str = "local"
    strategy: str = "canary"
    canary_percent: int = 20
    canary_steps: int = 2
    bake_seconds: int = 30


def _build(cls: type, raw: Any, where: str) -> Any:
    """`cls` from the mapping `raw` (None = defaults), nested dataclasses and enums converted, each value
    cast to its field's default's type. Raises ConfigError naming `where.key` for an unknown key or a bad value."""
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    defaults = cls()
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        default = getattr(defaults, name)
        key = f"{where}.{name}"
        try:
            if hasattr(default, "__dataclass_fields__"):
                values[name] = _build(type(default), value, key)
            elif isinstance(default, StrEnum):
                values[name] = type(default)(value)
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise TypeError(f"expected true or false, got {value!r}")
                values[name] = value
            else:
                values[name] = type(default)(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{key}: {e}") from None
    return cls(**values)


def load(path: Path | None = None) -> tuple[MonitorConfig, ContinuousDeployConfig]:
    """Both sections of params.yaml (default: the project's). Raises ConfigError for a malformed one."""
    raw = read_params(path)
    monitor = _build(MonitorConfig, raw.get("monitor"), "monitor")
    if not 0 <= monitor.capture_percent <= 100:
        raise ConfigError(f"monitor.capture_percent must be within 0-100, got {monitor.capture_percent}")
    return monitor, _build(ContinuousDeployConfig, raw.get("continuous_deploy"), "continuous_deploy")


def monitor_config(path: Path | None = None) -> MonitorConfig:
    """params.yaml `monitor` (see load)."""
    return load(path)[0]


def continuous_deploy_config(path: Path | None = None) -> ContinuousDeployConfig:
    """params.yaml `continuous_deploy` (see load)."""
    return load(path)[1]
