"""Validated request columns -> a pandas DataFrame, for the paths that need one (pandas imported lazily).

Two conventions, one per consumer:
- `sklearn_frame`: what the training side fits its pipelines on (`schema.model_frame`): numbers and
  booleans float64 (NaN for null), strings object (a null as the model's own missing marker, None or
  NaN), datetimes datetime64[ns]. Used for
  sklearn's own `predict` on a pipeline the compiled path does not cover, and to check that path.
- `pyfunc_frame`: what MLflow's schema enforcement accepts for the signature's types: double float64,
  float float32, long int64, integer int32, boolean bool (a column holding nulls keeps the values
  pandas infers), strings object, datetimes datetime64[ns]. Before pandas 3 MLflow cast ISO strings to
  datetime64 itself; pandas 3 refuses that cast ("Can not safely convert str to datetime64[ns]"), so
  datetimes are parsed here (an offset converted to UTC, then dropped: MLflow's datetime is naive).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from serving.schema import NUMERIC_TYPES, Batch, Column

_PYFUNC_DTYPES = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32", "boolean": "bool"}


def _values(batch: Batch, j: int) -> Sequence[Any]:
    return batch.matrix[:, j] if batch.matrix is not None else batch.columns[j]


def naive_utc(value: str) -> datetime:
    """An ISO 8601 string (already validated) as a naive datetime: a UTC offset is converted to UTC.

    MLflow's "datetime" is timezone-naive datetime64[ns]; a mix of naive and offset values in one
    request would make pandas refuse the column.
    """
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _datetimes(values: Sequence[Any]) -> Any:
    import pandas as pd

    return pd.Series([None if v is None else naive_utc(v) for v in values], dtype="datetime64[ns]")


def sklearn_frame(batch: Batch, specs: Sequence[Column], null_markers: Mapping[str, Any] | None = None) -> Any:
    """The DataFrame a training-side pipeline expects, columns in `specs` order (the batch's order).

    A null in a string column becomes `null_markers[column]` (None or NaN: what the fitted encoder saw
    as missing, see fast_columns.null_marker), NaN for a column without one.
    """
    import pandas as pd

    data: dict[str, Any] = {}
    for j, spec in enumerate(specs):
        values = _values(batch, j)
        if spec.type in NUMERIC_TYPES or spec.type == "boolean":
            data[spec.name] = pd.Series(
                [math.nan if v is None else float(v) for v in values] if batch.matrix is None else values,
                dtype="float64",
            )
        elif spec.type == "datetime":
            data[spec.name] = _datetimes(values)
        else:
            marker = (null_markers or {}).get(spec.name, math.nan)
            data[spec.name] = pd.Series([marker if v is None else v for v in values], dtype=object)
    return pd.DataFrame(data)


def pyfunc_frame(batch: Batch, specs: Sequence[Column]) -> Any:
    """The DataFrame MLflow's pyfunc schema enforcement accepts for these signature columns."""
    import pandas as pd

    data: dict[str, Any] = {}
    for j, spec in enumerate(specs):
        values = list(_values(batch, j))
        dtype = _PYFUNC_DTYPES.get(spec.type)
        if spec.type == "datetime":
            data[spec.name] = _datetimes(values)
        elif dtype and None not in values:
            data[spec.name] = pd.Series(values, dtype=dtype)
        elif spec.type in ("string", "binary"):
            data[spec.name] = pd.Series(values, dtype=object)
        else:
            data[spec.name] = pd.Series(values)
    return pd.DataFrame(data)
