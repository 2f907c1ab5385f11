"""Dataset/target/task/features/model come from params.yaml, not code; bad keys are named with the fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from flightdeck import pipeline_config, settings
from flightdeck.data.schema import ColumnType, Task


def _params_with(tmp_path: Path, dataset: str, **changes: Any) -> Path:
    """A copy of params.yaml with `changes` set in `datasets.<dataset>` (a None value removes the key)."""
    raw = pipeline_config.read_params()
    block = raw["datasets"][dataset]
    for key, value in changes.items():
        if value is None:
            block.pop(key, None)
        else:
            block[key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_default_dataset_and_model_name():
    cfg = pipeline_config.load()
    assert cfg.name == "breast_cancer"
    assert cfg.target == "diagnosis"
    assert cfg.model_name == settings.load().model_name
    assert cfg.params["train"]["family"] in cfg.params["train"]["search"]
    assert cfg.key == "breast_cancer"


def test_second_dataset_with_overrides():
    cfg = pipeline_config.load("wine")
    assert cfg.model_name == "flightdeck-wine"
    assert cfg.params["gates"]["data"]["min_rows"] == 40  # the dataset's override
    assert cfg.params["gates"]["data"]["max_null_fraction"] == 0.5  # inherited
    assert cfg.params["data"] == {
        "name": "wine",
        "source": "sklearn:load_wine",
        "task": "classification",
        "target": "cultivar",
        "features": "all",
    }
    assert cfg.params_hash != pipeline_config.load("breast_cancer").params_hash


def test_namespace_and_model_override():
    cfg = pipeline_config.load("wine", model_name="m-test", namespace="ci-1")
    assert (cfg.key, cfg.model_name, cfg.experiment_name) == (
        "ci-1/wine",
        "m-test",
        "flightdeck-retrain-ci-1-wine",
    )
    with pytest.raises(pipeline_config.ConfigError, match="namespace"):
        pipeline_config.load("wine", namespace="../etc")


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(pipeline_config.ConfigError, match="unknown dataset 'iris'"):
        pipeline_config.load("iris")


def test_params_hash_is_stable_and_sensitive(tmp_path: Path):
    raw = pipeline_config.read_params()
    first = pipeline_config.load("breast_cancer").params_hash
    assert first == pipeline_config.load("breast_cancer").params_hash
    raw["train"]["cv"] = 5
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert pipeline_config.load("breast_cancer", path=path).params_hash != first


def test_family_without_search_space_is_rejected(tmp_path: Path):
    raw = pipeline_config.read_params()
    raw["train"]["family"] = "svm"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(pipeline_config.ConfigError, match="svm"):
        pipeline_config.load(path=path)


def test_task_defaults_pick_scoring_and_primary_metric():
    clf = pipeline_config.load("breast_cancer")
    assert clf.task is Task.CLASSIFICATION
    assert clf.params["train"]["scoring"] == "f1_macro"
    assert clf.params["evaluate"]["primary_metric"] == "f1_macro"
    assert clf.params["gates"]["champion"]["metric"] == "f1_macro"
    reg = pipeline_config.load("diabetes")
    assert reg.task is Task.REGRESSION and reg.params["data"]["task"] == "regression"
    assert reg.params["train"]["scoring"] == "neg_root_mean_squared_error"
    assert reg.params["evaluate"]["primary_metric"] == "rmse"
    assert reg.params["gates"]["champion"] == {"metric": "rmse", "min_delta": 0.0}
    assert reg.params["train"]["family"] == "ridge"


def test_dataset_thresholds_replace_the_default_set():
    # The diabetes block's rmse/r2 bounds replace the default accuracy/f1 floors instead of merging.
    assert pipeline_config.load("diabetes").params["gates"]["thresholds"] == {"rmse": 65.0, "r2": 0.3}
    assert pipeline_config.load("breast_cancer").params["gates"]["thresholds"] == {
        "accuracy": 0.85,
        "f1_macro": 0.85,
    }
    # Only the thresholds are replaced: the other gate settings still merge into the defaults.
    data_rules = pipeline_config.load("diabetes").params["gates"]["data"]
    assert data_rules["min_rows"] == 80 and data_rules["max_null_fraction"] == 0.5


def test_classification_threshold_on_a_regression_names_the_key(tmp_path: Path):
    path = _params_with(tmp_path, "diabetes", overrides={"train": {"family": "ridge"}})
    # Without its own thresholds the regression inherits accuracy/f1_macro, which it cannot produce.
    with pytest.raises(pipeline_config.ConfigError) as err:
        pipeline_config.load("diabetes", path=path)
    assert str(err.value) == (
        "datasets.diabetes: gates.thresholds names ['accuracy', 'f1_macro'], which a regression does not "
        "produce; set datasets.diabetes.overrides.gates.thresholds to floors/ceilings of ['rmse', 'mae', 'r2']"
    )


def test_primary_metric_of_the_other_task_names_the_key(tmp_path: Path):
    overrides = {"train": {"family": "ridge"}, "evaluate": {"primary_metric": "f1_macro"}}
    path = _params_with(tmp_path, "diabetes", overrides={**overrides, "gates": {"thresholds": {"rmse": 65.0}}})
    with pytest.raises(
        pipeline_config.ConfigError,
        match=re.escape("evaluate.primary_metric is 'f1_macro', which a regression does not produce"),
    ) as err:
        pipeline_config.load("diabetes", path=path)
    assert "set datasets.diabetes.overrides.evaluate.primary_metric" in str(err.value)


def test_estimator_and_entrypoint_together_are_rejected(tmp_path: Path):
    train = {"estimator": "sklearn.ensemble.RandomForestClassifier", "entrypoint": "churn_training:train"}
    path = _params_with(tmp_path, "wine", overrides={"train": train})
    with pytest.raises(
        pipeline_config.ConfigError, match=re.escape("datasets.wine: set train.entrypoint or train.estimator, not both")
    ):
        pipeline_config.load("wine", path=path)


def test_malformed_entrypoint_and_estimator_name_the_key_and_the_shape(tmp_path: Path):
    path = _params_with(tmp_path, "wine", overrides={"train": {"entrypoint": "churn_training.train"}})
    with pytest.raises(
        pipeline_config.ConfigError,
        match=re.escape(
            "datasets.wine: train.entrypoint 'churn_training.train' must look like package.module:function"
        ),
    ):
        pipeline_config.load("wine", path=path)
    path = _params_with(tmp_path, "wine", overrides={"train": {"estimator": "RandomForestClassifier"}})
    with pytest.raises(pipeline_config.ConfigError, match=r"train.estimator .* must be an import path such as"):
        pipeline_config.load("wine", path=path)
    # A well-formed entrypoint is accepted without a search grid.
    path = _params_with(tmp_path, "wine", overrides={"train": {"entrypoint": "churn_training:train"}})
    assert pipeline_config.load("wine", path=path).params["train"]["entrypoint"] == "churn_training:train"


def test_unknown_source_names_the_key_and_the_choices(tmp_path: Path):
    path = _params_with(tmp_path, "wine", source="s3://bucket/wine.csv")
    with pytest.raises(pipeline_config.ConfigError) as err:
        pipeline_config.load("wine", path=path)
    assert str(err.value).startswith("datasets.wine.source 's3://bucket/wine.csv': use `files`")
    assert "sklearn:load_breast_cancer" in str(err.value)
    assert pipeline_config.load("wine", path=_params_with(tmp_path, "wine", source="files")).bundled is False


def test_unknown_task_names_the_key_and_the_choices(tmp_path: Path):
    path = _params_with(tmp_path, "wine", task="clustering")
    with pytest.raises(
        pipeline_config.ConfigError,
        match=re.escape("datasets.wine.task 'clustering': use classification or regression"),
    ):
        pipeline_config.load("wine", path=path)


def test_declared_schema_is_parsed_and_a_bad_type_names_the_column(tmp_path: Path):
    columns = {"alcohol": {"type": "float"}, "color": {"type": "string", "nullable": True}, "cultivar": "int"}
    cfg = pipeline_config.load(
        "wine", path=_params_with(tmp_path, "wine", features=["alcohol", "color"], schema={"columns": columns})
    )
    assert cfg.schema is not None
    assert [(c.name, c.type, c.nullable) for c in cfg.schema.columns] == [
        ("alcohol", ColumnType.NUMBER, False),
        ("color", ColumnType.CATEGORICAL, True),
        ("cultivar", ColumnType.INTEGER, False),
    ]
    assert cfg.params["data"]["schema"]["columns"]["color"] == {"type": "categorical", "nullable": True}
    columns["alcohol"] = {"type": "decimal"}
    with pytest.raises(pipeline_config.ConfigError) as err:
        pipeline_config.load("wine", path=_params_with(tmp_path, "wine", schema={"columns": columns}))
    assert str(err.value) == (
        "datasets.wine.schema.columns.alcohol.type 'decimal': use one of "
        "['number', 'integer', 'boolean', 'categorical']"
    )


def test_declared_schema_without_the_target_names_it(tmp_path: Path):
    path = _params_with(tmp_path, "wine", schema={"columns": {"alcohol": "number"}})
    with pytest.raises(
        pipeline_config.ConfigError,
        match=re.escape("datasets.wine.schema: the schema has no column for the target 'cultivar'"),
    ):
        pipeline_config.load("wine", path=path)
