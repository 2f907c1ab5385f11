"""Deterministic, evolving batches cut from a dataset bundled with scikit-learn (nothing is downloaded).

The bundled table is shuffled once with the configured seed: a fixed share becomes the reference
holdout (the golden set every model is judged on), the rest is landed chunk by chunk. Batch `seq`
carries multiplicative drift growing with `seq` plus gaussian noise, so the data "evolves". A degraded
batch passes the structural checks but has corrupted labels and shifted features; malformed batches
exercise the quarantine (missing/extra column, wrong type, empty).
"""

from __future__ import annotations

import importlib
import io

import numpy as np
import pandas as pd

from flightdeck.data.schema import Task
from flightdeck.pipeline_config import ConfigError, DatasetConfig

MALFORMED_KINDS = ("missing_column", "extra_column", "wrong_type", "empty")


def _column_name(raw: str) -> str:
    return raw.strip().replace(" ", "_").replace("/", "_").replace("(", "").replace(")", "")


def load_source(cfg: DatasetConfig) -> pd.DataFrame:
    """The full bundled table with clean column names, features then the target column: a DataFrame, one
    row per sample of the scikit-learn dataset (sklearn.datasets.load_*).

    Raises ConfigError when the source is not a bundled `sklearn:load_*` table or lacks a configured feature."""
    module_name, _, func_name = cfg.source.partition(":")
    if module_name != "sklearn" or not func_name.startswith("load_"):
        raise ConfigError(f"source {cfg.source!r} is not a bundled 'sklearn:load_*' table; its batches come from files")
    loader = getattr(importlib.import_module("sklearn.datasets"), func_name, None)
    if loader is None:
        raise ConfigError(f"source {cfg.source!r}: sklearn.datasets has no {func_name}")
    bunch = loader()
    frame = pd.DataFrame(bunch.data, columns=[_column_name(c) for c in bunch.feature_names])
    if cfg.features is not None:
        missing = sorted(set(cfg.features) - set(frame.columns))
        if missing:
            raise ConfigError(f"dataset {cfg.name}: configured features not in the source: {missing}")
        frame = frame[list(cfg.features)]
    dtype = np.float64 if cfg.task is Task.REGRESSION else np.int64
    frame[cfg.target] = np.asarray(bunch.target, dtype=dtype)
    return frame


def _split(cfg: DatasetConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = load_source(cfg)
    rng = np.random.default_rng(int(cfg.batches.get("seed", 0)))
    order = rng.permutation(len(frame))
    n_holdout = int(round(len(frame) * float(cfg.batches.get("holdout_fraction", 0.25))))
    shuffled = frame.iloc[order].reset_index(drop=True)
    return shuffled.iloc[:n_holdout].reset_index(drop=True), shuffled.iloc[n_holdout:].reset_index(drop=True)


def holdout(cfg: DatasetConfig) -> pd.DataFrame:
    """The fixed reference set (undrifted, clean labels)."""
    return _split(cfg)[0]


def _chunk(cfg: DatasetConfig, seq: int) -> pd.DataFrame:
    pool = _split(cfg)[1]
    chunks = max(1, int(cfg.batches.get("chunks", 4)))
    parts = np.array_split(np.arange(len(pool)), chunks)
    return pool.iloc[parts[(seq - 1) % chunks]].reset_index(drop=True)


def good_batch(cfg: DatasetConfig, seq: int) -> pd.DataFrame:
    """Batch number `seq` (1-based): a chunk of the pool with drift and noise that grow with seq."""
    if seq < 1:
        raise ValueError("seq starts at 1")
    batch = _chunk(cfg, seq)
    features = [c for c in batch.columns if c != cfg.target]
    rng = np.random.default_rng(int(cfg.batches.get("seed", 0)) * 1000 + seq)
    std = batch[features].std(ddof=0).replace(0, 1.0).to_numpy()
    drift = 1.0 + float(cfg.batches.get("drift", 0.0)) * seq
    noise = rng.normal(0.0, float(cfg.batches.get("noise", 0.0)), size=(len(batch), len(features))) * std
    values = batch[features].to_numpy() * drift + noise
    # Physical quantities stay non-negative when the source is.
    nonneg = (batch[features].to_numpy() >= 0).all(axis=0)
    values[:, nonneg] = np.clip(values[:, nonneg], 0.0, None)
    batch[features] = values
    return batch


def degraded_batch(cfg: DatasetConfig, seq: int) -> pd.DataFrame:
    """A batch that is structurally fine but teaches the wrong thing: label noise and shifted features.

    It is as large as the whole pool (sampled with replacement), so a model trained with it is worse
    on the clean holdout than one trained without it.
    """
    pool = _split(cfg)[1]
    rng = np.random.default_rng(int(cfg.batches.get("seed", 0)) * 1000 + 500 + seq)
    batch = pool.iloc[rng.integers(0, len(pool), size=len(pool))].reset_index(drop=True)
    features = [c for c in batch.columns if c != cfg.target]
    labels = batch[cfg.target].to_numpy().copy()
    flip = rng.random(len(batch)) < float(cfg.batches.get("degraded_label_noise", 0.5))
    if cfg.task is Task.REGRESSION:
        # Targets of other rows: the link between features and target is broken for those rows.
        labels[flip] = rng.permutation(labels[flip])
    else:
        # Systematic corruption (next class), the way a broken label mapping upstream would look.
        classes = np.sort(pool[cfg.target].unique())
        index = np.searchsorted(classes, labels[flip])
        labels[flip] = classes[(index + 1) % len(classes)]
    batch[cfg.target] = labels
    shifted = features[::2]
    std = batch[shifted].std(ddof=0).replace(0, 1.0)
    batch[shifted] = batch[shifted] + float(cfg.batches.get("degraded_shift", 0.0)) * std
    return batch


def malformed_batch(cfg: DatasetConfig, seq: int, kind: str) -> bytes:
    """CSV bytes of a batch that must be quarantined, of the given kind."""
    if kind not in MALFORMED_KINDS:
        raise ValueError(f"unknown malformed kind {kind!r}; one of {MALFORMED_KINDS}")
    if kind == "empty":
        return b""
    batch = good_batch(cfg, seq).head(20)
    features = [c for c in batch.columns if c != cfg.target]
    if kind == "missing_column":
        batch = batch.drop(columns=[features[0]])
    elif kind == "extra_column":
        batch["unexpected_column"] = 1.0
    elif kind == "wrong_type":
        batch[features[1]] = batch[features[1]].astype(object)
        batch.loc[batch.index[::2], features[1]] = "not-a-number"
    return to_csv_bytes(batch)


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """The one CSV encoding used everywhere, so identical data always hashes identically."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format="%.10g", lineterminator="\n")
    return buf.getvalue().encode()
