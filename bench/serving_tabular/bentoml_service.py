"""BentoML service for bench/serving_tabular: the same fitted pipeline, input validated by pydantic.

Started by run.py as `bentoml serve bentoml_service:TabularService` inside BentoML's own virtualenv
(build/bench-venvs/bentoml), with BENCH_MODEL_JOBLIB naming the pickled pipeline and
BENCH_COLUMNS_JSON the signature's columns ([{"name", "type", "required"}], as in MLmodel).

The request model is built from those columns so the validation work matches our server's: strict
types (a string column takes only strings, an integer column only integers, a double column integers
or floats, never NaN/inf), required columns present, optional ones nullable, unknown columns
rejected, at most 5000 rows. The frame handed to the pipeline gets the training dtypes (str columns
as pandas `str`, so a null is the NaN the imputer fills), which is what makes its answers sklearn's.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import bentoml
import joblib
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model

_PY_TYPES: dict[str, Any] = {"double": float, "float": float, "long": int, "integer": int, "string": str}
_DTYPES = {"double": "float64", "float": "float64", "long": "int64", "integer": "int64", "string": "str"}
COLUMNS: list[dict[str, Any]] = json.loads(os.environ["BENCH_COLUMNS_JSON"])


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


Row = create_model(  # type: ignore[call-overload]
    "Row",
    __base__=_Strict,
    **{
        c["name"]: (_PY_TYPES[c["type"]], ...) if c["required"] else (_PY_TYPES[c["type"]] | None, None)
        for c in COLUMNS
    },
)


@bentoml.service(workers=1)
class TabularService:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL_JOBLIB"])
        self.names = [c["name"] for c in COLUMNS]
        self.dtypes = [_DTYPES[c["type"]] for c in COLUMNS]

    @bentoml.api
    def predict(self, rows: Annotated[list[Row], Field(min_length=1, max_length=5000)]) -> list[str]:
        columns = {name: [getattr(r, name) for r in rows] for name in self.names}
        frame = pd.DataFrame(
            {name: pd.Series(columns[name], dtype=dt) for name, dt in zip(self.names, self.dtypes, strict=True)}
        )
        return [str(v) for v in self.model.predict(frame)]
