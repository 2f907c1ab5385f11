"""Stage `evaluate`: the trained model's metrics on the fixed holdout (DVC metrics file), and the baseline the
version is watched against once live (monitoring.baseline: the training data's profile and the predictions'
distribution on the holdout, baseline/profile.json)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import joblib
import pandas as pd

from flightdeck import modeling
from flightdeck.data.schema import model_frame, target_values
from flightdeck.monitoring import baseline
from flightdeck.stages import dataset_schema, read_params
from flightdeck.stages.train import code_path

log = logging.getLogger("flightdeck.stages.evaluate")


def run(root: Path | None = None) -> dict[str, float]:
    """Score model/model.joblib on prepared/holdout.parquet with the task's metrics (modeling.metrics),
    write them and `holdout_rows` to metrics.json, write the baseline profile (prepared/train.parquet's
    features, the holdout's predictions) to baseline/profile.json, and return the metrics. `root`: the
    workspace (default cwd)."""
    root = root or Path.cwd()
    params = read_params(root)
    schema = dataset_schema(params)
    extra = code_path(params["train"])
    if extra is not None and str(extra) not in sys.path:  # the user's model class must be importable
        sys.path.insert(0, str(extra))
    model = joblib.load(root / "model" / "model.joblib")
    holdout = pd.read_parquet(root / "prepared" / "holdout.parquet")
    features = model_frame(holdout, schema)
    predicted = modeling.predict(model, features)  # once: the metrics and the baseline's prediction profile
    scores = modeling.metrics(model, features, target_values(holdout, schema), schema.task, predicted)
    scores["holdout_rows"] = float(len(holdout))
    (root / "metrics.json").write_text(json.dumps(scores, indent=2, sort_keys=True))
    train = pd.read_parquet(root / "prepared" / "train.parquet")
    profile = baseline.profile_frame(train, schema, predicted)
    (root / baseline.PROFILE_ARTIFACT).parent.mkdir(exist_ok=True)
    (root / baseline.PROFILE_ARTIFACT).write_text(json.dumps(profile.to_dict(), indent=1, sort_keys=True))
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
