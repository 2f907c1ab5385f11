"""One landed batch against the dataset's schema: each bad kind is refused (or reported) with a reason
that names the column and example rows (1-based data rows); good CSV and Parquet batches come back typed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flightdeck.data.schema import infer
from flightdeck.data.validate import UnseenCategories, validate_batch
from tests.support.own_data import TYPED_DTYPES, csv_bytes, customers, parquet_bytes


@pytest.fixture(scope="module")
def schema():
    return infer(customers(300, seed=0), "churned")


@pytest.fixture
def batch() -> pd.DataFrame:
    """A later export of the same table (other rows), as object columns so tests can break cells."""
    return customers(40, seed=5).astype({"plan": object, "churned": object, "support_calls": object})


def test_good_csv_and_parquet_batches_pass_with_typed_columns(schema, batch):
    for key, payload in (("b.csv", csv_bytes(batch)), ("b.parquet", parquet_bytes(customers(40, seed=5)))):
        check = validate_batch(key, payload, schema)
        assert check.ok, check.reason
        assert check.reasons == [] and check.unseen == {}
        assert check.frame is not None and len(check.frame) == 40
        assert {c: str(t) for c, t in check.frame.dtypes.items()} == TYPED_DTYPES, key
        assert check.frame["region"].isna().sum() == batch["region"].isna().sum()  # nullable: kept as null
        assert check.frame["autopay"].tolist() == batch["autopay"].tolist()


def test_unseen_label_is_rejected_naming_the_target_and_rows(schema, batch):
    batch.loc[[2, 6], "churned"] = "maybe"
    check = validate_batch("b.csv", csv_bytes(batch), schema)
    assert not check.ok and check.frame is None
    assert check.reason == (
        "target 'churned': 2 label(s) outside the known classes ['no', 'yes']: ['maybe'], "
        "e.g. row 3: 'maybe', row 7: 'maybe'"
    )


def test_unseen_category_is_reported_with_counts_by_default(schema, batch):
    batch.loc[[2, 3, 9], "plan"] = "enterprise"
    check = validate_batch("b.csv", csv_bytes(batch), schema)
    assert check.ok, check.reason
    assert check.unseen == {"plan": {"enterprise": 3}}
    assert check.frame is not None and (check.frame["plan"] == "enterprise").sum() == 3


def test_unseen_category_is_rejected_under_the_quarantine_policy(schema, batch):
    batch.loc[[2, 3, 9], "plan"] = "enterprise"
    batch.loc[[0], "region"] = "central"
    check = validate_batch("b.csv", csv_bytes(batch), schema, unseen_categories=UnseenCategories.QUARANTINE)
    assert not check.ok and check.frame is None
    assert check.unseen == {"plan": {"enterprise": 3}, "region": {"central": 1}}
    assert check.reasons == [
        "column 'plan': 3 value(s) outside its categories: 'enterprise' x3 (datasets.<name>.unseen_categories: "
        "quarantine)",
        "column 'region': 1 value(s) outside its categories: 'central' x1 (datasets.<name>.unseen_categories: "
        "quarantine)",
    ]
    assert validate_batch("b.csv", csv_bytes(batch), schema, unseen_categories="quarantine").reasons == check.reasons


def test_null_in_a_non_nullable_column_is_rejected_naming_the_rows(schema, batch):
    batch["tenure_months"] = batch["tenure_months"].astype("float64")
    batch.loc[[1, 4], "tenure_months"] = np.nan
    check = validate_batch("b.csv", csv_bytes(batch), schema)
    assert not check.ok
    assert check.reason == "column 'tenure_months': 2 null(s) but it is not nullable, at row 2, row 5"
    batch = customers(40, seed=5).astype({"churned": object})
    batch.loc[7, "churned"] = None
    check = validate_batch("b.parquet", parquet_bytes(batch), schema)
    assert check.reason == "target 'churned': 1 null(s) but it is not nullable, at row 8"


def test_wrong_type_in_a_csv_is_rejected_naming_column_and_values(schema, batch):
    batch.loc[0, "support_calls"] = "three"
    batch.loc[3, "support_calls"] = 2.5  # not an integer either
    batch["autopay"] = batch["autopay"].astype(object)
    batch.loc[5, "autopay"] = "maybe"
    check = validate_batch("b.csv", csv_bytes(batch), schema)
    assert not check.ok
    assert check.reasons == [
        "column 'support_calls': 2 value(s) are not integer, e.g. row 1: 'three', row 4: '2.5'",
        "column 'autopay': 1 value(s) are not boolean, e.g. row 6: 'maybe'",
    ]


def test_wrong_type_in_a_parquet_file_names_the_file_type(schema):
    batch = customers(40, seed=5)
    batch["tenure_months"] = batch["tenure_months"].astype(str) + " months"
    check = validate_batch("b.parquet", parquet_bytes(batch), schema)
    assert not check.ok
    assert check.reason.startswith(
        "column 'tenure_months': 40 value(s) are not integer (the file's type is str), e.g. row 1: '"
    )
    batch = customers(40, seed=5)
    batch["plan"] = np.arange(40)  # numbers where the schema has strings: another schema
    check = validate_batch("b.parquet", parquet_bytes(batch), schema)
    assert not check.ok
    assert check.reason == (
        "column 'plan': 40 value(s) are not categorical (the file's type is int64), e.g. row 1: 0, row 2: 1, row 3: 2"
    )


def test_parquet_with_a_different_schema_names_missing_and_extra_columns(schema):
    batch = customers(40, seed=5).drop(columns=["region"]).assign(signup_channel="web")
    check = validate_batch("b.parquet", parquet_bytes(batch), schema)
    assert not check.ok
    assert check.reasons == [
        "missing columns: ['region']",
        "extra columns: ['signup_channel'] (declare them in the schema or drop them upstream)",
    ]


def test_empty_file_is_rejected(schema):
    for payload in (b"", b"  \n\n"):
        check = validate_batch("b.csv", payload, schema)
        assert not check.ok and check.reason == "empty file (0 bytes of data)"


def test_header_only_file_is_rejected(schema, batch):
    for key, payload in (
        ("b.csv", csv_bytes(batch.head(0))),
        ("b.parquet", parquet_bytes(customers(40, seed=5).head(0))),
    ):
        check = validate_batch(key, payload, schema)
        assert not check.ok and check.reason == "no rows (header only)", key


def test_unreadable_parquet_is_rejected_naming_the_format(schema):
    check = validate_batch("b.parquet", b"PAR1 truncated upload", schema)
    assert not check.ok and check.reason.startswith("unreadable Parquet: ")
