"""A user's own export, generated: a customer table with string categories, missing values, integers,
booleans and string labels (`churned`: "yes"/"no"), the kind of CSV a new Flightdeck user brings."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

PLANS = ("basic", "plus", "pro")
REGIONS = ("north", "south", "east", "west")
TARGET = "churned"
# The pandas dtypes a customers() table has once read with its schema (`schema.read_typed`).
TYPED_DTYPES = {
    "tenure_months": "Int64",
    "monthly_charges": "float64",
    "plan": "string",
    "region": "string",
    "support_calls": "Int64",
    "autopay": "boolean",
    "churned": "string",
}


def customers(rows: int, seed: int = 0, *, plans: tuple[str, ...] = PLANS) -> pd.DataFrame:
    """`rows` customers; churn depends on tenure, charges, plan, support calls and autopay, so a model
    can learn it (accuracy well above the majority share)."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, rows)
    plan = rng.choice(plans, rows)
    charges = np.round(20 + 30 * (plan == "plus") + 60 * (plan == "pro") + rng.normal(0, 8, rows), 2)
    calls = rng.poisson(1.5, rows)
    autopay = rng.random(rows) < 0.55
    region = rng.choice(REGIONS, rows).astype(object)
    logit = 1.2 - 0.06 * tenure + 0.02 * (charges - 50) + 0.6 * calls - 1.0 * autopay
    churned = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    frame = pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": charges,
            "plan": plan,
            "region": region,
            "support_calls": calls,
            "autopay": autopay,
            TARGET: churned,
        }
    )
    # Missing values where exports have them: a region nobody filled in, charges not yet billed.
    frame.loc[rng.random(rows) < 0.1, "region"] = None
    frame["monthly_charges"] = frame["monthly_charges"].astype("float64")
    frame.loc[rng.random(rows) < 0.05, "monthly_charges"] = np.nan
    return frame


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """The frame as a user's CSV export (header, no index)."""
    return frame.to_csv(index=False).encode()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """The frame as a Parquet file (pyarrow, no index)."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()
