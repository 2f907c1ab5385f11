"""A dataset's schema: its columns, their types, which may be null, the categories seen, and the task.

The schema is declared in params.yaml (`datasets.<name>.schema`) or inferred from the first data a
dataset gets and stored beside its manifest for the user to review and commit. The same schema types
every read of the data (landed batches, the dataset, the holdout), drives the data checks, builds the
model's preprocessing and becomes the MLflow signature the model server validates requests against.

    schema:
      columns:
        tenure:  {type: integer}
        plan:    {type: categorical, nullable: true, categories: [basic, pro]}
        churned: {type: categorical, categories: ["no", "yes"]}   # the target: its categories are the classes
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import pandas as pd

from flightdeck.errors import FlightdeckError

# Object store keys and file names ending so are read as Parquet; anything else as CSV.
PARQUET_SUFFIXES = (".parquet", ".pq")
TRUE_WORDS = {"true", "1", "yes", "y", "t"}
FALSE_WORDS = {"false", "0", "no", "n", "f"}
MAX_EXAMPLES = 3


class SchemaError(FlightdeckError, ValueError):
    """A schema or a file cannot be used as asked; the message names the column and the fix."""


class Task(StrEnum):
    """What the model predicts: a class (classification) or a number (regression)."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class ColumnType(StrEnum):
    """Column types of a dataset, and what each is in pandas and in an MLflow signature."""

    NUMBER = "number"  # float64; MLflow "double"
    INTEGER = "integer"  # Int64 (nullable); MLflow "long"
    BOOLEAN = "boolean"  # pandas "boolean"; MLflow "boolean"
    CATEGORICAL = "categorical"  # strings; MLflow "string"

    @property
    def mlflow_type(self) -> str:
        """The MLflow ColSpec type name this column is logged with (double, long, boolean, string)."""
        return {"number": "double", "integer": "long", "boolean": "boolean", "categorical": "string"}[self.value]

    @property
    def is_numeric(self) -> bool:
        """True for number and integer columns."""
        return self in (ColumnType.NUMBER, ColumnType.INTEGER)


_TYPE_ALIASES = {
    "string": ColumnType.CATEGORICAL,
    "str": ColumnType.CATEGORICAL,
    "float": ColumnType.NUMBER,
    "double": ColumnType.NUMBER,
    "int": ColumnType.INTEGER,
    "bool": ColumnType.BOOLEAN,
}


@dataclass(frozen=True)
class ColumnSpec:
    """One column: `categories` lists the values seen (categorical columns only, sorted)."""

    name: str
    type: ColumnType
    nullable: bool = False
    categories: tuple[str, ...] | None = None

    def to_params(self) -> dict[str, Any]:
        """The column as it is written in params.yaml: `{type, nullable?, categories?}` (defaults left out)."""
        out: dict[str, Any] = {"type": self.type.value}
        if self.nullable:
            out["nullable"] = True
        if self.categories is not None:
            out["categories"] = list(self.categories)
        return out


@dataclass(frozen=True)
class DatasetSchema:
    """The columns (features and target, in file order), the target's name and the task."""

    columns: tuple[ColumnSpec, ...]
    target: str
    task: Task = Task.CLASSIFICATION
    by_name: dict[str, ColumnSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.columns})
        if self.target not in self.by_name:
            raise SchemaError(f"the schema has no column for the target {self.target!r}")
        target = self.by_name[self.target]
        if target.nullable:
            raise SchemaError(f"target {self.target!r} cannot be nullable: every training row needs a label")
        if self.task is Task.REGRESSION and not target.type.is_numeric:
            raise SchemaError(
                f"target {self.target!r} is {target.type.value}, but a regression needs a number: "
                "set `task: classification` or fix the column's type"
            )

    @property
    def features(self) -> list[ColumnSpec]:
        """Every column but the target, in file order."""
        return [c for c in self.columns if c.name != self.target]

    @property
    def feature_names(self) -> list[str]:
        """The feature columns' names, in file order."""
        return [c.name for c in self.features]

    @property
    def names(self) -> list[str]:
        """Every column's name, the target included, in file order."""
        return [c.name for c in self.columns]

    @property
    def classes(self) -> list[Any] | None:
        """The known class labels (classification), typed as the target column; None for regression."""
        if self.task is Task.REGRESSION:
            return None
        target = self.by_name[self.target]
        if target.categories is None:
            return None
        return [_parse_label(target.type, v) for v in target.categories]

    def with_categories(self, frame: pd.DataFrame) -> DatasetSchema:
        """The same schema with categorical columns' categories taken from `frame` (where not declared)."""
        cols = []
        for col in self.columns:
            keeps_values = col.type is ColumnType.CATEGORICAL or (
                col.name == self.target and self.task is Task.CLASSIFICATION
            )
            if keeps_values and col.categories is None and col.name in frame:
                seen = sorted({str(v) for v in frame[col.name].dropna().unique()})
                col = replace(col, categories=tuple(seen))
            cols.append(col)
        return replace(self, columns=tuple(cols))

    def to_params(self) -> dict[str, Any]:
        """The params.yaml form: {"task": ..., "target": ..., "schema": {"columns": {...}}}."""
        return {
            "task": self.task.value,
            "target": self.target,
            "schema": {"columns": {c.name: c.to_params() for c in self.columns}},
        }

    @classmethod
    def from_params(cls, block: Mapping[str, Any], *, target: str, task: Task | str, where: str) -> DatasetSchema:
        """Parse `schema: {columns: {name: {type, nullable, categories}}}`; `where` names the key in errors.

        Raises SchemaError for a missing or malformed `columns` map, an unknown type, or a target the
        columns do not hold."""
        columns_raw = (block or {}).get("columns")
        if not isinstance(columns_raw, Mapping) or not columns_raw:
            raise SchemaError(f"{where}.columns must map each column name to {{type: ..., nullable: ...}}")
        columns = []
        for name, spec in columns_raw.items():
            spec = {"type": spec} if isinstance(spec, str) else dict(spec or {})
            raw_type = str(spec.get("type", "")).lower()
            try:
                col_type = _TYPE_ALIASES.get(raw_type) or ColumnType(raw_type)
            except ValueError:
                raise SchemaError(
                    f"{where}.columns.{name}.type {spec.get('type')!r}: use one of {[t.value for t in ColumnType]}"
                ) from None
            cats = spec.get("categories")
            if cats is not None and not isinstance(cats, list):
                raise SchemaError(f"{where}.columns.{name}.categories must be a list of values")
            columns.append(
                ColumnSpec(
                    str(name),
                    col_type,
                    bool(spec.get("nullable", False)),
                    tuple(str(c) for c in cats) if cats is not None else None,
                )
            )
        try:
            return cls(tuple(columns), target, Task(task))
        except SchemaError as exc:
            raise SchemaError(f"{where}: {exc}") from None


def _parse_label(col_type: ColumnType, text: str) -> Any:
    if col_type is ColumnType.INTEGER:
        return int(float(text))
    if col_type is ColumnType.NUMBER:
        return float(text)
    if col_type is ColumnType.BOOLEAN:
        return text.lower() in TRUE_WORDS
    return text


def infer(frame: pd.DataFrame, target: str, task: Task | str | None = None) -> DatasetSchema:
    """A schema from a sample frame (as `read_frame(..., schema=None)` returns it).

    Types follow pandas' parsing: floats -> number, integers -> integer, booleans -> boolean, anything
    else -> categorical; a column holding a null in the sample is nullable. The task, when not given,
    is regression for a float target with more than 20 distinct values, else classification.

    Raises:
        SchemaError: the target is not a column of the frame, or the frame is empty.
    """
    if target not in frame.columns:
        raise SchemaError(f"target {target!r} is not a column of the data; columns: {list(frame.columns)}")
    if frame.empty:
        raise SchemaError("cannot infer a schema from a file with no rows")
    columns = []
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_bool_dtype(series) or _looks_boolean(series):
            col_type = ColumnType.BOOLEAN
        elif pd.api.types.is_integer_dtype(series) or (
            pd.api.types.is_float_dtype(series)
            and series.dropna().mod(1).eq(0).all()
            and series.notna().any()
            and series.isna().any()  # ints with gaps are read as floats
        ):
            col_type = ColumnType.INTEGER
        elif pd.api.types.is_numeric_dtype(series):
            col_type = ColumnType.NUMBER
        else:
            col_type = ColumnType.CATEGORICAL
        columns.append(ColumnSpec(str(name), col_type, bool(series.isna().any())))
    if task is None:
        label = frame[target]
        task = Task.REGRESSION if pd.api.types.is_float_dtype(label) and label.nunique() > 20 else Task.CLASSIFICATION
    by_name = {c.name: c for c in columns}
    if by_name[target].nullable:
        raise SchemaError(f"target {target!r} has missing values in the sample; every row needs a label")
    return DatasetSchema(tuple(columns), target, Task(task)).with_categories(frame)


def _looks_boolean(series: pd.Series) -> bool:
    if series.dtype != object and not pd.api.types.is_string_dtype(series):
        return False
    values = {str(v).strip().lower() for v in series.dropna().unique()}
    return bool(values) and values <= {"true", "false"}


def is_parquet(name: str, payload: bytes = b"") -> bool:
    """True when `name` ends in .parquet/.pq or `payload` starts with Parquet's magic bytes `PAR1`
    (Apache Parquet file format spec)."""
    return name.lower().endswith(PARQUET_SUFFIXES) or payload[:4] == b"PAR1"


def read_raw(name: str, payload: bytes) -> pd.DataFrame:
    """Parse CSV or Parquet bytes with pandas' own type inference (no schema applied).

    Raises:
        SchemaError: the bytes are empty or not a readable CSV/Parquet file.
    """
    if not payload.strip():
        raise SchemaError("empty file (0 bytes of data)")
    try:
        if is_parquet(name, payload):
            return pd.read_parquet(io.BytesIO(payload))
        return pd.read_csv(io.BytesIO(payload))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OSError) as exc:
        kind = "Parquet" if is_parquet(name, payload) else "CSV"
        raise SchemaError(f"unreadable {kind}: {type(exc).__name__}: {exc}") from None


def read_text_columns(name: str, payload: bytes) -> pd.DataFrame:
    """Parse a file for validation: CSV cells as strings (nulls as NaN), Parquet with its own types.

    Raises:
        SchemaError: as `read_raw`.
    """
    if not payload.strip():
        raise SchemaError("empty file (0 bytes of data)")
    if is_parquet(name, payload):
        return read_raw(name, payload)
    try:
        return pd.read_csv(io.BytesIO(payload), dtype=str, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise SchemaError(f"unreadable CSV: {type(exc).__name__}: {exc}") from None


def pandas_dtypes(schema: DatasetSchema) -> dict[str, str]:
    """pandas dtypes to read an already validated file of this schema with (no per-cell checks)."""
    return {
        c.name: {"number": "float64", "integer": "Int64", "boolean": "boolean", "categorical": "string"}[c.type.value]
        for c in schema.columns
    }


def read_typed(path: Any, schema: DatasetSchema) -> pd.DataFrame:
    """Read a validated dataset/holdout file (CSV or Parquet) with the schema's dtypes, columns in order."""
    name = str(path)
    if name.lower().endswith(PARQUET_SUFFIXES):
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(
            path, dtype={k: ("string" if v == "boolean" else v) for k, v in pandas_dtypes(schema).items()}
        )
    return coerce_trusted(frame[schema.names], schema, copy=False)


def coerce_trusted(frame: pd.DataFrame, schema: DatasetSchema, *, copy: bool = True) -> pd.DataFrame:
    """Cast each column to its schema dtype (for data that already passed `validate`); `copy=False`
    casts in place (a frame the caller just read and owns)."""
    out = frame.copy() if copy else frame
    for col in schema.columns:
        series = out[col.name]
        if col.type is ColumnType.BOOLEAN and not pd.api.types.is_bool_dtype(series):
            words = series.astype("string").str.strip().str.lower()
            typed = pd.Series(pd.NA, index=series.index, dtype="boolean")
            typed[words.isin(TRUE_WORDS).fillna(False)] = True
            typed[words.isin(FALSE_WORDS).fillna(False)] = False
            series = typed
        out[col.name] = series.astype(pandas_dtypes(schema)[col.name])
    return out


def model_frame(frame: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    """The features as every model sees them, in training, in the gates and behind the model server
    (serving/frames.py `sklearn_frame`): numbers, integers and booleans float64 (NaN for null, 0/1 for
    booleans), categoricals object strings (None for null)."""
    out = {}
    for col in schema.features:
        series = frame[col.name]
        if col.type is ColumnType.CATEGORICAL:
            out[col.name] = series.astype(object).where(series.notna(), None)
        else:
            out[col.name] = series.astype("Float64").astype("float64")
    return pd.DataFrame(out, index=frame.index)


def training_frame(frame: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    """`model_frame` plus the target in its natural type: what a user's training entrypoint gets."""
    out = model_frame(frame, schema)
    out[schema.target] = target_values(frame, schema)
    return out


def natural_frame(frame: pd.DataFrame, schema: DatasetSchema, columns: list[ColumnSpec] | None = None) -> pd.DataFrame:
    """The columns in numpy-friendly, JSON-natural dtypes: numbers float64 (NaN), integers int64 and
    booleans bool (object with None when a null is present), categoricals object strings with None.
    No pandas NA: what scikit-learn and a user's own training code expect."""
    out = {}
    for col in columns if columns is not None else schema.columns:
        series = frame[col.name]
        complete = bool(series.notna().all())
        if col.type is ColumnType.NUMBER:
            out[col.name] = series.astype("Float64").astype("float64")
        elif col.type is ColumnType.INTEGER and complete:
            out[col.name] = series.astype("int64")
        elif col.type is ColumnType.BOOLEAN and complete:
            out[col.name] = series.astype(bool)
        else:
            out[col.name] = series.astype(object).where(series.notna(), None)
    return pd.DataFrame(out, index=frame.index)


def example_frame(frame: pd.DataFrame, schema: DatasetSchema, rows: int = 3) -> pd.DataFrame:
    """A few feature rows, preferring rows without nulls, in natural dtypes: the input example logged
    with the model, which the model server's smoke test replays."""
    complete = frame.dropna()
    sample = (complete if len(complete) else frame).head(rows).reset_index(drop=True)
    return natural_frame(sample, schema, schema.features)


def target_values(frame: pd.DataFrame, schema: DatasetSchema) -> Any:
    """The labels as a numpy array of their natural type (str, int, bool or float)."""
    series = frame[schema.target]
    col = schema.by_name[schema.target]
    if col.type is ColumnType.CATEGORICAL:
        return series.astype(object).to_numpy()
    if col.type is ColumnType.INTEGER:
        return series.astype("int64").to_numpy()
    if col.type is ColumnType.BOOLEAN:
        return series.astype(bool).to_numpy()
    return series.astype("float64").to_numpy()
