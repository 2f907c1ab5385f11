"""First use of one's own data: `flightdeck dataset init` infers a params block from a sample file and
writes it into params.yaml (comments kept), and what it writes is a configuration `load` accepts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flightdeck import modeling, pipeline_config
from flightdeck.data.onboard import init_block, write_block
from flightdeck.data.schema import ColumnType, SchemaError, Task, infer, read_raw
from flightdeck.stages.train import code_path
from tests.support.own_data import customers


@pytest.fixture
def params(tmp_path: Path) -> Path:
    """A copy of the shipped params.yaml to write into."""
    return Path(shutil.copy(pipeline_config.PARAMS_PATH, tmp_path / "params.yaml"))


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "customers-2026-01.csv"
    customers(120, seed=4).to_csv(path, index=False)
    return path


def _comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("#") or " # " in line]


def test_init_block_from_a_csv_infers_schema_task_and_model(sample: Path):
    block = init_block("churn", sample, "churned")
    assert block["source"] == "files" and block["task"] == "classification" and block["target"] == "churned"
    assert block["schema"]["columns"]["plan"] == {"type": "categorical", "categories": ["basic", "plus", "pro"]}
    assert block["schema"]["columns"]["monthly_charges"] == {"type": "number", "nullable": True}
    assert block["unseen_categories"] == "report"
    assert block["holdout"] == {"fraction": 0.25, "file": None}
    assert block["overrides"] == {
        "train": {"family": "hist_gradient_boosting"},
        "gates": {"data": {"min_rows": 60}, "thresholds": {"f1_macro": 0.5}},
    }


def test_written_block_is_accepted_by_load_and_keeps_the_comments(params: Path, sample: Path):
    before = params.read_text()
    others = {name: pipeline_config.load(name, path=params).params_hash for name in ("breast_cancer", "diabetes")}
    write_block("churn", init_block("churn", sample, "churned"), params)
    after = params.read_text()
    assert _comments(after) == _comments(before)  # every comment kept, in order
    assert after.count("\n  churn:\n") == 1
    cfg = pipeline_config.load("churn", path=params)
    assert (cfg.source, cfg.target, cfg.task, cfg.bundled) == ("files", "churned", Task.CLASSIFICATION, False)
    assert cfg.schema == infer(read_raw(sample.name, sample.read_bytes()), "churned")
    assert cfg.schema.by_name["autopay"].type is ColumnType.BOOLEAN
    assert cfg.params["gates"]["thresholds"] == {"f1_macro": 0.5}
    assert cfg.params["gates"]["data"]["min_rows"] == 60
    assert modeling.estimator_path(cfg.params["train"], cfg.task) == "sklearn.ensemble.HistGradientBoostingClassifier"
    assert cfg.params["data"]["schema"] == init_block("churn", sample, "churned")["schema"]
    # The other datasets read exactly as before.
    assert {name: pipeline_config.load(name, path=params).params_hash for name in others} == others


def test_existing_name_is_refused_without_force(params: Path, sample: Path):
    write_block("churn", init_block("churn", sample, "churned"), params)
    written = params.read_text()
    with pytest.raises(pipeline_config.ConfigError) as err:
        write_block("churn", init_block("churn", sample, "churned"), params)
    assert str(err.value) == f"datasets.churn exists already in {params}; pick another name or pass --force"
    assert params.read_text() == written  # untouched
    with pytest.raises(pipeline_config.ConfigError, match="datasets.wine exists already"):
        write_block("wine", init_block("wine", sample, "churned"), params)


def test_force_replaces_the_block_and_nothing_else(params: Path, sample: Path):
    diabetes = pipeline_config.load("diabetes", path=params).params_hash
    block = init_block(
        "wine", sample, "churned", entrypoint="churn_training:train", code_path="tests/support/user_training"
    )
    write_block("wine", block, params, force=True)
    text = params.read_text()
    assert text.count("\n  wine:\n") == 1 and "sklearn:load_wine" not in text
    cfg = pipeline_config.load("wine", path=params)
    assert cfg.source == "files" and cfg.target == "churned"
    assert cfg.params["train"]["entrypoint"] == "churn_training:train"
    assert code_path(cfg.params["train"]) == pipeline_config.PARAMS_PATH.parent / "tests" / "support" / "user_training"
    assert pipeline_config.load("diabetes", path=params).params_hash == diabetes


def test_init_block_for_a_regression_sets_regression_bounds(params: Path, tmp_path: Path):
    path = tmp_path / "billed.parquet"
    customers(120, seed=4).dropna(subset=["monthly_charges"]).to_parquet(path, index=False)
    block = init_block("charges", path, "monthly_charges")
    assert block["task"] == "regression"
    assert block["overrides"]["gates"]["thresholds"] == {"r2": 0.0}
    write_block("charges", block, params)
    cfg = pipeline_config.load("charges", path=params)
    assert cfg.task is Task.REGRESSION
    assert cfg.params["evaluate"]["primary_metric"] == "rmse"
    assert cfg.params["train"]["scoring"] == "neg_root_mean_squared_error"
    assert modeling.estimator_path(cfg.params["train"], cfg.task) == "sklearn.ensemble.HistGradientBoostingRegressor"


def test_init_refuses_bad_names_and_targets(sample: Path):
    with pytest.raises(pipeline_config.ConfigError, match="dataset name 'Churn-2026'"):
        init_block("Churn-2026", sample, "churned")
    with pytest.raises(SchemaError, match="target 'churn' is not a column"):
        init_block("churn", sample, "churn")


def test_init_warns_that_a_date_column_becomes_a_categorical(tmp_path, caplog):
    sample = tmp_path / "events.csv"
    frame = customers(3).assign(signed_up=["2024-01-02", "2024-03-04T10:00:00Z", None])
    frame[["signed_up", "plan", "churned"]].to_csv(sample, index=False)
    with caplog.at_level("WARNING", logger="flightdeck.data.onboard"):
        block = init_block("events", sample, "churned")
    assert block["schema"]["columns"]["signed_up"]["type"] == "categorical"
    assert [r.getMessage().split(" holds")[0] for r in caplog.records] == ["column 'signed_up'"]
