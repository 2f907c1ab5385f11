"""Dataset/target/features/model family come from params.yaml, not code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flightdeck import pipeline_config, settings


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
