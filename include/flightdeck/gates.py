"""The three validation gates as pure functions: each returns a verdict whose message names the numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is heavy; only the data gate needs it, at call time
    import pandas as pd


@dataclass
class GateResult:
    gate: str
    passed: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "passed" if self.passed else "failed"

    def as_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "message": self.message, "details": self.details}


def check_data(
    frame: pd.DataFrame, reference: pd.DataFrame, target: str, rules: dict[str, Any]
) -> GateResult:
    """Schema, nulls, ranges, row count and label balance of a dataset, judged against the reference holdout.

    rules: min_rows, max_null_fraction, min_class_share, range_tolerance, max_out_of_range_fraction.
    """
    import pandas as pd

    problems: list[str] = []
    facts: list[str] = []
    features = [c for c in reference.columns if c != target]
    expected = [*features, target]
    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in frame.columns if c not in expected]
    if missing or extra:
        problems.append(f"schema: missing {missing}, extra {extra}")
        return GateResult(
            "data", False, "data checks FAILED: " + "; ".join(problems), {"missing": missing, "extra": extra}
        )
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        problems.append(f"schema: non-numeric feature columns {non_numeric}")
    facts.append(f"schema ok ({len(features)} features + {target!r})" if not non_numeric else "schema bad")

    rows = len(frame)
    min_rows = int(rules.get("min_rows", 1))
    (facts if rows >= min_rows else problems).append(f"rows {rows} (min {min_rows})")

    null_frac = frame[expected].isna().mean()
    worst_null_col = str(null_frac.idxmax()) if rows else target
    worst_null = float(null_frac.max()) if rows else 0.0
    max_null = float(rules.get("max_null_fraction", 0.0))
    (facts if worst_null <= max_null else problems).append(
        f"max null fraction {worst_null:.4f} in {worst_null_col!r} (max {max_null})"
    )

    details: dict[str, Any] = {"rows": rows, "max_null_fraction": worst_null}
    numeric = [c for c in features if c not in non_numeric]
    if rows and numeric:
        tol = float(rules.get("range_tolerance", 0.5))
        lo, hi = reference[numeric].min(), reference[numeric].max()
        span = (hi - lo).replace(0, 1.0)
        low, high = lo - tol * span, hi + tol * span
        outside = (frame[numeric].lt(low) | frame[numeric].gt(high)).mean()
        worst_col = str(outside.idxmax())
        worst = float(outside.max())
        limit = float(rules.get("max_out_of_range_fraction", 0.0))
        (facts if worst <= limit else problems).append(
            f"max out-of-range fraction {worst:.4f} in {worst_col!r} (max {limit}, range = reference "
            f"+/- {tol:g} x span)"
        )
        details["max_out_of_range_fraction"] = worst

    if rows and target in frame:
        shares = frame[target].value_counts(normalize=True)
        ref_classes = set(reference[target].unique())
        absent = sorted(int(c) for c in ref_classes - set(shares.index))
        min_share = float(rules.get("min_class_share", 0.0))
        smallest = float(min(shares.get(c, 0.0) for c in ref_classes))
        ok = smallest >= min_share and not absent
        (facts if ok else problems).append(
            f"smallest class share {smallest:.3f} (min {min_share})"
            + (f", classes absent {absent}" if absent else "")
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
    """Every configured metric must reach its floor; a metric the run did not produce fails."""
    lines, failed = [], []
    for name, floor in sorted(thresholds.items()):
        value = metrics.get(name)
        if value is None or math.isnan(value):
            failed.append(name)
            lines.append(f"{name}=missing (min {floor})")
            continue
        ok = value >= float(floor)
        if not ok:
            failed.append(name)
        lines.append(f"{name}={value:.4f} {'>=' if ok else '<'} {float(floor):.4f}")
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


def compare_champion(
    metric: str,
    challenger: float,
    champion: float | None,
    *,
    min_delta: float,
    challenger_version: str,
    champion_version: str | None,
) -> GateResult:
    """Challenger must score >= champion + min_delta on the same holdout; no champion = first model."""
    details = {
        "metric": metric,
        "challenger": challenger,
        "champion": champion,
        "min_delta": min_delta,
        "challenger_version": challenger_version,
        "champion_version": champion_version,
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
    needed = champion + min_delta
    passed = challenger >= needed
    delta = challenger - champion
    word = "beats" if passed else "does NOT beat"
    return GateResult(
        "champion",
        passed,
        f"challenger v{challenger_version} {word} champion v{champion_version}: {metric} {challenger:.4f} vs "
        f"{champion:.4f} (delta {delta:+.4f}, needed >= {min_delta:+.4f}) on the same holdout",
        details,
    )
