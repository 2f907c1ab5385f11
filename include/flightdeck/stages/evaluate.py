"""Stage `evaluate`: the trained model's metrics on the fixed holdout (DVC metrics file)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import joblib
import pandas as pd

from flightdeck import modeling
from flightdeck.stages import read_params, read_schema

log = logging.getLogger("flightdeck.stages.evaluate")


def run(root: Path | None = None) -> dict[str, float]:
    root = root or Path.cwd()
    params, schema = read_params(root), read_schema(root)
    model = joblib.load(root / "model" / "model.joblib")
    holdout = pd.read_csv(root / "prepared" / "holdout.csv")
    scores = modeling.metrics(model, holdout[schema["features"]], holdout[schema["target"]])
    scores["holdout_rows"] = float(len(holdout))
    (root / "metrics.json").write_text(json.dumps(scores, indent=2, sort_keys=True))
    primary = params["evaluate"]["primary_metric"]
    log.info(
        "evaluate: holdout (%d rows) %s",
        len(holdout),
        ", ".join(f"{k}={v:.4f}" for k, v in scores.items() if k != "holdout_rows"),
    )
    log.info("evaluate: primary metric %s=%.4f", primary, scores[primary])
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run()
