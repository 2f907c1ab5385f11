"""Request validation against an MLflow column signature, without pandas.

`mlflow models serve` spends most of each request building a DataFrame and casting every column to
enforce the signature. Here the same checks (column names, types, finiteness, row limits) run on
plain Python objects with C-level helpers (itemgetter, map(type, ...), one numpy conversion); the
slow, precise diagnosis only runs once a fast check has already failed.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any

import numpy as np
import orjson

from serving.errors import ServingError

# MLflow ColSpec type -> Python types accepted from JSON. Ints are valid doubles (a safe cast, as in
# MLflow); bools are not numbers here even though Python says so.
_ACCEPTED: dict[str, frozenset[type]] = {
    "double": frozenset({float, int}),
    "float": frozenset({float, int}),
    "long": frozenset({int}),
    "integer": frozenset({int}),
    "boolean": frozenset({bool}),
    "string": frozenset({str}),
    "binary": frozenset({str}),
    "datetime": frozenset({str}),
}
_INT_RANGE = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_MAX_DOUBLE = 1.7976931348623157e308
NUMERIC_TYPES = frozenset({"double", "float", "long", "integer"})
_JSON_TYPE_NAMES = {
    float: "number",
    int: "integer",
    bool: "boolean",
    str: "string",
    type(None): "null",
    list: "array",
    dict: "object",
}


class RequestError(ServingError):
    """A client error: rendered as a JSON body with `code`, `message` and `details`."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Column:
    """One input column of the model signature."""

    name: str
    type: str
    required: bool = True


@dataclass
class Batch:
    """Validated input in the model's column order.

    `matrix` is a float64 (rows x columns) array when every column is numeric (the fast path);
    `columns` always holds the per-column values, for building a DataFrame in the pyfunc fallback.
    """

    n_rows: int
    matrix: np.ndarray | None
    columns: list[Sequence[Any]] = field(default_factory=list)


def json_type(value: object) -> str:
    """The JSON type name of a parsed value (number, integer, boolean, string, null, array, object; else the
    Python type's name), for error messages."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def wrong_type(where: str, row: int, spec: Column, value: Any, detail: str | None = None) -> RequestError:
    """The 422 for a value that is not of its column's type; `detail` (what follows the column in the
    message) defaults to "must be <type>, got <JSON type>"."""
    got = json_type(value)
    if detail is None:
        detail = f"must be {spec.type}, got {got}"
    return RequestError(
        422,
        "wrong_type",
        f"{where}: row {row}, column {spec.name!r} {detail}",
        row=row,
        column=spec.name,
        expected=spec.type,
        got=got,
    )


class _NonFiniteConstant(ServingError, ValueError):
    """A NaN or Infinity literal in a JSON body (JSON has none); parse_json turns it into a RequestError."""


def _reject_constant(name: str) -> float:
    raise _NonFiniteConstant(name)


JSON_MAX_DEPTH = 1024  # orjson's nesting limit (orjson README, "Deserialize"): deeper bodies are refused


def parse_json(body: bytes) -> Any:
    """Parse a request body; orjson on the hot path, the stdlib only to explain a failure.

    Raises RequestError (400) for an empty body, JSON nested deeper than JSON_MAX_DEPTH, NaN/Infinity
    literals or any other unparsable body, naming the problem and its position."""
    if not body or not body.strip():
        raise RequestError(400, "empty_body", "the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        if "depth limit" in str(fast_error):  # orjson's 1024 levels; the stdlib would recurse and crash
            raise RequestError(
                400, "too_deep", f"the JSON nests deeper than {JSON_MAX_DEPTH} levels", max_depth=JSON_MAX_DEPTH
            ) from None
        try:
            # The stdlib parses 1e999 as inf (caught later, with its position) and reports
            # NaN/Infinity literals through parse_constant, so the error can name them.
            return json.loads(body, parse_constant=_reject_constant)
        except _NonFiniteConstant as exc:
            raise RequestError(
                422, "non_finite", f"{exc} is not allowed: every number must be finite", value=str(exc)
            ) from None
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise RequestError(400, "invalid_json", f"the body is not valid JSON: {fast_error}") from None


class Validator:
    """Checks one request's rows against the signature and returns a `Batch`."""

    def __init__(self, columns: Sequence[Column], order: Sequence[str] | None = None, max_rows: int = 10_000):
        if not columns:
            raise ValueError("a signature with at least one input column is required")
        self.columns = {c.name: c for c in columns}
        self.order: tuple[str, ...] = tuple(order) if order else tuple(c.name for c in columns)
        if set(self.order) != set(self.columns):
            raise ValueError("the model's feature order must name exactly the signature's columns")
        self.specs = [self.columns[name] for name in self.order]
        self.required = frozenset(c.name for c in columns if c.required)
        self.max_rows = max_rows
        self.numeric = all(c.type in NUMERIC_TYPES for c in self.specs)
        # One accepted-type set for the whole matrix when all columns share it (the common case).
        kinds = {_ACCEPTED.get(c.type, frozenset({str})) for c in self.specs}
        self._uniform: frozenset[type] | None = kinds.pop() if len(kinds) == 1 else None
        self._uniform_range = _INT_RANGE.get(self.specs[0].type) if self._uniform else None
        self._fast = self._uniform is not None and self.numeric and self.required == set(self.columns)
        n = len(self.order)
        getter = operator.itemgetter(*self.order)
        self._get_row: Callable[[Any], tuple[Any, ...]] = getter if n > 1 else (lambda r: (getter(r),))

    # ---- the four shapes a request can take -------------------------------------------------

    def records(self, rows: Any, where: str = "rows") -> Batch:
        """A list of objects, one per row: [{"col": value, ...}, ...]."""
        self._check_count(rows, where)
        n, get = len(self.order), self._get_row
        try:
            # A row passes the fast check when it is a dict with exactly our keys.
            tuples = [get(r) for r in rows if type(r) is dict and len(r) == n]
            if len(tuples) != len(rows):
                raise KeyError
        except KeyError:
            return self._records_slow(rows, where)
        return self._finish_rows(tuples, where)

    def split(self, payload: Any, where: str = "dataframe_split") -> Batch:
        """Pandas' split orientation: {"columns": [...], "data": [[...], ...]} (an "index" is ignored).

        Raises RequestError (400 bad_shape, 422 for values) when the payload is not that shape or breaks
        the signature."""
        if type(payload) is not dict:
            raise RequestError(400, "bad_shape", f"'{where}' must be an object with 'columns' and 'data'")
        unknown = set(payload) - {"columns", "data", "index"}
        if unknown:
            raise RequestError(
                400, "bad_shape", f"'{where}' has unknown keys {sorted(unknown)}", unknown=sorted(unknown)
            )
        names, data = payload.get("columns"), payload.get("data")
        if type(names) is not list or not all(type(c) is str for c in names):
            raise RequestError(400, "bad_shape", f"'{where}.columns' must be a list of column names")
        if len(set(names)) != len(names):
            raise RequestError(422, "duplicate_columns", f"'{where}.columns' repeats a column name")
        self._check_names(set(names), where)
        self._check_count(data, f"{where}.data")
        width = len(names)
        for i, row in enumerate(data):
            if type(row) is not list or len(row) != width:
                raise RequestError(
                    422,
                    "bad_row",
                    f"{where}.data[{i}] must be a list of {width} values, one per column",
                    row=i,
                )
        if tuple(names) == self.order:
            tuples = data
        else:
            index = {name: i for i, name in enumerate(names)}
            positions = [index[name] for name in self.order if name in index]
            if len(positions) != len(self.order):  # optional columns left out: fill with None
                return self._records_slow([dict(zip(names, row, strict=True)) for row in data], where)
            pick = operator.itemgetter(*positions)
            tuples = [pick(row) for row in data] if len(positions) > 1 else [(pick(r),) for r in data]
        return self._finish_rows(tuples, f"{where}.data")

    def columnar(self, payload: Any, where: str = "columns") -> Batch:
        """One list per column: {"col": [v1, v2, ...], ...}.

        Raises RequestError (400/422) for another shape, lists of unequal length or values that break
        the signature."""
        if type(payload) is not dict:
            raise RequestError(400, "bad_shape", f"'{where}' must be an object mapping column -> list")
        self._check_names(set(payload), where)
        lengths = {len(v) if type(v) is list else -1 for v in payload.values()}
        if -1 in lengths:
            bad = [k for k, v in payload.items() if type(v) is not list]
            raise RequestError(422, "bad_shape", f"column {bad[0]!r} must be a list of values", column=bad[0])
        if len(lengths) > 1:
            raise RequestError(422, "ragged_columns", f"the columns in '{where}' have different lengths")
        n_rows = lengths.pop() if lengths else 0
        if n_rows == 0:
            raise RequestError(400, "empty_input", f"'{where}' holds no rows")
        if n_rows > self.max_rows:
            raise self._too_many(n_rows)
        values = [payload[name] if name in payload else [None] * n_rows for name in self.order]
        return self._finish_columns(values, where)

    # ---- shared checks ---------------------------------------------------------------------

    def _too_many(self, n: int) -> RequestError:
        return RequestError(
            413,
            "too_many_rows",
            f"{n} rows sent; at most {self.max_rows} per request",
            max_rows=self.max_rows,
        )

    def _check_count(self, rows: Any, where: str) -> None:
        if type(rows) is not list:
            raise RequestError(400, "bad_shape", f"'{where}' must be a list, got {json_type(rows)}")
        if not rows:
            raise RequestError(400, "empty_input", f"'{where}' is empty; send at least one row")
        if len(rows) > self.max_rows:
            raise self._too_many(len(rows))

    def _check_names(self, names: set[str], where: str, row: int | None = None) -> None:
        missing = sorted(self.required - names)
        extra = sorted(names - self.columns.keys())
        at = f" in row {row}" if row is not None else ""
        if missing:
            raise RequestError(
                422,
                "missing_columns",
                f"missing column(s){at}: {', '.join(missing)}",
                missing=missing,
                **({"row": row} if row is not None else {}),
            )
        if extra:
            raise RequestError(
                422,
                "unknown_columns",
                f"unknown column(s){at}: {', '.join(extra)}",
                unknown=extra,
                **({"row": row} if row is not None else {}),
            )

    def _records_slow(self, rows: list[Any], where: str) -> Batch:
        tuples = []
        for i, row in enumerate(rows):
            if type(row) is not dict:
                raise RequestError(422, "bad_row", f"{where}[{i}] must be an object, got {json_type(row)}", row=i)
            self._check_names(set(row), where, row=i)
            tuples.append(tuple(row.get(name) for name in self.order))
        return self._finish_rows(tuples, where)

    def _finish_rows(self, tuples: list[Sequence[Any]], where: str) -> Batch:
        if self._fast:
            # Fast path: one type check over every cell, then one numpy conversion.
            seen = set(map(type, chain.from_iterable(tuples)))
            if seen <= self._uniform:
                matrix = self._to_matrix(tuples, where)
                if self._uniform_range is not None:
                    self._check_int_range_matrix(matrix, where)
                return Batch(len(tuples), matrix, [])
            # Fall through: the per-column pass below names the offending cell.
        return self._finish_columns([list(col) for col in zip(*tuples, strict=True)], where)

    def _finish_columns(self, values: list[Sequence[Any]], where: str) -> Batch:
        n_rows = len(values[0])
        for spec, col in zip(self.specs, values, strict=True):
            accepted = _ACCEPTED.get(spec.type, frozenset({str}))
            seen = set(map(type, col))
            if not seen <= accepted:
                nullable = not spec.required and seen - accepted == {type(None)}
                if not nullable:
                    self._raise_type(spec, col, accepted | {type(None)} if not spec.required else accepted, where)
            if spec.type in ("double", "float"):
                for i, v in enumerate(col):
                    if (type(v) is float and not math.isfinite(v)) or (type(v) is int and abs(v) > _MAX_DOUBLE):
                        raise self._non_finite(where, i, spec.name, v)
            elif spec.type == "datetime":
                self._check_datetimes(spec, col, where)
            elif spec.type in _INT_RANGE:
                lo, hi = _INT_RANGE[spec.type]
                for i, v in enumerate(col):
                    if type(v) is int and not lo <= v <= hi:
                        raise RequestError(
                            422,
                            "out_of_range",
                            f"row {i}, column {spec.name!r}: {v} does not fit a {spec.type}",
                            row=i,
                            column=spec.name,
                        )
        matrix = None
        if self.numeric:
            cols = [[math.nan if v is None else v for v in c] for c in values]
            matrix = np.ascontiguousarray(np.array(cols, dtype=np.float64).T)
        return Batch(n_rows, matrix, values)

    def _to_matrix(self, tuples: list[Sequence[Any]], where: str) -> np.ndarray:
        try:
            matrix = np.array(tuples, dtype=np.float64)
        except OverflowError:  # an integer too large for a double
            matrix = None
        if matrix is None or not np.isfinite(matrix).all():
            for i, row in enumerate(tuples):
                for name, v in zip(self.order, row, strict=True):
                    try:
                        ok = math.isfinite(float(v))
                    except OverflowError:
                        ok = False
                    if not ok:
                        raise self._non_finite(where, i, name, v)
        assert matrix is not None
        return matrix

    def _check_int_range_matrix(self, matrix: np.ndarray, where: str) -> None:
        assert self._uniform_range is not None
        lo, hi = self._uniform_range
        if (matrix < lo).any() or (matrix > hi).any():
            i, j = np.argwhere((matrix < lo) | (matrix > hi))[0]
            name = self.order[j]
            raise RequestError(
                422,
                "out_of_range",
                f"row {i}, column {name!r}: value does not fit a {self.columns[name].type}",
                row=int(i),
                column=name,
            )

    @staticmethod
    def _check_datetimes(spec: Column, col: Sequence[Any], where: str) -> None:
        """Every non-null value must be an ISO 8601 date or date-time ("2024-05-01", "2024-05-01T12:00:00Z")."""
        for i, v in enumerate(col):
            if v is None:
                continue
            try:
                datetime.fromisoformat(v)
            except ValueError:
                raise RequestError(
                    422,
                    "bad_datetime",
                    f"{where}: row {i}, column {spec.name!r} is {v!r}, not an ISO 8601 date-time",
                    row=i,
                    column=spec.name,
                ) from None

    @staticmethod
    def _non_finite(where: str, row: int, column: str, value: Any) -> RequestError:
        return RequestError(
            422,
            "non_finite",
            f"{where}: row {row}, column {column!r} is {value!r}; every number must be finite",
            row=row,
            column=column,
        )

    @staticmethod
    def _raise_type(spec: Column, col: Sequence[Any], accepted: frozenset[type], where: str) -> None:
        for i, v in enumerate(col):
            if type(v) not in accepted:
                raise wrong_type(where, i, spec, v)
