"""Stage `train`: the user's entrypoint, or a cross-validated grid search over the configured estimator
inside the schema's preprocessing Pipeline; the best candidate is refit on every row."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import joblib
import pandas as pd

from flightdeck import modeling, settings
from flightdeck.data.schema import model_frame, target_values, training_frame
from flightdeck.stages import dataset_schema, read_params

log = logging.getLogger("flightdeck.stages.train")


def code_path(train_params: dict) -> Path | None:
    """Where the user's training code lives (`train.code_path`, relative to the project root)."""
    raw = train_params.get("code_path")
    return (settings.REPO_ROOT / raw).resolve() if raw else None


def run(root: Path | None = None) -> dict[str, object]:
    """Fit on prepared/train.parquet: the user's entrypoint, or a cross-validated search over the
    estimator's grid (modeling.search); write model/model.joblib and model/search.json (candidates with
    mean and std CV scores, best params) and return that summary. Raises ModelConfigError when the
    estimator or entrypoint cannot be imported or called."""
    root = root or Path.cwd()
    params = read_params(root)
    train_params = params["train"]
    schema = dataset_schema(params)
    frame = pd.read_parquet(root / "prepared" / "train.parquet")
    out = root / "model"
    out.mkdir(exist_ok=True)
    if train_params.get("entrypoint"):
        entry = train_params["entrypoint"]
        log.info("train: calling the user's entrypoint %s on %d rows", entry, len(frame))
        model = modeling.run_entrypoint(entry, training_frame(frame, schema), schema, params, code_path(train_params))
        summary: dict[str, object] = {
            "model": entry,
            "kind": "entrypoint",
            "candidates": [],
            "best_params": {},
            "best_cv_score": None,
            "train_rows": len(frame),
        }
    else:
        estimator = modeling.estimator_path(train_params, schema.task)
        model, results = modeling.search(
            schema,
            estimator,
            modeling.search_space(train_params),
            model_frame(frame, schema),
            target_values(frame, schema),
            cv=int(train_params["cv"]),
            scoring=train_params["scoring"],
            seed=int(train_params["seed"]),
        )
        best = next(r for r in results if r.get("best"))
        summary = {
            "model": estimator,
            "kind": "estimator",
            "candidates": results,
            "best_params": best["params"],
            "best_cv_score": best["mean_score"],
            "train_rows": len(frame),
        }
        for r in results:
            log.info(
                "train: %s %s cv %s=%.4f (+/- %.4f)%s",
                estimator.rsplit(".", 1)[-1],
                r["params"],
                r["scoring"],
                r["mean_score"],
                r["std_score"],
                "  <- best" if r.get("best") else "",
            )
    joblib.dump(model, out / "model.joblib")
    (out / "search.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run()
