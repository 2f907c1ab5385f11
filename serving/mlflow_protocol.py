"""MLflow's scoring protocol on `/invocations`: the inputs `mlflow models serve` (3.x) accepts, without pandas.

`ScoringRoutes.invocations` first tries the strict validator (serving/schema.py): a request that names
exactly the signature's columns with values of the signature's types never reaches this module. Anything
else comes here, where the request is read as MLflow's server reads it, in plain Python:

- JSON bodies (`application/json`): `dataframe_split` (with or without `index`; rows as lists, or as
  objects picked by name), `dataframe_records`, `instances` and `inputs`, each as a list of records or as
  an object of columns (`{"col": [v, ...]}`) or of scalars (one row); other top-level keys are ignored,
  `params` are taken by the route. MLflow's unified-LLM keys (`messages`, `prompt`, `input`) are a 400, as
  MLflow answers them for a column signature.
- CSV bodies (`text/csv`): a header row, then one row per record, as `pandas.DataFrame.to_csv()` writes
  them (its unnamed index column is an extra column). Empty cells and pandas' default NA strings
  ("NA", "null", "None", "NaN", ...) are nulls; booleans are `true`/`false` in any case or `1`/`0`.
- Parquet bodies (`application/vnd.apache.parquet`) when pyarrow is installed (415 otherwise).
- Content-Type parameters: `charset` (UTF-8 only, else 415) and nothing else (415), as MLflow.

Columns outside the signature are ignored and returned, for the `X-Ignored-Columns` header. Values are
coerced as MLflow's parsers coerce them before its schema check: integers, booleans and numeric strings
are doubles; integral floats, booleans and integer strings are longs; 0/1 are booleans. MLflow's casts
that silently change a value are refused instead (422 naming row and column): a fractional float in a
long column (MLflow truncates 3.7 to 3), any other value in a boolean column (MLflow takes Python's
truthiness: "false" is True, null is False), a non-string in a string column (MLflow hands the number to
the model), and a null in a required column (the signature's rule, as on `/predict`).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serving.errors import ServingError
from serving.schema import Batch, RequestError, Validator, json_type, parse_json, wrong_type

MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
LLM_KEYS = ("messages", "prompt", "input")
CONTENT_JSON = "application/json"
CONTENT_CSV = "text/csv"
CONTENT_PARQUET = "application/vnd.apache.parquet"
CONTENT_TYPES = (CONTENT_JSON, CONTENT_CSV, CONTENT_PARQUET)

# pandas.read_csv's default NA strings (pandas/_libs/parsers.pyx STR_NA_VALUES); "" too.
CSV_NA = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*\Z")
_NAN_TEXT = frozenset({"nan", "+nan", "-nan"})


@dataclass
class Parsed:
    """A request read as MLflow reads it: the validated batch and the columns it ignored."""

    batch: Batch
    ignored: list[str]


class _Bad(ServingError, ValueError):
    """A value that cannot become the column's type (the message says why)."""


# ---- Content-Type ---------------------------------------------------------------------------------


def media_type(header: str | None) -> str:
    """The media type of `/invocations`' Content-Type, with MLflow's rules: 415 for another type, for
    a charset other than UTF-8 and for any parameter but `charset`.

    Raises RequestError (415 unsupported_media_type) in those cases."""
    mime, _, rest = (header or "").partition(";")
    mime = mime.strip().lower()
    params = {}
    for pair in rest.split(";") if rest.strip() else []:
        key, _, value = pair.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    if mime not in CONTENT_TYPES:
        raise RequestError(
            415,
            "unsupported_media_type",
            f"Content-Type must be one of {list(CONTENT_TYPES)}, got {mime or 'none'}",
            allowed=list(CONTENT_TYPES),
        )
    charset = params.pop("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise RequestError(415, "unsupported_charset", f"only UTF-8 bodies are accepted, got charset={charset}")
    if params:
        raise RequestError(
            415,
            "unsupported_media_type",
            f"unrecognized Content-Type parameter(s): {', '.join(sorted(params))} (only charset is accepted)",
        )
    return mime


# ---- value coercions, as MLflow's parsers cast before its schema check ------------------------------


def _json_double(v: Any) -> Any:
    t = type(v)
    if t is float or v is None:
        return None if t is float and math.isnan(v) else v
    if t is int or t is bool:
        try:
            return float(v)
        except OverflowError:
            raise _Bad("is too large for a double") from None
    if t is str:
        return _text_double(v)
    raise _Bad(f"must be a number, got {json_type(v)}")


def _text_double(v: str) -> float | None:
    text = v.strip()
    if text.lower() in _NAN_TEXT:
        return None
    try:
        return float(text)
    except ValueError:
        raise _Bad(f"is {v!r}, not a number") from None


def _json_long(v: Any) -> Any:
    t = type(v)
    if t is int or v is None:
        return v
    if t is bool:
        return int(v)
    if t is float:
        if math.isfinite(v) and v == int(v):
            return int(v)
        raise _Bad(f"is {v!r}: a long column takes whole numbers only (MLflow would truncate it)")
    if t is str:
        try:
            return int(v)  # as pandas/numpy cast a string: " 3 " and "1_000" pass, "3.0" does not
        except ValueError:
            raise _Bad(f"is {v!r}, not a whole number") from None
    raise _Bad(f"must be an integer, got {json_type(v)}")


def _json_boolean(v: Any) -> Any:
    t = type(v)
    if t is bool or v is None:
        return v
    if (t is int or t is float) and v in (0, 1):
        return bool(v)
    raise _Bad(f"must be true/false (or 1/0), got {v!r}")


def _json_string(v: Any) -> Any:
    if type(v) is str or v is None:
        return v
    raise _Bad(f"must be a string, got {json_type(v)}")


_JSON_COERCE: dict[str, Callable[[Any], Any]] = {
    "double": _json_double,
    "float": _json_double,
    "long": _json_long,
    "integer": _json_long,
    "boolean": _json_boolean,
    "string": _json_string,
    "binary": _json_string,
    "datetime": _json_string,
}


def _csv_double(v: str) -> float | None:
    if v in CSV_NA:
        return None
    if "_" in v:  # pandas' CSV parser reads no digit separators
        raise _Bad(f"is {v!r}, not a number")
    return _text_double(v)


def _csv_long(v: str) -> int:
    if v in CSV_NA:
        raise _Bad("is empty: a long column cannot hold a null in CSV")
    if _INT_TEXT.match(v):
        return int(v)
    number = _csv_double(v)
    if number is not None and math.isfinite(number) and number == int(number):
        return int(number)
    raise _Bad(f"is {v!r}, not a whole number")


def _csv_boolean(v: str) -> bool:
    lowered = v.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if v in CSV_NA:
        raise _Bad("is empty: a boolean column cannot hold a null in CSV")
    try:
        number = float(v)
    except ValueError:
        number = math.nan
    if number in (0.0, 1.0):
        return bool(number)
    raise _Bad(f"is {v!r}, not true/false")


def _csv_string(v: str) -> str | None:
    return None if v in CSV_NA else v


_CSV_COERCE: dict[str, Callable[[str], Any]] = {
    "double": _csv_double,
    "float": _csv_double,
    "long": _csv_long,
    "integer": _csv_long,
    "boolean": _csv_boolean,
    "string": _csv_string,
    "binary": _csv_string,
    "datetime": _csv_string,
}


# ---- shapes -> {column: values} ---------------------------------------------------------------------


def _records_to_columns(rows: Any, where: str) -> dict[str, list[Any]]:
    if type(rows) is not list:
        raise RequestError(400, "bad_shape", f"'{where}' must be a list of records, got {json_type(rows)}")
    if not rows:
        raise RequestError(400, "empty_input", f"'{where}' is empty; send at least one row")
    names: dict[str, None] = {}
    for i, row in enumerate(rows):
        if type(row) is not dict:
            raise RequestError(400, "bad_row", f"{where}[{i}] must be an object, got {json_type(row)}", row=i)
        names.update(dict.fromkeys(row))
    # A key missing from a row is a null there, as in the DataFrame MLflow builds.
    return {name: [row.get(name) for row in rows] for name in names}


def _split_to_columns(payload: Any, where: str) -> dict[str, list[Any]]:
    if type(payload) is not dict:
        raise RequestError(400, "bad_shape", f"'{where}' must be an object with 'columns' and 'data'")
    unknown = sorted(set(payload) - {"columns", "data", "index"})
    if unknown or "data" not in payload:
        raise RequestError(
            400,
            "bad_shape",
            f"'{where}' must have 'data' and optionally 'columns' and 'index'"
            + (f"; unknown keys {unknown}" if unknown else ""),
        )
    names, data, index = payload.get("columns"), payload["data"], payload.get("index")
    if type(data) is not list:
        raise RequestError(400, "bad_shape", f"'{where}.data' must be a list of rows, got {json_type(data)}")
    if names is None:
        names = list(range(len(data[0]))) if data and type(data[0]) is list else []
    if type(names) is not list or not all(type(c) in (str, int) for c in names):
        raise RequestError(400, "bad_shape", f"'{where}.columns' must be a list of column names")
    names = [str(c) for c in names]
    if len(set(names)) != len(names):
        raise RequestError(422, "duplicate_columns", f"'{where}.columns' repeats a column name")
    del index  # row labels: they change no prediction (the strict path ignores them too)
    width = len(names)
    rows: list[Sequence[Any]] = []
    for i, row in enumerate(data):
        if type(row) is dict:  # pandas picks an object's values by column name
            row = [row.get(name) for name in names]
        if type(row) is not list or len(row) != width:
            raise RequestError(
                400, "bad_row", f"{where}.data[{i}] must be a list of {width} values, one per column", row=i
            )
        rows.append(row)
    return {name: [row[j] for row in rows] for j, name in enumerate(names)}


def _mapping_to_columns(payload: dict[str, Any], where: str) -> dict[str, list[Any]]:
    """{"col": [values]} or {"col": scalar} (one row); scalars next to lists are repeated, as pandas does."""
    if not payload:
        raise RequestError(400, "empty_input", f"'{where}' holds no columns")
    lengths = {len(v) for v in payload.values() if type(v) is list}
    if not lengths:
        return {name: [value] for name, value in payload.items()}
    if len(lengths) > 1:  # ragged: `coerce` names it after the column names are checked
        return {name: value if type(value) is list else [value] for name, value in payload.items()}
    n = lengths.pop()
    return {name: value if type(value) is list else [value] * n for name, value in payload.items()}


def json_columns(key: str, payload: Any, validator: Validator) -> dict[str, list[Any]]:
    """The columns of one MLflow JSON input, by its key, as MLflow's parser builds its DataFrame.

    Raises RequestError (400 bad_shape) for an input MLflow's parser would refuse."""
    if key == "dataframe_split":
        return _split_to_columns(payload, key)
    if key == "dataframe_records":
        return _records_to_columns(payload, key)
    if type(payload) is dict:
        if payload and not any(type(v) is list for v in payload.values()):
            extra = sorted(set(payload) - set(validator.columns))
            if extra:  # MLflow cannot build its one-row frame then (0-d arrays next to scalars): a 400
                raise RequestError(
                    400,
                    "bad_shape",
                    f"a one-row '{key}' object takes only the signature's columns, got {extra} too "
                    "(as MLflow); send the columns as lists or use dataframe_records",
                    unknown=extra,
                )
        return _mapping_to_columns(payload, key)
    if type(payload) is list and payload and all(type(r) is dict for r in payload):
        return _records_to_columns(payload, key)
    if type(payload) is list and len(validator.order) == 1:  # one column: a list is its values
        return {validator.order[0]: payload}
    raise RequestError(
        400,
        "bad_shape",
        f"'{key}' must be a list of records or an object of columns for this model's named columns, "
        f"got {json_type(payload)}" + (" of non-objects" if type(payload) is list else ""),
    )


def csv_columns(data: bytes) -> dict[str, list[str | None]]:
    """A CSV body (header row first) as columns of strings, as `pandas.read_csv` splits it.

    Raises RequestError (400) for a body that is not UTF-8 or not CSV."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, "bad_encoding", f"the body is not valid UTF-8: {exc}") from None
    text = text.removeprefix("\ufeff")
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]  # blank lines skipped
    except csv.Error as exc:
        raise RequestError(400, "bad_csv", f"the body is not valid CSV: {exc}") from None
    if not rows:
        raise RequestError(400, "empty_body", "the CSV body is empty; send a header row and rows")
    header, body = rows[0], rows[1:]
    names: list[str] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(header):
        name = raw or f"Unnamed: {i}"
        if name in seen:  # pandas renames a repeated header "name.1", "name.2", ...
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        names.append(name)
    width = len(names)
    for i, row in enumerate(body):
        if len(row) > width:
            raise RequestError(400, "bad_row", f"CSV row {i + 1} has {len(row)} fields for {width} columns", row=i)
    return {name: [row[j] if j < len(row) else "" for row in body] for j, name in enumerate(names)}


def parquet_columns(data: bytes) -> dict[str, list[Any]]:
    """A Parquet body as {column: values}, pandas' index columns (`__index_level_N__`) dropped.

    Raises RequestError 415 when pyarrow is not installed, 400 bad_parquet when the body is not Parquet."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RequestError(
            415, "unsupported_media_type", "this image cannot read Parquet (no pyarrow); send JSON or CSV"
        ) from None
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow's own errors: the body is not Parquet
        raise RequestError(400, "bad_parquet", f"the body is not a Parquet file: {exc}") from None
    columns = {str(name): values for name, values in table.to_pydict().items()}
    return {name: values for name, values in columns.items() if not name.startswith("__index_level_")}


# ---- coercion and the signature --------------------------------------------------------------------


def coerce(
    validator: Validator,
    columns: Mapping[str, Sequence[Any]],
    where: str,
    text: bool = False,
    absent_optional_ok: bool = True,
) -> Parsed:
    """Validate MLflow-shaped columns: extra columns set aside, values coerced, then the signature's checks.

    `text`: the values are CSV strings. `absent_optional_ok=False` refuses an optional column left out of
    the whole request, as MLflow's sklearn flavor does (the estimator needs every column it was fitted on).

    Raises RequestError (400/422, naming the row and column) for a missing column or a value of the wrong type.
    """
    ignored = [name for name in columns if name not in validator.columns]
    present = set(columns) - set(ignored)
    missing = [name for name in validator.order if name not in present and name in validator.required]
    if not absent_optional_ok:
        missing += [name for name in validator.order if name not in present and name not in validator.required]
    if missing:
        raise RequestError(
            422,
            "missing_columns",
            f"missing column(s): {', '.join(missing)}"
            + ("" if absent_optional_ok else " (an optional column is sent as null on /invocations)"),
            missing=missing,
        )
    lengths = {len(values) for values in columns.values()}
    n_rows = lengths.pop() if len(lengths) == 1 else -1
    if n_rows == -1:
        raise RequestError(422, "ragged_columns", f"the columns in '{where}' have different lengths")
    if n_rows == 0:
        raise RequestError(400, "empty_input", f"'{where}' holds no rows")
    if n_rows > validator.max_rows:
        raise validator._too_many(n_rows)
    table = _CSV_COERCE if text else _JSON_COERCE
    values: list[list[Any]] = []
    for spec in validator.specs:
        if spec.name not in columns:
            values.append([None] * n_rows)
            continue
        convert = table.get(spec.type, _csv_string if text else _json_string)
        col = columns[spec.name]
        try:
            values.append([convert(v) for v in col])
        except _Bad:
            for i, v in enumerate(col):
                try:
                    convert(v)
                except _Bad as exc:
                    raise wrong_type(where, i, spec, v, f"({spec.type}) {exc}") from None
            raise
    return Parsed(validator._finish_columns(values, where), ignored)


def has_all_columns(key: str, payload: Any, names: Sequence[str]) -> bool:
    """Whether every one of `names` appears somewhere in a JSON input (the first record, then all of them)."""
    if type(payload) is dict:
        present = payload.get("columns", ()) if key == "dataframe_split" else payload
        return type(present) not in (list, dict) or all(n in present for n in names)
    if type(payload) is list and payload and type(payload[0]) is dict:
        if all(n in payload[0] for n in names):
            return True
        seen = set().union(*(r for r in payload if type(r) is dict))
        return all(n in seen for n in names)
    return True


def body_keys(body: Any) -> str:
    """The one MLflow input key of a JSON body.

    Raises RequestError (400 bad_shape), as MLflow answers, for any other body (no key, several, LLM keys)."""
    if type(body) is not dict:
        raise RequestError(400, "bad_shape", f"the body must be a JSON object with exactly one of {list(MLFLOW_KEYS)}")
    keys = [k for k in MLFLOW_KEYS if k in body]
    llm = [k for k in LLM_KEYS if k in body]
    if llm:
        raise RequestError(
            400,
            "bad_shape",
            f"{llm} are MLflow's unified-LLM inputs; this model takes one of {list(MLFLOW_KEYS)}",
        )
    if len(keys) != 1:
        raise RequestError(
            400,
            "bad_shape",
            f"the body must have exactly one of {list(MLFLOW_KEYS)}, got {sorted(map(str, body))}",
        )
    return keys[0]


__all__ = [
    "CONTENT_CSV",
    "CONTENT_JSON",
    "CONTENT_PARQUET",
    "MLFLOW_KEYS",
    "Parsed",
    "body_keys",
    "coerce",
    "csv_columns",
    "json_columns",
    "media_type",
    "parquet_columns",
    "parse_json",
    "has_all_columns",
]
