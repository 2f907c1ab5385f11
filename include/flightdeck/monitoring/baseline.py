"""The baseline a trained model version is watched against: its training data's profile and its predictions'
distribution on the holdout, logged with the version's MLflow run as `baseline/profile.json`.

Per feature: its type, null share, and either numeric bins or category shares. Numeric bins are the training
data's deciles (edges at quantiles 0.1 ... 0.9, open at both ends), so every bin holds about a tenth of the
training rows; a window of live traffic binned on the same edges gives the shares that the Population
Stability Index compares (`psi`). Categories keep their training shares plus what an unseen value would be.
Predictions: class shares (classification) or deciles of the predicted value (regression), on the holdout.

Numeric columns (and regression predictions) also keep a reference sample: up to `REFERENCE_SAMPLE` of their
non-null values, drawn without replacement with a fixed seed, so a two-sample test (Kolmogorov-Smirnov, in
monitoring.drift) can compare a window with the training values and not only with their deciles. Profiles
written before schema_version 2 have no sample; drift.compare then tests the decile bins instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flightdeck.data.schema import ColumnType, DatasetSchema, Task

PROFILE_ARTIFACT = "baseline/profile.json"
SCHEMA_VERSION = 2  # 2: numeric profiles carry a reference `sample`
REFERENCE_SAMPLE = 1000  # values kept per numeric column for two-sample tests (about 20 KB of JSON each)
QUANTILES = tuple(i / 10 for i in range(1, 10))  # decile edges
PSI_EPSILON = 1e-4  # share floor in PSI, so an empty bin on either side stays finite


@dataclass(frozen=True)
class FeatureProfile:
    """One column's profile. Numeric: `edges` (inner bin edges, increasing) and `shares` (len(edges) + 1,
    summing to 1 over the non-null rows). Categorical/boolean: `categories` -> share of the non-null rows."""

    name: str
    type: str  # data.schema.ColumnType value
    rows: int
    null_share: float  # 0..1
    edges: list[float] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)
    categories: dict[str, float] = field(default_factory=dict)
    mean: float | None = None
    std: float | None = None
    sample: list[float] = field(default_factory=list)  # numeric: up to REFERENCE_SAMPLE values, sorted


@dataclass(frozen=True)
class DataProfile:
    """A dataset's profile (features in schema order) and the model's prediction profile on the holdout."""

    task: str  # data.schema.Task value
    rows: int
    features: list[FeatureProfile]
    prediction: FeatureProfile
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what `baseline/profile.json` holds)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataProfile:
        """The inverse of to_dict."""
        return cls(
            task=d["task"],
            rows=int(d["rows"]),
            features=[FeatureProfile(**f) for f in d["features"]],
            prediction=FeatureProfile(**d["prediction"]),
            schema_version=int(d.get("schema_version", SCHEMA_VERSION)),
        )

    def feature(self, name: str) -> FeatureProfile:
        """The profile of feature `name`. Raises KeyError for a column the profile does not have."""
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


def reference_sample(values: np.ndarray, size: int = REFERENCE_SAMPLE, seed: int = 0) -> list[float]:
    """Up to `size` of `values` (non-null floats), drawn without replacement with `seed`, sorted: the same
    rows every time for the same data, so a profile is reproducible. All of them when there are fewer."""
    array = np.asarray(values, dtype=float)
    if array.size > size:
        array = np.random.default_rng(seed).choice(array, size=size, replace=False)
    return [float(v) for v in np.sort(array)]


def _numeric(name: str, kind: str, values: pd.Series, sample_size: int, seed: int) -> FeatureProfile:
    rows = len(values)
    present = pd.to_numeric(values, errors="coerce").dropna().astype(float)
    null_share = 1 - len(present) / rows if rows else 0.0
    # deciles, deduplicated: a column with few distinct values gets fewer, wider bins
    edges = sorted(set(np.quantile(present, QUANTILES).tolist())) if len(present) else []
    return FeatureProfile(
        name=name,
        type=kind,
        rows=rows,
        null_share=round(null_share, 6),
        edges=[float(e) for e in edges],
        shares=bin_shares(present, edges),
        mean=float(present.mean()) if len(present) else None,
        std=float(present.std(ddof=0)) if len(present) else None,
        sample=reference_sample(present.to_numpy(), sample_size, seed),
    )


def _categorical(name: str, kind: str, values: pd.Series) -> FeatureProfile:
    rows = len(values)
    present = values.dropna().astype(str)
    counts = present.value_counts()
    return FeatureProfile(
        name=name,
        type=kind,
        rows=rows,
        null_share=round(1 - len(present) / rows, 6) if rows else 0.0,
        categories={str(k): round(int(v) / len(present), 6) for k, v in counts.items()} if len(present) else {},
    )


def bin_shares(values: Sequence[float] | pd.Series, edges: Sequence[float]) -> list[float]:
    """Shares of `values` (non-null numbers) in the bins the inner `edges` cut: (-inf, e0], (e0, e1], ...,
    (e_last, inf). len(edges) + 1 shares summing to 1; all zeros when there are no values."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return [0.0] * (len(edges) + 1)
    counts = np.bincount(np.searchsorted(np.asarray(edges, dtype=float), array, side="left"), minlength=len(edges) + 1)
    return [round(float(c) / array.size, 6) for c in counts]


def profile_column(
    name: str, kind: ColumnType, values: pd.Series, *, sample_size: int = REFERENCE_SAMPLE, seed: int = 0
) -> FeatureProfile:
    """One column's profile: deciles, mean/std and a reference sample for number/integer columns, category
    shares (of the values as strings) for categorical/boolean ones."""
    if kind.is_numeric:
        return _numeric(name, kind.value, values, sample_size, seed)
    return _categorical(name, kind.value, values)


def profile_frame(
    frame: pd.DataFrame,
    schema: DatasetSchema,
    predictions: Sequence[Any] | np.ndarray | None,
    *,
    sample_size: int = REFERENCE_SAMPLE,
    seed: int = 0,
) -> DataProfile:
    """The profile of the training rows `frame` (the schema's features; the target is not profiled) and of
    the model's `predictions` on the holdout (None: an empty prediction profile, 0 rows). Numeric columns keep
    a reference sample of up to `sample_size` values drawn with `seed`. Raises KeyError for a feature missing
    from `frame`."""
    features = [
        profile_column(col.name, col.type, frame[col.name], sample_size=sample_size, seed=seed)
        for col in schema.features
    ]
    predicted = pd.Series(np.asarray(predictions if predictions is not None else []).ravel())
    kind = ColumnType.CATEGORICAL if schema.task == Task.CLASSIFICATION else ColumnType.NUMBER
    prediction = profile_column("prediction", kind, predicted, sample_size=sample_size, seed=seed)
    return DataProfile(task=schema.task.value, rows=len(frame), features=features, prediction=prediction)


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = PSI_EPSILON) -> float:
    """Population Stability Index of `actual` shares against `expected` shares over the same bins:
    sum((a - e) * ln(a / e)), each share floored at `epsilon`. 0 = the same distribution; the usual reading
    is < 0.1 stable, 0.1-0.25 a moderate shift, > 0.25 a major one (Siddiqi, "Credit Risk Scorecards",
    Wiley 2006, ch. 8). Raises ValueError when the bin counts differ."""
    if len(expected) != len(actual):
        raise ValueError(f"PSI needs the same bins: {len(expected)} expected shares, {len(actual)} actual")
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(float(e), epsilon), max(float(a), epsilon)
        total += (a - e) * math.log(a / e)
    return total


def category_psi(expected: Mapping[str, float], actual: Mapping[str, float]) -> float:
    """PSI over the union of categories (a category on one side only counts with the other's share floored)."""
    keys = sorted(set(expected) | set(actual))
    return psi([expected.get(k, 0.0) for k in keys], [actual.get(k, 0.0) for k in keys])
