"""Stage `prepare`: select the configured columns, type them, de-duplicate, write the schema."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from flightdeck.stages import read_params

log = logging.getLogger("flightdeck.stages.prepare")


def run(root: Path | None = None) -> dict[str, object]:
    root = root or Path.cwd()
    params = read_params(root)
    data, prepare = params["data"], params.get("prepare") or {}
    target = data["target"]
    dataset = pd.read_csv(root / "data" / "dataset.csv")
    holdout = pd.read_csv(root / "data" / "holdout.csv")
    features = [c for c in holdout.columns if c != target] if data["features"] == "all" else data["features"]
    columns = [*features, target]
    train = dataset[columns].copy()
    before = len(train)
    if prepare.get("drop_duplicates", True):
        train = train.drop_duplicates(ignore_index=True)
    for frame in (train, holdout):
        frame[features] = frame[features].astype("float64")
        frame[target] = frame[target].astype("int64")
    out = root / "prepared"
    out.mkdir(exist_ok=True)
    train.to_csv(out / "train.csv", index=False)
    holdout[columns].to_csv(out / "holdout.csv", index=False)
    schema = {
        "features": features,
        "target": target,
        "classes": sorted(int(c) for c in holdout[target].unique()),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "dropped_duplicates": before - len(train),
    }
    (out / "schema.json").write_text(json.dumps(schema, indent=2))
    log.info(
        "prepare: %d training rows (%d duplicates dropped), %d holdout rows, %d features",
        len(train),
        before - len(train),
        len(holdout),
        len(features),
    )
    return schema


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run()
