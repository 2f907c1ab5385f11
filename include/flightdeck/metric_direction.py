"""Which way each metric points: errors (rmse, mae, log_loss) are better lower, scores higher."""

from __future__ import annotations

LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})


def is_better(metric: str, challenger: float, champion: float, min_delta: float) -> bool:
    """challenger beats champion by at least min_delta (>= 0), in the metric's direction."""
    if metric in LOWER_IS_BETTER:
        return challenger <= champion - min_delta
    return challenger >= champion + min_delta
