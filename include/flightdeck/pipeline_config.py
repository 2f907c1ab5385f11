"""The retraining pipeline's configuration: which dataset, target, features and model family.

Everything dataset-specific lives in params.yaml (`datasets.<name>`), so another tabular dataset is
trained, gated and promoted by configuration alone. `render()` produces the flat params that the DVC
stages read and that DVC tracks; its hash is the "params" half of the change detection.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flightdeck import settings as settings_mod

PARAMS_PATH = settings_mod.REPO_ROOT / "params.yaml"
DVC_YAML_PATH = settings_mod.REPO_ROOT / "dvc.yaml"
STAGE_SECTIONS = ("prepare", "train", "evaluate", "gates")


class ConfigError(ValueError):
    """The configuration names something that does not exist or is malformed."""


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return base with override merged in recursively (override wins on leaves)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset's resolved configuration plus the stage params that apply to it."""

    name: str
    source: str
    target: str
    features: tuple[str, ...] | None  # None = every column of the source
    model_name: str
    batches: dict[str, Any]
    params: dict[str, Any]  # the rendered params.yaml for the workspace
    # An optional namespace isolates a lineage (S3 prefixes, workspace, experiment) from the main one,
    # e.g. to try a dataset or a config, or for tests against a shared platform.
    namespace: str = ""

    @property
    def key(self) -> str:
        """Where this dataset's state lives: `<namespace>/<name>` or `<name>`."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def experiment_name(self) -> str:
        return "flightdeck-retrain-" + self.key.replace("/", "-")

    @property
    def params_hash(self) -> str:
        return params_hash(self.params)


def params_hash(params: dict[str, Any]) -> str:
    """A stable digest of the rendered params (key order does not matter)."""
    return hashlib.md5(json.dumps(params, sort_keys=True).encode()).hexdigest()


def read_params(path: Path | None = None) -> dict[str, Any]:
    path = path or PARAMS_PATH
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load(
    dataset: str | None = None,
    path: Path | None = None,
    model_name: str | None = None,
    namespace: str | None = None,
) -> DatasetConfig:
    """Resolve the configuration for `dataset` (default: params.yaml's `dataset.name`).

    `model_name` overrides the configured registry name; `namespace` isolates the lineage.
    """
    if namespace and not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", namespace):
        raise ConfigError(f"namespace {namespace!r}: use lowercase letters, digits, '-' and '_'")
    raw = read_params(path)
    name = dataset or (raw.get("dataset") or {}).get("name")
    datasets = raw.get("datasets") or {}
    if not name or name not in datasets:
        raise ConfigError(f"unknown dataset {name!r}; configured: {sorted(datasets)}")
    block = dict(datasets[name])
    for key in ("source", "target"):
        if not block.get(key):
            raise ConfigError(f"datasets.{name}.{key} is required")
    features = block.get("features", "all")
    if features in (None, "all"):
        feature_tuple = None
    elif isinstance(features, list) and all(isinstance(f, str) for f in features):
        feature_tuple = tuple(features)
    else:
        raise ConfigError(f"datasets.{name}.features must be 'all' or a list of column names")
    stages = {k: raw.get(k) or {} for k in STAGE_SECTIONS}
    stages = deep_merge(stages, block.get("overrides") or {})
    family = stages["train"].get("family")
    if family not in (stages["train"].get("search") or {}):
        raise ConfigError(f"train.family {family!r} has no entry under train.search")
    resolved_model = model_name or block.get("model_name") or settings_mod.load().model_name
    rendered = {
        "data": {
            "name": name,
            "source": block["source"],
            "target": block["target"],
            "features": list(feature_tuple) if feature_tuple else "all",
        },
        **stages,
    }
    return DatasetConfig(
        name=name,
        source=block["source"],
        target=block["target"],
        features=feature_tuple,
        model_name=resolved_model,
        batches=dict(block.get("batches") or {}),
        params=rendered,
        namespace=namespace or "",
    )


def configured_datasets(path: Path | None = None) -> list[str]:
    return sorted((read_params(path).get("datasets") or {}).keys())
