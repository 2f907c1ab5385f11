"""A dataset's schema: inferred from a user's CSV or Parquet export, round-tripped through params.yaml,
typing every read of the data, with errors that name the column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from flightdeck.data.schema import (
    ColumnSpec,
    ColumnType,
    DatasetSchema,
    SchemaError,
    Task,
    example_frame,
    infer,
    model_frame,
    natural_frame,
    read_raw,
    read_typed,
    target_values,
    training_frame,
)
from tests.support.own_data import TYPED_DTYPES, csv_bytes, customers, parquet_bytes

# What a user's customer export must be inferred as (file order, the target last).
EXPECTED_COLUMNS = [
    ("tenure_months", ColumnType.INTEGER, False, None),
    ("monthly_charges", ColumnType.NUMBER, True, None),  # not yet billed: nulls
    ("plan", ColumnType.CATEGORICAL, False, ("basic", "plus", "pro")),
    ("region", ColumnType.CATEGORICAL, True, ("east", "north", "south", "west")),
    ("support_calls", ColumnType.INTEGER, False, None),
    ("autopay", ColumnType.BOOLEAN, False, None),
    ("churned", ColumnType.CATEGORICAL, False, ("no", "yes")),
]


def _described(schema: DatasetSchema) -> list[tuple]:
    return [(c.name, c.type, c.nullable, c.categories) for c in schema.columns]


@pytest.fixture(scope="module")
def export() -> pd.DataFrame:
    return customers(300, seed=0)


def test_infer_from_a_csv_export_types_nullables_categories_and_classification(export):
    schema = infer(read_raw("customers.csv", csv_bytes(export)), "churned")
    assert _described(schema) == EXPECTED_COLUMNS
    assert schema.target == "churned" and schema.task is Task.CLASSIFICATION  # string labels
    assert schema.classes == ["no", "yes"]
    assert schema.feature_names == [name for name, *_ in EXPECTED_COLUMNS[:-1]]


def test_infer_from_a_parquet_export_gives_the_same_schema(export):
    payload = parquet_bytes(export)
    assert payload[:4] == b"PAR1"
    from_parquet = infer(read_raw("customers.parquet", payload), "churned")
    assert from_parquet == infer(read_raw("customers.csv", csv_bytes(export)), "churned")
    # The Parquet magic bytes decide, not the name.
    assert _described(infer(read_raw("customers-export", payload), "churned")) == EXPECTED_COLUMNS


def test_infer_regression_for_a_float_target(export):
    billed = export.dropna(subset=["monthly_charges"])
    schema = infer(read_raw("billed.csv", csv_bytes(billed)), "monthly_charges")
    assert schema.task is Task.REGRESSION
    assert schema.by_name["monthly_charges"] == ColumnSpec("monthly_charges", ColumnType.NUMBER)
    assert schema.classes is None
    # An integer target with few values is a classification; the task can always be given explicitly.
    assert infer(billed, "support_calls").task is Task.CLASSIFICATION
    assert infer(billed, "support_calls", "regression").task is Task.REGRESSION


def test_infer_reads_integers_with_gaps_and_boolean_words(export):
    frame = export.copy()
    frame["support_calls"] = frame["support_calls"].astype("float64")
    frame.loc[[3, 9], "support_calls"] = np.nan  # a CSV reader sees floats
    frame["autopay"] = np.where(export["autopay"], "TRUE", "false")
    schema = infer(read_raw("x.csv", csv_bytes(frame)), "churned")
    assert schema.by_name["support_calls"] == ColumnSpec("support_calls", ColumnType.INTEGER, nullable=True)
    assert schema.by_name["autopay"] == ColumnSpec("autopay", ColumnType.BOOLEAN)


def test_params_round_trip(export):
    schema = infer(export, "churned")
    params = schema.to_params()
    assert params["task"] == "classification" and params["target"] == "churned"
    assert params["schema"]["columns"]["region"] == {
        "type": "categorical",
        "nullable": True,
        "categories": ["east", "north", "south", "west"],
    }
    assert params["schema"]["columns"]["tenure_months"] == {"type": "integer"}
    # Through the YAML a user reviews and commits, and back.
    text = yaml.safe_dump(params, sort_keys=False)
    loaded = yaml.safe_load(text)
    again = DatasetSchema.from_params(loaded["schema"], target=loaded["target"], task=loaded["task"], where="x")
    assert again == schema and _described(again) == EXPECTED_COLUMNS
    regression = infer(export.dropna(subset=["monthly_charges"]), "monthly_charges")
    back = regression.to_params()
    assert DatasetSchema.from_params(back["schema"], target=back["target"], task=back["task"], where="x") == regression


def test_target_missing_names_the_column_and_the_columns(export):
    with pytest.raises(SchemaError) as err:
        infer(export, "churn")
    assert str(err.value).startswith("target 'churn' is not a column of the data; columns: ['tenure_months'")
    with pytest.raises(SchemaError, match="datasets.churn.schema: the schema has no column for the target 'churn'"):
        DatasetSchema.from_params(
            {"columns": {"plan": "categorical"}}, target="churn", task="classification", where="datasets.churn.schema"
        )


def test_nullable_target_names_the_column(export):
    with pytest.raises(SchemaError, match="target 'monthly_charges' has missing values in the sample"):
        infer(export, "monthly_charges")
    block = {"columns": {"x": "number", "y": {"type": "number", "nullable": True}}}
    with pytest.raises(SchemaError) as err:
        DatasetSchema.from_params(block, target="y", task="regression", where="datasets.d.schema")
    assert str(err.value) == "datasets.d.schema: target 'y' cannot be nullable: every training row needs a label"


def test_regression_on_a_categorical_target_names_the_column_and_the_fix(export):
    with pytest.raises(SchemaError) as err:
        infer(export, "churned", "regression")
    assert str(err.value) == (
        "target 'churned' is categorical, but a regression needs a number: set `task: classification` or fix "
        "the column's type"
    )


def test_empty_sample_and_unreadable_files_are_refused():
    with pytest.raises(SchemaError, match="no rows"):
        infer(pd.DataFrame({"a": [], "y": []}), "y")
    with pytest.raises(SchemaError, match=r"empty file \(0 bytes of data\)"):
        read_raw("x.csv", b"")
    with pytest.raises(SchemaError, match="unreadable Parquet"):
        read_raw("x.parquet", b"PAR1 not really")


def test_read_typed_gives_schema_dtypes_from_csv_andparquet_bytes(tmp_path: Path, export):
    schema = infer(export, "churned")
    (tmp_path / "d.csv").write_bytes(csv_bytes(export))
    (tmp_path / "d.parquet").write_bytes(parquet_bytes(export))
    expected = TYPED_DTYPES
    for name in ("d.csv", "d.parquet"):
        typed = read_typed(tmp_path / name, schema)
        assert {k: str(v) for k, v in typed.dtypes.items()} == expected, name
        assert typed["region"].isna().sum() == export["region"].isna().sum()
        assert typed["autopay"].tolist() == export["autopay"].tolist()


def test_model_training_example_and_natural_frames(tmp_path: Path, export):
    schema = infer(export, "churned")
    (tmp_path / "d.csv").write_bytes(csv_bytes(export))
    typed = read_typed(tmp_path / "d.csv", schema)
    # What every model sees, and what the model server feeds: floats with NaN, strings with None.
    features = model_frame(typed, schema)
    assert list(features.columns) == schema.feature_names
    assert {str(t) for c, t in features.dtypes.items() if c not in ("plan", "region")} == {"float64"}
    assert features["plan"].dtype == object and features["region"].dtype == object
    assert features["region"].isna().sum() > 0 and all(v is None for v in features["region"] if not isinstance(v, str))
    assert set(features["autopay"].unique()) == {0.0, 1.0}
    # The user's entrypoint gets the same features plus the labels as strings.
    train = training_frame(typed, schema)
    assert list(train.columns) == schema.names
    assert set(train["churned"]) == {"no", "yes"}
    labels = target_values(typed, schema)
    assert isinstance(labels, np.ndarray) and labels.dtype == object and set(labels) == {"no", "yes"}
    # The logged input example: complete rows in JSON-natural dtypes, no target.
    example = example_frame(typed, schema)
    assert len(example) == 3 and list(example.columns) == schema.feature_names
    assert example.notna().all().all()
    assert {c: str(t) for c, t in example.dtypes.items()} == {
        "tenure_months": "int64",
        "monthly_charges": "float64",
        "plan": "object",
        "region": "object",
        "support_calls": "int64",
        "autopay": "bool",
    }
    # With a null present, integers fall back to objects with None (no pandas NA leaks to scikit-learn).
    natural = natural_frame(typed.assign(tenure_months=typed["tenure_months"].where(typed.index != 0)), schema)
    assert natural["tenure_months"].dtype == object and natural.at[0, "tenure_months"] is None


def test_regression_target_values_are_floats(export):
    billed = export.dropna(subset=["monthly_charges"]).reset_index(drop=True)
    schema = infer(billed, "monthly_charges")
    values = target_values(billed, schema)
    assert values.dtype == np.float64 and len(values) == len(billed)
