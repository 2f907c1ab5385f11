"""Drift of a window of rows (live captures, or a landed training batch) against a baseline profile.

`compare(window, baseline, thresholds)` returns a DriftReport with:

- data quality: missing and unexpected columns, values not of their feature's type, null shares that rose by
  more than `max_null_share_increase` over the baseline's, and categories the baseline never saw (with their
  share of the window and a few examples);
- per feature (and for the model's predictions): the Population Stability Index on the baseline's bins
  (deciles for numbers, categories otherwise; baseline.psi, Siddiqi 2006) and a two-sample test suited to
  the type: Kolmogorov-Smirnov (scipy.stats.ks_2samp) of the window's values against the baseline's reference
  sample for numbers; Pearson's chi-squared test of homogeneity (scipy.stats.chi2_contingency) of the
  baseline's and the window's category counts otherwise. A profile without a reference sample (schema_version
  1) is tested with the same chi-squared test on its decile bins: the baseline's shares times its rows are the
  counts of the reference side.

The rule, per feature (the predictions use `prediction_psi_alert` instead of `psi_alert`):

    drift  PSI >= psi_alert and the binned chi-squared test gives p < p_value
           or PSI >= psi_warn and the feature's two-sample test gives p < p_value
    warn   not drift, and PSI >= psi_warn
    ok     otherwise

Why both a size (PSI) and a test (p-value): a p-value alone flags a negligible shift in a huge window (against
a large baseline, any difference in category shares is significant), so a significant test also needs
PSI >= psi_warn, a shift that matters. (KS's power is bounded by the reference sample, REFERENCE_SAMPLE values:
at p_value 0.001 it needs the distribution functions to differ by about 1.95 / sqrt(1000) = 0.06.)
PSI alone is noisy in a small window: with n window rows and m baseline rows over k bins, the PSI of two
samples of one distribution is about (1/n + 1/m) chi2(k - 1) (Yurdakul, "Statistical properties of the
population stability index", Western Michigan University, 2018), so 30 rows over 10 bins average 0.3 by
chance alone, above the usual psi_alert of 0.25. The binned chi-squared test measures that noise on the same
bins, so the PSI leg only fires on a shift the window's size can show. From about 130 window rows (m >= 1000,
10 bins) a PSI >= 0.25 is about always significant at p = 0.001, and the rule reads "PSI >= psi_alert, or
significant and PSI >= psi_warn".
Each feature is tested at p_value, without correcting for the number of features: with 30 features and
p_value 0.001, about 3 % of windows of an unchanged population show one feature significant (and it still
needs PSI >= psi_warn to be drift).

Overall status: `insufficient_data` below `min_rows` window rows (nothing is judged), else `drift` when a
feature or the predictions drifted, `warn` when one warned or data quality has a violation, `ok` otherwise.
`DriftReport.flagged` (drift or a data-quality violation) is what the batch check and the monitor act on.

Statistics library: scipy.stats (scipy 1.17.1 is in requirements.txt already, as scikit-learn's dependency).
Evidently and whylogs are not in requirements.txt, and neither would come alone: Evidently's setup.py lists
plotly, statsmodels, nltk, fastapi, uvicorn, typer and a pinned pydantic among its install requirements (its UI
and dashboards), whylogs' pyproject its sketching library (whylogs-sketching), protobuf and whylabs-client. Each
would have to be resolved against the Airflow/MLflow lock for what is here two tests and a PSI. They also work
from their own inputs: Evidently compares a reference DataFrame with the current one, whylogs compares its own
sketch profiles; the reference here is the baseline profile MLflow already holds for each version (bins,
shares, a bounded sample), so the tests run on it directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from flightdeck.data.schema import FALSE_WORDS, MAX_EXAMPLES, TRUE_WORDS, ColumnType
from flightdeck.monitoring.baseline import DataProfile, FeatureProfile, bin_shares, category_psi, psi
from flightdeck.monitoring.config import DriftThresholds

PREDICTION = "prediction"  # the window's column of model outputs
MAX_CATEGORIES_SHOWN = 30  # category shares kept per feature in a report; the rest are summed as OTHER
OTHER = "(other)"


class Status(StrEnum):
    """A feature's, the predictions' or a whole window's verdict (see the module docstring for the rule)."""

    OK = "ok"
    WARN = "warn"
    DRIFT = "drift"
    INSUFFICIENT_DATA = "insufficient_data"


class StatTest(StrEnum):
    """The two-sample test a feature was judged with."""

    KS = "ks"  # Kolmogorov-Smirnov, window values vs the baseline's reference sample
    CHI2_CATEGORIES = "chi2_categories"  # chi-squared homogeneity of category counts
    CHI2_BINS = "chi2_bins"  # chi-squared homogeneity of decile-bin counts (profiles without a sample)
    NONE = "none"  # nothing to test (no non-null values on one side)


@dataclass(frozen=True)
class TypeViolation:
    """`rows` window values of `column` that are not of its type; up to MAX_EXAMPLES of them, as repr text."""

    column: str
    type: str  # data.schema.ColumnType value
    rows: int
    examples: list[str]


@dataclass(frozen=True)
class NullIncrease:
    """A feature whose null share (0..1) rose above the baseline's plus `max_null_share_increase`."""

    column: str
    baseline: float
    window: float


@dataclass(frozen=True)
class UnseenCategories:
    """Values of a categorical/boolean `column` the baseline never saw: `rows` of them, `share` of the
    window's non-null values (0..1), up to MAX_EXAMPLES distinct examples, the most frequent first."""

    column: str
    rows: int
    share: float
    examples: list[str]


@dataclass(frozen=True)
class DataQuality:
    """What is wrong with the window's data, independently of its distribution."""

    missing_columns: list[str] = field(default_factory=list)  # baseline features absent from the window
    unexpected_columns: list[str] = field(default_factory=list)  # window columns the baseline does not have
    type_violations: list[TypeViolation] = field(default_factory=list)
    null_increases: list[NullIncrease] = field(default_factory=list)
    unseen_categories: list[UnseenCategories] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        """One sentence per violation: missing columns, type violations, null increases. Unexpected columns
        and unseen categories are reported but are not violations (unseen ones count in PSI and the test)."""
        out = [f"missing columns: {self.missing_columns}"] if self.missing_columns else []
        out += [
            f"column {v.column!r}: {v.rows} value(s) are not {v.type}, e.g. {', '.join(v.examples)}"
            for v in self.type_violations
        ]
        out += [
            f"column {n.column!r}: null share {n.window:.1%} (baseline {n.baseline:.1%})" for n in self.null_increases
        ]
        return out


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's (or the predictions') comparison.

    `bins` label the baseline's bins (numbers: "<= 1.5", "(1.5, 2]", "> 7") or its categories (plus unseen
    ones, the largest MAX_CATEGORIES_SHOWN, the rest as OTHER); `baseline_shares` and `window_shares` are the
    shares (0..1) of non-null values in each. `psi` is None, and `test` NONE, when either side has no non-null
    value. `bins_p_value` is the binned chi-squared test's p-value the PSI leg of the rule uses.
    """

    name: str
    type: str  # data.schema.ColumnType value
    status: Status
    rows: int  # non-null, well-typed window values compared
    null_share: float
    baseline_null_share: float
    psi: float | None
    test: StatTest
    statistic: float | None  # KS D (0..1) or chi-squared
    p_value: float | None
    bins_p_value: float | None
    bins: list[str] = field(default_factory=list)
    baseline_shares: list[float] = field(default_factory=list)
    window_shares: list[float] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureDrift:
        """The inverse of dataclasses.asdict."""
        return cls(**{**d, "status": Status(d["status"]), "test": StatTest(d["test"])})


@dataclass(frozen=True)
class DriftReport:
    """A window compared with a baseline. `features` follow the baseline's order (missing ones left out);
    `prediction` is None when the window's predictions were not compared."""

    status: Status
    rows: int
    min_rows: int
    thresholds: DriftThresholds
    quality: DataQuality = field(default_factory=DataQuality)
    features: list[FeatureDrift] = field(default_factory=list)
    prediction: FeatureDrift | None = None

    @property
    def drifted_features(self) -> list[str]:
        """Names of the features (not the predictions) whose status is drift, in the baseline's order."""
        return [f.name for f in self.features if f.status is Status.DRIFT]

    @property
    def warned_features(self) -> list[str]:
        """Names of the features whose status is warn."""
        return [f.name for f in self.features if f.status is Status.WARN]

    @property
    def prediction_drifted(self) -> bool:
        """True when the predictions were compared and drifted."""
        return self.prediction is not None and self.prediction.status is Status.DRIFT

    @property
    def flagged(self) -> bool:
        """Drift (a feature or the predictions) or a data-quality violation: what callers act on."""
        return self.status is Status.DRIFT or bool(self.quality.violations)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the fields plus `drifted_features`, `prediction_drifted`, `flagged` and the
        quality `violations` sentences (derived; from_dict ignores them)."""
        d = asdict(self)
        d["drifted_features"] = self.drifted_features
        d["prediction_drifted"] = self.prediction_drifted
        d["flagged"] = self.flagged
        d["quality"]["violations"] = self.quality.violations
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftReport:
        """The inverse of to_dict. Raises KeyError/TypeError/ValueError for a mapping to_dict did not write."""
        q = d["quality"]
        return cls(
            status=Status(d["status"]),
            rows=int(d["rows"]),
            min_rows=int(d["min_rows"]),
            thresholds=DriftThresholds(**d["thresholds"]),
            quality=DataQuality(
                missing_columns=list(q["missing_columns"]),
                unexpected_columns=list(q["unexpected_columns"]),
                type_violations=[TypeViolation(**v) for v in q["type_violations"]],
                null_increases=[NullIncrease(**n) for n in q["null_increases"]],
                unseen_categories=[UnseenCategories(**u) for u in q["unseen_categories"]],
            ),
            features=[FeatureDrift.from_dict(f) for f in d["features"]],
            prediction=FeatureDrift.from_dict(d["prediction"]) if d.get("prediction") else None,
        )


def judge(
    psi_value: float | None,
    p_value: float | None,
    bins_p_value: float | None,
    thresholds: DriftThresholds,
    *,
    psi_alert: float | None = None,
) -> Status:
    """A feature's status from its PSI, its two-sample test's p-value and its binned chi-squared p-value
    (the rule in the module docstring). `psi_alert` overrides thresholds.psi_alert (the predictions'
    prediction_psi_alert). Nothing to compare (psi None) is ok."""
    if psi_value is None:
        return Status.OK
    alert = thresholds.psi_alert if psi_alert is None else psi_alert
    significant = p_value is not None and p_value < thresholds.p_value
    bins_significant = bins_p_value is not None and bins_p_value < thresholds.p_value
    if (psi_value >= alert and bins_significant) or (psi_value >= thresholds.psi_warn and significant):
        return Status.DRIFT
    if psi_value >= thresholds.psi_warn:
        return Status.WARN
    return Status.OK


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _chi2(baseline_counts: Sequence[float], window_counts: Sequence[float]) -> tuple[float | None, float | None]:
    """Pearson's chi-squared test of homogeneity of two count vectors over the same bins (bins empty on both
    sides dropped): (statistic, p-value); (0, 1) when fewer than two bins hold anything."""
    table = np.array([baseline_counts, window_counts], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    return _finite(result.statistic), _finite(result.pvalue)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _bin_labels(edges: Sequence[float]) -> list[str]:
    if not edges:
        return ["all"]
    labels = [f"<= {_fmt(edges[0])}"]
    labels += [f"({_fmt(a)}, {_fmt(b)}]" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return [*labels, f"> {_fmt(edges[-1])}"]


def _numeric_values(raw: pd.Series, kind: ColumnType) -> tuple[pd.Series, pd.Series]:
    """(float values of the well-typed non-null cells, mask of present cells not of the type)."""
    present = raw.notna()
    if pd.api.types.is_bool_dtype(raw):
        return pd.Series(dtype=float), present
    converted = pd.to_numeric(raw, errors="coerce")
    bad = present & converted.isna()
    if kind is ColumnType.INTEGER:
        bad |= present & converted.notna() & (converted.fillna(0) % 1 != 0)
    return converted[present & ~bad].astype(float), bad


def _category_values(raw: pd.Series, kind: ColumnType, known: Mapping[str, float]) -> tuple[pd.Series, pd.Series]:
    """(the well-typed non-null cells as the baseline's category strings, mask of present cells not of the
    type). Booleans: True/False, or their words (yes/no, 1/0, ...); categories: strings. A number where the
    baseline's keys are its integer text (classes 0/1 logged as "0"/"1") is matched to that key."""
    present = raw.notna()
    values = raw[present]
    if kind is ColumnType.BOOLEAN:

        def as_bool(v: Any) -> str | None:
            if isinstance(v, bool | np.bool_):
                return str(bool(v))
            word = str(v).strip().lower()
            return "True" if word in TRUE_WORDS else "False" if word in FALSE_WORDS else None

        converted = values.map(as_bool)
    else:

        def as_key(v: Any) -> str | None:
            if isinstance(v, str):
                return v
            if isinstance(v, bool | np.bool_):
                return None
            if isinstance(v, int | float | np.integer | np.floating):
                text = str(v.item() if isinstance(v, np.generic) else v)
                if text in known:
                    return text
                if float(v).is_integer() and str(int(v)) in known:
                    return str(int(v))
            return None

        converted = values.map(as_key)
    bad = pd.Series(False, index=raw.index)
    bad[converted.index[converted.isna()]] = True
    return converted.dropna().astype(str), bad


def _examples(raw: pd.Series, mask: pd.Series) -> list[str]:
    return [repr(v.item() if isinstance(v, np.generic) else v) for v in raw[mask].head(MAX_EXAMPLES)]


def _compare_numeric(
    name: str, base: FeatureProfile, values: pd.Series
) -> tuple[float | None, StatTest, float | None, float | None, float | None, list[str], list[float], list[float]]:
    expected = list(base.shares)
    actual = bin_shares(values.to_numpy(), base.edges)
    labels = _bin_labels(base.edges)
    base_rows = base.rows * (1 - base.null_share)
    if values.empty or base_rows <= 0 or not expected:
        return None, StatTest.NONE, None, None, None, labels, expected, actual
    psi_value = psi(expected, actual)
    counts = np.bincount(
        np.searchsorted(np.asarray(base.edges, dtype=float), values.to_numpy(), side="left"), minlength=len(expected)
    )
    _, bins_p = _chi2([s * base_rows for s in expected], counts.tolist())
    if base.sample:
        result = stats.ks_2samp(values.to_numpy(), np.asarray(base.sample, dtype=float))
        return (
            psi_value,
            StatTest.KS,
            _finite(result.statistic),
            _finite(result.pvalue),
            bins_p,
            labels,
            expected,
            actual,
        )
    statistic, p = _chi2([s * base_rows for s in expected], counts.tolist())
    return psi_value, StatTest.CHI2_BINS, statistic, p, bins_p, labels, expected, actual


def _shown(expected: Mapping[str, float], actual: Mapping[str, float]) -> tuple[list[str], list[float], list[float]]:
    keys = sorted(set(expected) | set(actual), key=lambda k: (-max(expected.get(k, 0.0), actual.get(k, 0.0)), k))
    shown, rest = keys[:MAX_CATEGORIES_SHOWN], keys[MAX_CATEGORIES_SHOWN:]
    base = [round(expected.get(k, 0.0), 6) for k in shown]
    window = [round(actual.get(k, 0.0), 6) for k in shown]
    if rest:
        shown.append(OTHER)
        base.append(round(sum(expected.get(k, 0.0) for k in rest), 6))
        window.append(round(sum(actual.get(k, 0.0) for k in rest), 6))
    return shown, base, window


def _feature(
    name: str,
    base: FeatureProfile,
    raw: pd.Series,
    thresholds: DriftThresholds,
    quality: DataQuality,
    *,
    psi_alert: float | None = None,
) -> FeatureDrift:
    kind = ColumnType(base.type)
    rows = len(raw)
    null_share = float(raw.isna().mean()) if rows else 0.0
    if null_share > base.null_share + thresholds.max_null_share_increase:
        quality.null_increases.append(NullIncrease(name, base.null_share, round(null_share, 6)))
    if kind.is_numeric:
        values, bad = _numeric_values(raw, kind)
    else:
        values, bad = _category_values(raw, kind, base.categories)
    if bad.any():
        quality.type_violations.append(TypeViolation(name, kind.value, int(bad.sum()), _examples(raw, bad)))
    if kind.is_numeric:
        psi_value, test, statistic, p, bins_p, labels, expected, actual = _compare_numeric(name, base, values)
    else:
        counts = values.value_counts()
        total = int(counts.sum())
        shares = {str(k): int(v) / total for k, v in counts.items()} if total else {}
        unseen = counts[[k not in base.categories for k in counts.index]]
        if len(unseen):
            quality.unseen_categories.append(
                UnseenCategories(
                    name, int(unseen.sum()), round(int(unseen.sum()) / total, 6), list(unseen.index[:MAX_EXAMPLES])
                )
            )
        labels, expected, actual = _shown(base.categories, shares)
        base_rows = base.rows * (1 - base.null_share)
        if not total or base_rows <= 0 or not base.categories:
            psi_value, test, statistic, p, bins_p = None, StatTest.NONE, None, None, None
        else:
            keys = sorted(set(base.categories) | set(shares))
            psi_value = category_psi(base.categories, shares)
            statistic, p = _chi2(
                [base.categories.get(k, 0.0) * base_rows for k in keys], [shares.get(k, 0.0) * total for k in keys]
            )
            test, bins_p = StatTest.CHI2_CATEGORIES, p
    status = judge(psi_value, p, bins_p, thresholds, psi_alert=psi_alert)
    return FeatureDrift(
        name=name,
        type=kind.value,
        status=status,
        rows=len(values),
        null_share=round(null_share, 6),
        baseline_null_share=base.null_share,
        psi=None if psi_value is None else round(psi_value, 6),
        test=test,
        statistic=statistic,
        p_value=p,
        bins_p_value=bins_p,
        bins=labels,
        baseline_shares=[round(float(s), 6) for s in expected],
        window_shares=[round(float(s), 6) for s in actual],
    )


def compare(
    window: pd.DataFrame,
    baseline: DataProfile,
    thresholds: DriftThresholds,
    *,
    predictions: str | None = PREDICTION,
    min_rows: int = 30,
) -> DriftReport:
    """Compare `window` (one row per observation: the baseline's feature columns, plus the model's outputs in
    column `predictions` unless it is None) with `baseline`. Values are compared as the baseline's types:
    numbers/integers as floats, booleans and categories as the baseline's category strings; values not of the
    type are counted as type violations and left out. Below `min_rows` window rows nothing is judged (status
    insufficient_data, no features). A `predictions` column absent from the window, or a baseline with an
    empty prediction profile, leaves `prediction` None.

    Raises ValueError when `min_rows` is negative.
    """
    if min_rows < 0:
        raise ValueError(f"min_rows must be >= 0, got {min_rows}")
    rows = len(window)
    if rows < min_rows:
        return DriftReport(status=Status.INSUFFICIENT_DATA, rows=rows, min_rows=min_rows, thresholds=thresholds)
    columns = [str(c) for c in window.columns]
    names = [f.name for f in baseline.features]
    quality = DataQuality(
        missing_columns=[n for n in names if n not in columns],
        unexpected_columns=[c for c in columns if c not in names and c != predictions],
    )
    frame = window.reset_index(drop=True)
    frame.columns = columns
    features = [
        _feature(base.name, base, frame[base.name], thresholds, quality)
        for base in baseline.features
        if base.name in columns
    ]
    prediction = None
    if predictions is not None and predictions in columns and baseline.prediction.rows > 0:
        prediction = _feature(
            PREDICTION,
            baseline.prediction,
            frame[predictions],
            thresholds,
            quality,
            psi_alert=thresholds.prediction_psi_alert,
        )
    judged = [*features, *([prediction] if prediction else [])]
    if any(f.status is Status.DRIFT for f in judged):
        status = Status.DRIFT
    elif any(f.status is Status.WARN for f in judged) or quality.violations:
        status = Status.WARN
    else:
        status = Status.OK
    return DriftReport(
        status=status,
        rows=rows,
        min_rows=min_rows,
        thresholds=thresholds,
        quality=quality,
        features=features,
        prediction=prediction,
    )
