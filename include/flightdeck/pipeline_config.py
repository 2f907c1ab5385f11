"""The retraining pipeline's configuration: which dataset, target, features and model family.

Everything dataset-specific lives in params.yaml (`datasets.<name>`), so another tabular dataset is
trained, gated and promoted by configuration alone. `load()` renders the flat params that the DVC
stages read and that DVC tracks; its hash is the "params" half of the change detection.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from flightdeck import settings as settings_mod
from flightdeck.data.schema import DatasetSchema, SchemaError, Task
from flightdeck.errors import FlightdeckError

PARAMS_PATH = settings_mod.REPO_ROOT / "params.yaml"
DVC_YAML_PATH = settings_mod.REPO_ROOT / "dvc.yaml"
STAGE_SECTIONS = ("prepare", "train", "evaluate", "gates")
RUNNER_KEY = "runner"  # params.yaml train.runner: worker | container | ecs (flightdeck.train_runner)


class ConfigError(FlightdeckError, ValueError):
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


# Defaults that follow the task when params.yaml leaves them out (train.scoring is scikit-learn's name).
TASK_DEFAULTS: dict[Task, dict[str, str]] = {
    Task.CLASSIFICATION: {"scoring": "f1_macro", "primary_metric": "f1_macro"},
    Task.REGRESSION: {"scoring": "neg_root_mean_squared_error", "primary_metric": "rmse"},
}
TASK_METRICS: dict[Task, tuple[str, ...]] = {
    Task.CLASSIFICATION: ("accuracy", "f1_macro", "roc_auc", "log_loss"),
    Task.REGRESSION: ("rmse", "mae", "r2"),
}


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset's resolved configuration plus the stage params that apply to it.

    `source` is `sklearn:load_<name>` (a table bundled with scikit-learn, cut into generated batches)
    or `files` (the user's CSV/Parquet batches landed under `landing/<dataset>/`). `schema` is the
    declared schema, or None until sync infers one from the first data and stores it.
    """

    name: str
    source: str
    target: str
    task: Task
    features: tuple[str, ...] | None  # None = every column of the source
    model_name: str
    batches: dict[str, Any]
    params: dict[str, Any]  # the rendered params.yaml for the workspace
    schema: DatasetSchema | None = None
    holdout: dict[str, Any] = field(default_factory=dict)  # {fraction, file}
    unseen_categories: str = "report"
    # An optional namespace isolates a lineage (S3 prefixes, workspace, experiment) from the main one,
    # e.g. to try a dataset or a config, or for tests against a shared platform.
    namespace: str = ""

    @property
    def key(self) -> str:
        """Where this dataset's state lives: `<namespace>/<name>` or `<name>`."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment of this dataset's retrains: flightdeck-retrain-<key, "/" as "-">."""
        return "flightdeck-retrain-" + self.key.replace("/", "-")

    @property
    def params_hash(self) -> str:
        """params_hash(self.params): with the data version, what decides whether a retrain is a no-op."""
        return params_hash(self.params)

    @property
    def bundled(self) -> bool:
        """True for a table bundled with scikit-learn (the demo), False for the user's own files."""
        return self.source.startswith("sklearn:")

    def with_schema(self, schema: DatasetSchema) -> DatasetConfig:
        """This config with `schema` resolved (it becomes part of the rendered params and their hash).

        Raises ConfigError when the schema's target or task differs from the config's, or when `features`
        names columns the schema lacks."""
        if schema.target != self.target or schema.task is not self.task:
            raise ConfigError(
                f"datasets.{self.name}: the stored schema is for target {schema.target!r} ({schema.task.value}) "
                f"but the config says {self.target!r} ({self.task.value}); fix params.yaml or cut a new "
                "dataset under another name"
            )
        params = copy.deepcopy(self.params)
        params["data"]["schema"] = schema.to_params()["schema"]
        if self.features is not None:
            missing = sorted(set(self.features) - set(schema.names))
            if missing:
                raise ConfigError(f"datasets.{self.name}.features names columns the data lacks: {missing}")
            keep = {*self.features, self.target}
            schema = DatasetSchema(tuple(c for c in schema.columns if c.name in keep), schema.target, schema.task)
            params["data"]["schema"] = schema.to_params()["schema"]
        return replace(self, schema=schema, params=params)


def params_hash(params: dict[str, Any]) -> str:
    """A stable digest of the rendered params (key order does not matter): MD5 hex of their sorted JSON."""
    return hashlib.md5(json.dumps(params, sort_keys=True).encode()).hexdigest()


def read_params(path: Path | None = None) -> dict[str, Any]:
    """params.yaml (or `path`) as a dict. Raises ConfigError when its top level is not a mapping, and
    FileNotFoundError / yaml.YAMLError when it is missing or not YAML."""
    path = path or PARAMS_PATH
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _stage_params(raw: dict[str, Any], block: dict[str, Any], name: str, task: Task) -> dict[str, Any]:
    """The stage sections with the dataset's overrides merged in and the task's defaults filled in.

    A dataset's `overrides.gates.thresholds` replaces the default floors instead of merging into them:
    a regression's rmse ceiling has nothing to do with a classifier's accuracy floor.
    """
    stages = {k: raw.get(k) or {} for k in STAGE_SECTIONS}
    overrides = copy.deepcopy(block.get("overrides") or {})
    own_thresholds = (overrides.get("gates") or {}).pop("thresholds", None)
    stages = deep_merge(stages, overrides)
    stages.setdefault("gates", {})
    if own_thresholds is not None:
        stages["gates"]["thresholds"] = own_thresholds
    where = f"datasets.{name}"
    train, evaluate = stages["train"], stages["evaluate"]
    # Where the step runs is not a model parameter: it stays out of DVC's params, their hash and the MLflow
    # params, so the same data and params give the same run on any runner (train_runner.configured_runner).
    train.pop(RUNNER_KEY, None)
    defaults = TASK_DEFAULTS[task]
    train["scoring"] = train.get("scoring") or defaults["scoring"]
    evaluate["primary_metric"] = evaluate.get("primary_metric") or defaults["primary_metric"]
    champion = stages["gates"].setdefault("champion", {})
    champion["metric"] = champion.get("metric") or evaluate["primary_metric"]
    champion.setdefault("min_delta", 0.0)
    produced = TASK_METRICS[task]
    for key, metric in (
        ("evaluate.primary_metric", evaluate["primary_metric"]),
        ("gates.champion.metric", champion["metric"]),
    ):
        if metric not in produced:
            raise ConfigError(
                f"{where}: {key} is {metric!r}, which a {task.value} does not produce ({list(produced)}); "
                f"set {where}.overrides.{key}"
            )
    wrong = sorted(set(stages["gates"].get("thresholds") or {}) - set(produced))
    if wrong:
        raise ConfigError(
            f"{where}: gates.thresholds names {wrong}, which a {task.value} does not produce; set "
            f"{where}.overrides.gates.thresholds to floors/ceilings of {list(produced)}"
        )
    model = {k: train.get(k) for k in ("entrypoint", "estimator") if train.get(k)}
    if len(model) > 1:
        raise ConfigError(f"{where}: set train.entrypoint or train.estimator, not both")
    if train.get("entrypoint"):
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", str(train["entrypoint"])):
            raise ConfigError(
                f"{where}: train.entrypoint {train['entrypoint']!r} must look like package.module:function"
            )
    elif train.get("estimator"):
        if not re.fullmatch(r"[A-Za-z_][\w.]*\.[A-Za-z_]\w*", str(train["estimator"])):
            raise ConfigError(
                f"{where}: train.estimator {train['estimator']!r} must be an import path such as "
                "sklearn.ensemble.HistGradientBoostingClassifier"
            )
    else:
        family = train.get("family")
        if family not in (train.get("search") or {}):
            raise ConfigError(f"{where}: train.family {family!r} has no entry under train.search")
    return stages


def load(
    dataset: str | None = None,
    path: Path | None = None,
    model_name: str | None = None,
    namespace: str | None = None,
) -> DatasetConfig:
    """Resolve the configuration for `dataset` (default: params.yaml's `dataset.name`).

    `model_name` overrides the configured registry name; `namespace` isolates the lineage.

    Raises:
        ConfigError: a key is missing or malformed; the message names the key and the fix.
    """
    if namespace and not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", namespace):
        raise ConfigError(f"namespace {namespace!r}: use lowercase letters, digits, '-' and '_'")
    raw = read_params(path)
    name = dataset or (raw.get("dataset") or {}).get("name")
    datasets = raw.get("datasets") or {}
    if not name or name not in datasets:
        raise ConfigError(f"unknown dataset {name!r}; configured: {sorted(datasets)} (params.yaml `datasets`)")
    where = f"datasets.{name}"
    block = dict(datasets[name])
    for key in ("source", "target"):
        if not block.get(key):
            raise ConfigError(f"{where}.{key} is required")
    source = str(block["source"])
    if source != "files" and not re.fullmatch(r"sklearn:load_\w+", source):
        raise ConfigError(
            f"{where}.source {source!r}: use `files` (your CSV/Parquet batches under landing/{name}/) "
            "or a bundled table such as `sklearn:load_breast_cancer`"
        )
    try:
        task = Task(block.get("task") or "classification")
    except ValueError:
        raise ConfigError(f"{where}.task {block.get('task')!r}: use classification or regression") from None
    features = block.get("features", "all")
    if features in (None, "all"):
        feature_tuple = None
    elif isinstance(features, list) and all(isinstance(f, str) for f in features):
        feature_tuple = tuple(features)
    else:
        raise ConfigError(f"{where}.features must be 'all' or a list of column names")
    unseen = block.get("unseen_categories", "report")
    if unseen not in ("report", "quarantine"):
        raise ConfigError(f"{where}.unseen_categories {unseen!r}: use report or quarantine")
    holdout = dict(block.get("holdout") or {})
    holdout.setdefault("fraction", (block.get("batches") or {}).get("holdout_fraction", 0.25))
    if not 0 < float(holdout["fraction"]) < 1:
        raise ConfigError(f"{where}.holdout.fraction must be between 0 and 1 (exclusive)")
    stages = _stage_params(raw, block, name, task)
    resolved_model = model_name or block.get("model_name") or settings_mod.load().model_name
    rendered = {
        "data": {
            "name": name,
            "source": source,
            "task": task.value,
            "target": block["target"],
            "features": list(feature_tuple) if feature_tuple else "all",
        },
        **stages,
    }
    cfg = DatasetConfig(
        name=name,
        source=source,
        target=block["target"],
        task=task,
        features=feature_tuple,
        model_name=resolved_model,
        batches=dict(block.get("batches") or {}),
        params=rendered,
        holdout=holdout,
        unseen_categories=unseen,
        namespace=namespace or "",
    )
    if block.get("schema"):
        try:
            declared = DatasetSchema.from_params(
                block["schema"], target=block["target"], task=task, where=f"{where}.schema"
            )
        except SchemaError as exc:
            raise ConfigError(str(exc)) from None
        cfg = cfg.with_schema(declared)
    return cfg
