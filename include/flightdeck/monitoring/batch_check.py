"""The drift check of a landed training batch before it is merged (issue 11, item 5).

The reference is the dataset's holdout, profiled with monitoring.baseline (features, and the target too:
a batch whose labels moved is as suspect as one whose features did). The holdout, and not the current
dataset, because at sync time it is
- always there once the dataset has data (a bundled table's holdout is cut before its first batch; a user's
  holdout file, or the first data's cut, is frozen), and already checked out in the workspace;
- clean and frozen: merged batches never enter it, so a drifted batch accepted under `warn` does not move
  the reference for the next one, and it is the population every model is gated on;
- small and fixed: profiling it costs the same at every sync, where the dataset grows with every batch
  (sync appends to the dataset file without parsing it).
The price: data that drifts for real, slowly, batch after batch, ends up flagged against a frozen holdout;
`flightdeck dataset new-holdout NAME` cuts a new one from the current data.

`monitor.batch_check` (params.yaml) decides what a flagged batch (DriftReport.flagged: drift, or a
data-quality violation such as nulls rising) does: `warn` merges it with a warning in the log and in the
sync result; `quarantine` moves it to quarantine/ with the report as its reason.
"""

from __future__ import annotations

from typing import TypedDict

import pandas as pd

from flightdeck.data.schema import ColumnType, DatasetSchema, Task
from flightdeck.monitoring import drift
from flightdeck.monitoring.baseline import DataProfile, profile_column
from flightdeck.monitoring.config import MonitorConfig


class BatchDrift(TypedDict):
    """A landed batch the drift check flagged: what drifted and what was done (`action`: warn | quarantine)."""

    key: str
    status: str  # drift.Status value
    drifted_features: list[str]  # may include the target
    violations: list[str]
    action: str  # config.BatchCheckAction value
    reference: str  # what it was compared with, e.g. "holdout 3f2a..."


def _columns(frame: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    """The schema's features and target; a classification target as text (its classes are categories)."""
    out = frame[schema.names].copy()
    if schema.task is Task.CLASSIFICATION:
        out[schema.target] = out[schema.target].astype("string")
    return out


def reference_profile(reference: pd.DataFrame, schema: DatasetSchema) -> DataProfile:
    """The profile a batch is compared with: each feature of `reference` (typed by the schema, e.g. the
    holdout read with schema.read_typed) and its target, classification targets as categories. Raises
    KeyError when a schema column is missing from `reference`."""
    frame = _columns(reference, schema)
    profiles = [profile_column(c.name, c.type, frame[c.name]) for c in schema.features]
    target_type = ColumnType.CATEGORICAL if schema.task is Task.CLASSIFICATION else ColumnType.NUMBER
    profiles.append(profile_column(schema.target, target_type, frame[schema.target]))
    empty = profile_column("prediction", ColumnType.CATEGORICAL, pd.Series([], dtype="string"))
    return DataProfile(task=schema.task.value, rows=len(frame), features=profiles, prediction=empty)


def check(
    batch: pd.DataFrame, reference: DataProfile, schema: DatasetSchema, monitor: MonitorConfig
) -> drift.DriftReport:
    """The drift report of a validated batch (`batch`: typed by the schema, as validate_batch returns it)
    against `reference` (reference_profile), with params.yaml's `monitor.drift` thresholds and `min_rows`.
    Raises KeyError when a schema column is missing from `batch`."""
    return drift.compare(_columns(batch, schema), reference, monitor.drift, predictions=None, min_rows=monitor.min_rows)


def summary(key: str, report: drift.DriftReport, reference: str) -> str:
    """One line naming what was flagged in batch `key`: the drifted features (with their PSI) and the data-
    quality violations, and the reference it was compared with."""
    psi = {f.name: f.psi for f in report.features}
    parts = []
    if report.drifted_features:
        parts.append("drifted features: " + ", ".join(f"{n} (PSI {psi[n]:.2f})" for n in report.drifted_features))
    parts += report.quality.violations
    return f"drift check of {key} ({report.rows} rows) against the {reference}: " + "; ".join(parts)


def flagged_entry(key: str, report: drift.DriftReport, monitor: MonitorConfig, reference: str) -> BatchDrift:
    """The sync result's record of a flagged batch."""
    return BatchDrift(
        key=key,
        status=report.status.value,
        drifted_features=report.drifted_features,
        violations=report.quality.violations,
        action=monitor.batch_check.value,
        reference=reference,
    )
