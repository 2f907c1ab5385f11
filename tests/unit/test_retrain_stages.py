"""The DVC stages as functions (no DVC, no MLflow): prepare -> train -> evaluate in a temp folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flightdeck import modeling, pipeline_config
from flightdeck.data import generate
from flightdeck.data.schema import Task, infer
from flightdeck.stages import evaluate, prepare, train


def _workspace(tmp_path: Path, dataset: str, family: str | None = None) -> Path:
    """A workspace as sync leaves it: params rendered with the dataset's schema, dataset.csv, holdout.csv."""
    cfg = pipeline_config.load(dataset)
    cfg = cfg.with_schema(infer(generate.load_source(cfg), cfg.target, cfg.task))
    params = cfg.params
    if family:
        params["train"]["family"] = family
    (tmp_path / "data").mkdir()
    data = pd.concat([generate.good_batch(cfg, 1), generate.good_batch(cfg, 2)], ignore_index=True)
    data = pd.concat([data, data.head(5)], ignore_index=True)  # duplicates are dropped by prepare
    (tmp_path / "data" / "dataset.csv").write_bytes(generate.to_csv_bytes(data))
    (tmp_path / "data" / "holdout.csv").write_bytes(generate.to_csv_bytes(generate.holdout(cfg)))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


@pytest.mark.parametrize(("dataset", "family"), [("breast_cancer", None), ("wine", "random_forest")])
def test_stages_chain(tmp_path, dataset, family):
    root = _workspace(tmp_path, dataset, family)
    schema = prepare.run(root)
    assert schema["dropped_duplicates"] == 5
    assert (root / "prepared" / "train.parquet").is_file() and (root / "prepared" / "holdout.parquet").is_file()
    summary = train.run(root)
    train_params = yaml.safe_load((root / "params.yaml").read_text())["train"]
    assert summary["model"] == modeling.estimator_path(train_params, Task.CLASSIFICATION)
    assert len(summary["candidates"]) == len(modeling.grid(train_params["search"][train_params["family"]]))
    assert sum(1 for c in summary["candidates"] if c.get("best")) == 1
    scores = evaluate.run(root)
    on_disk = json.loads((root / "metrics.json").read_text())
    assert on_disk == scores
    assert 0.8 < scores["f1_macro"] <= 1.0 and 0.8 < scores["roc_auc"] <= 1.0
    assert scores["holdout_rows"] == schema["holdout_rows"]
    # the baseline the version is watched against once live: every feature profiled, predictions on the holdout
    profile = json.loads((root / "baseline" / "profile.json").read_text())
    assert [f["name"] for f in profile["features"]] == schema["features"]
    assert profile["prediction"]["rows"] == schema["holdout_rows"] and profile["rows"] == schema["train_rows"]
    assert abs(sum(profile["prediction"]["categories"].values()) - 1) < 1e-3


def test_stages_chain_on_a_regression(tmp_path):
    root = _workspace(tmp_path, "diabetes")
    schema = prepare.run(root)
    assert schema["task"] == "regression" and schema["classes"] is None
    summary = train.run(root)
    assert summary["model"] == "sklearn.linear_model.Ridge"
    assert summary["candidates"][0]["scoring"] == "neg_root_mean_squared_error"
    scores = evaluate.run(root)
    assert set(scores) == {"rmse", "mae", "r2", "holdout_rows"}
    # Ridge on diabetes: an rmse around 55 (the target's std is ~77), well inside the configured ceiling.
    assert 30 < scores["rmse"] < 65.0 and scores["mae"] < scores["rmse"] and scores["r2"] > 0.3


def test_grid_is_the_cartesian_product():
    assert modeling.grid({"b": [1, 2], "a": ["x"]}) == [{"a": "x", "b": 1}, {"a": "x", "b": 2}]


def test_unknown_family_is_rejected():
    with pytest.raises(modeling.ModelConfigError, match="train.family 'svm': use one of"):
        modeling.estimator_path({"family": "svm"}, Task.CLASSIFICATION)
    with pytest.raises(modeling.ModelConfigError, match="train.family 'ridge' has no classification estimator"):
        modeling.estimator_path({"family": "ridge"}, Task.CLASSIFICATION)
