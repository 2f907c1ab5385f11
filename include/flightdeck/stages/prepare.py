"""Stage `prepare`: type the dataset and the holdout by the schema, de-duplicate, write them as Parquet."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from flightdeck.data.schema import read_typed
from flightdeck.stages import dataset_schema, read_params

log = logging.getLogger("flightdeck.stages.prepare")


def run(root: Path | None = None) -> dict[str, object]:
    """Type data/dataset.csv and data/holdout.csv by the schema, drop duplicate training rows (unless
    `prepare.drop_duplicates: false`), write prepared/{train,holdout}.parquet and prepared/schema.json
    (the schema plus row counts), and return that summary. Raises SchemaError when a file breaks the schema."""
    root = root or Path.cwd()
    params = read_params(root)
    prepare = params.get("prepare") or {}
    schema = dataset_schema(params)
    train = read_typed(root / "data" / "dataset.csv", schema)
    holdout = read_typed(root / "data" / "holdout.csv", schema)
    before = len(train)
    if prepare.get("drop_duplicates", True):
        train = train.drop_duplicates(ignore_index=True)
    out = root / "prepared"
    out.mkdir(exist_ok=True)
    train.to_parquet(out / "train.parquet", index=False)
    holdout.to_parquet(out / "holdout.parquet", index=False)
    summary = {
        **schema.to_params(),
        "features": schema.feature_names,
        "classes": [str(c) for c in schema.classes] if schema.classes is not None else None,
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "dropped_duplicates": before - len(train),
    }
    (out / "schema.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "prepare: %d training rows (%d duplicates dropped), %d holdout rows, %d features, task %s",
        len(train),
        before - len(train),
        len(holdout),
        len(schema.features),
        schema.task.value,
    )
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run()
