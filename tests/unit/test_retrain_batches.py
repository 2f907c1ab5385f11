"""Batch generation (deterministic, evolving, degraded, malformed) and structural batch validation."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from flightdeck import pipeline_config
from flightdeck.data import generate
from flightdeck.data.schema import ColumnType, infer
from flightdeck.data.validate import validate_batch


@pytest.fixture(scope="module")
def cfg():
    return pipeline_config.load("breast_cancer")


@pytest.fixture(scope="module")
def schema(cfg):
    """The schema sync infers for a bundled table: every feature a number, the target an integer class."""
    return infer(generate.load_source(cfg), cfg.target, cfg.task)


def test_bundled_table_schema_is_numbers_and_integer_classes(cfg, schema):
    assert {c.type for c in schema.features} == {ColumnType.NUMBER}
    assert schema.by_name[cfg.target].type is ColumnType.INTEGER
    assert schema.classes == [0, 1]


def test_batches_are_deterministic_and_evolve(cfg):
    one = generate.to_csv_bytes(generate.good_batch(cfg, 1))
    assert one == generate.to_csv_bytes(generate.good_batch(cfg, 1))
    b1, b5 = generate.good_batch(cfg, 1), generate.good_batch(cfg, 5)  # same chunk (4 chunks), later drift
    assert len(b1) == len(b5)
    assert (b5["mean_radius"].mean() / b1["mean_radius"].mean()) == pytest.approx(1.05 / 1.01, rel=0.01)


def test_holdout_never_overlaps_the_batches(cfg):
    holdout = generate.holdout(cfg)
    source = generate.load_source(cfg)
    pool_rows = sum(len(generate._chunk(cfg, s)) for s in range(1, 5))
    assert len(holdout) + pool_rows == len(source)
    key = ["mean_radius", "mean_texture", "mean_area"]
    chunks = pd.concat([generate._chunk(cfg, s) for s in range(1, 5)])
    assert holdout.merge(chunks, on=key).empty


def test_degraded_batch_corrupts_labels_and_shifts_features(cfg):
    degraded = generate.degraded_batch(cfg, 3)
    pool = pd.concat([generate._chunk(cfg, s) for s in range(1, 5)])
    # Labels moved to the other class for ~60% of the rows: the class balance flips.
    assert degraded[cfg.target].mean() < pool[cfg.target].mean() - 0.1
    assert degraded["mean_radius"].mean() > pool["mean_radius"].mean() + 0.3 * pool["mean_radius"].std()


def test_good_and_degraded_batches_pass_structural_validation(cfg, schema):
    for frame in (generate.good_batch(cfg, 2), generate.degraded_batch(cfg, 2)):
        check = validate_batch("k", generate.to_csv_bytes(frame), schema)
        assert check.ok, check.reason
        assert check.frame is not None and len(check.frame) == len(frame)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing_column", "missing columns: ['mean_radius']"),
        ("extra_column", "extra columns: ['unexpected_column']"),
        ("wrong_type", "column 'mean_texture': 10 value(s) are not number, e.g. row 1: 'not-a-number'"),
        ("empty", "empty file"),
    ],
)
def test_malformed_batches_are_rejected_with_the_reason(cfg, schema, kind, expected):
    check = validate_batch("k", generate.malformed_batch(cfg, 9, kind), schema)
    assert not check.ok
    assert expected in check.reason


def test_header_only_unknown_class_and_float_labels_are_rejected(cfg, schema):
    header = (",".join(schema.names) + "\n").encode()
    assert "no rows (header only)" in validate_batch("k", header, schema).reason
    frame = generate.good_batch(cfg, 1).head(5)
    frame.loc[frame.index[0], cfg.target] = 7
    check = validate_batch("k", generate.to_csv_bytes(frame), schema)
    assert not check.ok
    assert "target 'diagnosis': 1 label(s) outside the known classes ['0', '1']: ['7'], e.g. row 1: 7" in check.reason
    frame[cfg.target] = 0.5
    check = validate_batch("k", generate.to_csv_bytes(frame), schema)
    assert not check.ok
    assert "column 'diagnosis': 5 value(s) are not integer, e.g. row 1: '0.5'" in check.reason


def test_multiclass_dataset_by_config(tmp_path):
    wine = pipeline_config.load("wine")
    batch = generate.good_batch(wine, 1)
    assert set(batch[wine.target].unique()) <= {0, 1, 2}
    assert "alcohol" in batch.columns and wine.target == batch.columns[-1]
    degraded = generate.degraded_batch(wine, 1)
    clean = pd.concat([generate._chunk(wine, s) for s in range(1, 4)])
    # 60% of the labels moved to the next class: the class shares differ from the clean pool's.
    shift = degraded[wine.target].value_counts(normalize=True) - clean[wine.target].value_counts(normalize=True)
    assert shift.abs().max() > 0.05
    assert len(degraded) == len(clean)
    assert pd.read_csv(io.BytesIO(generate.to_csv_bytes(batch))).shape == batch.shape
