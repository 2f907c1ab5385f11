"""Stage `train`: a small cross-validated grid search over the configured family; the best is refit."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import joblib
import pandas as pd

from flightdeck import modeling
from flightdeck.stages import read_params, read_schema

log = logging.getLogger("flightdeck.stages.train")


def run(root: Path | None = None) -> dict[str, object]:
    root = root or Path.cwd()
    params, schema = read_params(root), read_schema(root)
    train_params = params["train"]
    family = train_params["family"]
    space = train_params["search"][family]
    frame = pd.read_csv(root / "prepared" / "train.csv")
    X, y = frame[schema["features"]], frame[schema["target"]]
    model, results = modeling.search(
        family,
        space,
        X,
        y,
        cv=int(train_params["cv"]),
        scoring=train_params["scoring"],
        seed=int(train_params["seed"]),
    )
    out = root / "model"
    out.mkdir(exist_ok=True)
    joblib.dump(model, out / "model.joblib")
    best = next(r for r in results if r.get("best"))
    summary = {
        "family": family,
        "candidates": results,
        "best_params": best["params"],
        "best_cv_score": best["mean_score"],
        "train_rows": len(frame),
    }
    (out / "search.json").write_text(json.dumps(summary, indent=2))
    for r in results:
        log.info(
            "train: %s %s cv %s=%.4f (+/- %.4f)%s",
            family,
            r["params"],
            r["scoring"],
            r["mean_score"],
            r["std_score"],
            "  <- best" if r.get("best") else "",
        )
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run()
