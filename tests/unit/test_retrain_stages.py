"""The DVC stages as functions (no DVC, no MLflow): prepare -> train -> evaluate in a temp folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flightdeck import modeling, pipeline_config
from flightdeck.data import generate
from flightdeck.stages import evaluate, prepare, train


def _workspace(tmp_path: Path, dataset: str, family: str | None = None) -> Path:
    cfg = pipeline_config.load(dataset)
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
    summary = train.run(root)
    assert len(summary["candidates"]) == len(
        modeling.grid(yaml.safe_load((root / "params.yaml").read_text())["train"]["search"][summary["family"]])
    )
    assert sum(1 for c in summary["candidates"] if c.get("best")) == 1
    scores = evaluate.run(root)
    on_disk = json.loads((root / "metrics.json").read_text())
    assert on_disk == scores
    assert 0.8 < scores["f1_macro"] <= 1.0 and 0.8 < scores["roc_auc"] <= 1.0
    assert scores["holdout_rows"] == schema["holdout_rows"]


def test_grid_is_the_cartesian_product():
    assert modeling.grid({"b": [1, 2], "a": ["x"]}) == [{"a": "x", "b": 1}, {"a": "x", "b": 2}]


def test_unknown_family_is_rejected():
    with pytest.raises(ValueError, match="unknown model family"):
        modeling.build("svm", 0)
