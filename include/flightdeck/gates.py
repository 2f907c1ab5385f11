"""The three validation gates as pure functions: each returns a verdict whose message names the numbers."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flightdeck.data.schema import DatasetSchema, Task
from flightdeck.errors import FlightdeckError
from flightdeck.metric_direction import LOWER_IS_BETTER, is_better

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class GateResult:
    gate: str
    passed: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """ "passed" or "failed", as tagged on the model version."""
        return "passed" if self.passed else "failed"


def check_data(
    frame: pd.DataFrame, reference: pd.DataFrame, schema: DatasetSchema, rules: dict[str, Any]
) -> GateResult:
    """Row count, nulls, numeric ranges and label balance of a typed dataset, judged against the holdout.

    `frame` and `reference` are read with `schema.read_typed` (each batch already passed the per-batch
    schema checks, so non-nullable columns hold no nulls). rules: min_rows, max_null_fraction (the
    share of nulls allowed in any nullable column), min_class_share (classification only),
    range_tolerance and max_out_of_range_fraction (numeric features against the holdout's range).
    """
    problems: list[str] = []
    facts: list[str] = []
    target = schema.target
    features = schema.feature_names
    missing = [c for c in schema.names if c not in frame.columns]
    if missing:
        return GateResult("data", False, f"data checks FAILED: schema: missing {missing}", {"missing": missing})
    facts.append(f"schema ok ({len(features)} features + {target!r}, {schema.task.value})")

    rows = len(frame)
    min_rows = int(rules.get("min_rows", 1))
    (facts if rows >= min_rows else problems).append(f"rows {rows} (min {min_rows})")

    nullable = [c.name for c in schema.columns if c.nullable]
    null_frac = frame[nullable].isna().mean() if nullable else None
    worst_null_col = str(null_frac.idxmax()) if rows and null_frac is not None else "-"
    worst_null = float(null_frac.max()) if rows and null_frac is not None else 0.0
    max_null = float(rules.get("max_null_fraction", 0.0))
    (facts if worst_null <= max_null else problems).append(
        f"max null fraction {worst_null:.4f} in {worst_null_col!r} (max {max_null})"
    )

    details: dict[str, Any] = {"rows": rows, "max_null_fraction": worst_null}
    numeric = [c.name for c in schema.features if c.type.is_numeric]
    if rows and numeric:
        tol = float(rules.get("range_tolerance", 0.5))
        ref = reference[numeric].astype("float64")
        cur = frame[numeric].astype("float64")
        lo, hi = ref.min(), ref.max()
        span = (hi - lo).replace(0, 1.0)
        low, high = lo - tol * span, hi + tol * span
        outside = (cur.lt(low) | cur.gt(high)).mean()
        worst_col = str(outside.idxmax())
        worst = float(outside.max())
        limit = float(rules.get("max_out_of_range_fraction", 0.0))
        (facts if worst <= limit else problems).append(
            f"max out-of-range fraction {worst:.4f} in {worst_col!r} (max {limit}, range = reference "
            f"+/- {tol:g} x span)"
        )
        details["max_out_of_range_fraction"] = worst

    if rows and schema.task is Task.CLASSIFICATION:
        shares = frame[target].astype(str).value_counts(normalize=True)
        ref_classes = {str(c) for c in reference[target].unique()}
        absent = sorted(ref_classes - set(shares.index))
        min_share = float(rules.get("min_class_share", 0.0))
        smallest = float(min(shares.get(c, 0.0) for c in ref_classes))
        ok = smallest >= min_share and not absent
        (facts if ok else problems).append(
            f"smallest class share {smallest:.3f} (min {min_share})" + (f", classes absent {absent}" if absent else "")
        )
        details["class_shares"] = {str(k): round(float(v), 4) for k, v in shares.sort_index().items()}

    if problems:
        return GateResult(
            "data",
            False,
            "data checks FAILED: " + "; ".join(problems) + " | ok: " + "; ".join(facts),
            details,
        )
    return GateResult("data", True, "data checks passed: " + "; ".join(facts), details)


def check_thresholds(metrics: dict[str, float], thresholds: dict[str, float]) -> GateResult:
    """Every configured metric must reach its bound: a floor for scores (accuracy, f1_macro, roc_auc,
    r2), a ceiling for errors (rmse, mae, log_loss); a metric the run did not produce fails."""
    lines, failed = [], []
    for name, floor in sorted(thresholds.items()):
        value = metrics.get(name)
        if value is None or math.isnan(value):
            failed.append(name)
            lines.append(f"{name}=missing ({'max' if name in LOWER_IS_BETTER else 'min'} {floor})")
            continue
        if name in LOWER_IS_BETTER:
            ok = value <= float(floor)
            lines.append(f"{name}={value:.4f} {'<=' if ok else '>'} {float(floor):.4f} (max)")
        else:
            ok = value >= float(floor)
            lines.append(f"{name}={value:.4f} {'>=' if ok else '<'} {float(floor):.4f}")
        if not ok:
            failed.append(name)
    passed = not failed and bool(thresholds)
    if not thresholds:
        lines.append("no thresholds configured")
    verdict = "threshold gate passed" if passed else f"threshold gate FAILED on {failed or ['config']}"
    return GateResult(
        "thresholds",
        passed,
        f"{verdict}: " + ", ".join(lines),
        {"metrics": {k: metrics.get(k) for k in thresholds}, "thresholds": thresholds, "failed": failed},
    )


class ChampionUnknown(FlightdeckError, RuntimeError):
    """A model is live but cannot be compared against (its version is gone from the registry): the
    champion gate refuses rather than promote on thresholds alone."""


@dataclass(frozen=True)
class ChampionRef:
    """The version a challenger must beat, and where that answer came from (None: the first model)."""

    version: str | None
    source: str = ""  # "alias champion", "live on local (deploy run ...)", "alias previous", "" (first model)


def champion_reference(
    model_name: str,
    challenger_version: str,
    *,
    champion_alias: str | None,
    live: Mapping[str, tuple[str, str]],
    previous_alias: str | None,
    registered: Callable[[str], bool],
) -> ChampionRef:
    """What the challenger is compared against: the `champion` alias; when MLflow has dropped it (its
    version was deleted), what the deployment records say is live, else the `previous` alias; only when
    none of these exists is it the first model.

    live: target -> (version, deployment run) of this model from the targets' current deployment records.
    registered(version): whether the registry still holds that version.
    Raises ChampionUnknown when a live version is gone from the registry (it cannot be scored).
    """
    if champion_alias is not None:
        return ChampionRef(champion_alias, "alias champion")
    serving = {t: (v, run) for t, (v, run) in sorted(live.items()) if v and v not in ("0", challenger_version)}
    gone = {t: (v, run) for t, (v, run) in serving.items() if not registered(v)}
    if gone:
        where = "; ".join(f"v{v} is live on {t} (deploy run {run})" for t, (v, run) in gone.items())
        raise ChampionUnknown(
            f"{model_name} has no `champion` alias and {where}, but that version is gone from the registry: "
            f"challenger v{challenger_version} cannot be compared with what serves, so it is not promoted on "
            f"thresholds alone. Restore the live version in the registry, or set the alias by hand "
            f"(MlflowClient().set_registered_model_alias({model_name!r}, 'champion', '<version>')) and clear "
            "champion_gate"
        )
    if serving:
        target, (version, run) = max(serving.items(), key=lambda kv: int(kv[1][0]) if kv[1][0].isdigit() else -1)
        return ChampionRef(version, f"live on {target} (deploy run {run}); the champion alias is gone")
    if previous_alias is not None and previous_alias != challenger_version and registered(previous_alias):
        return ChampionRef(previous_alias, "alias previous; the champion alias is gone")
    return ChampionRef(None, "")


def compare_champion(
    metric: str,
    challenger: float,
    champion: float | None,
    *,
    min_delta: float,
    challenger_version: str,
    champion_version: str | None,
    champion_source: str = "",
) -> GateResult:
    """Challenger must beat the champion by min_delta on the same holdout, in the metric's direction
    (>= champion + min_delta for scores, <= champion - min_delta for errors); no champion = first model.
    `champion_source` says where the champion came from when it is not the `champion` alias."""
    details = {
        "metric": metric,
        "challenger": challenger,
        "champion": champion,
        "min_delta": min_delta,
        "challenger_version": challenger_version,
        "champion_version": champion_version,
        "champion_source": champion_source,
    }
    if champion is None or champion_version is None:
        return GateResult(
            "champion",
            True,
            f"no champion yet: v{challenger_version} is the first model, gated on thresholds alone "
            f"({metric}={challenger:.4f})",
            details,
        )
    if champion_version == challenger_version:
        return GateResult("champion", True, f"v{challenger_version} already is the champion", details)
    lower = metric in LOWER_IS_BETTER
    passed = is_better(metric, challenger, champion, min_delta)
    delta = challenger - champion
    word = "beats" if passed else "does NOT beat"
    needed = f"<= {-min_delta:+.4f}, lower is better" if lower else f">= {min_delta:+.4f}"
    source = f" ({champion_source})" if champion_source and champion_source != "alias champion" else ""
    return GateResult(
        "champion",
        passed,
        f"challenger v{challenger_version} {word} champion v{champion_version}{source}: {metric} "
        f"{challenger:.4f} vs {champion:.4f} (delta {delta:+.4f}, needed {needed}) on the same holdout",
        details,
    )
