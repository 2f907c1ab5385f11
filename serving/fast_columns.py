"""A fitted sklearn ColumnTransformer, compiled into numpy operations on validated request columns.

Why this exists: `Pipeline(ColumnTransformer(...), estimator).predict` needs a pandas DataFrame (the
transformer selects columns by name) and spends ~5-10 ms per 1-row call in pandas and in each
transformer's input checks. The lean image has no pandas. Here the transformer is read once at load
and each request's columns (plain Python values, already checked against the signature) become the
float64 matrix the final estimator was fitted on.

What it compiles, each part exact by construction:
- categorical branches (a column-wise Pipeline ending in an OrdinalEncoder or OneHotEncoder, after
  optional SimpleImputers): every category the encoder knows, None (JSON null) and one unseen value
  are pushed through the fitted branch itself at load, giving a lookup table value -> output row;
  any value not in the table gets the unseen row. A branch that raises on an unseen value
  (handle_unknown="error") makes such a request a 422 naming the column, where sklearn would fail.
- numeric branches (SimpleImputer then StandardScaler, or "passthrough"): NaN replaced by the
  imputer's statistics, then `x -= mean_; x /= scale_`, the operations sklearn runs, in float64.
  Booleans enter as 1.0/0.0, as the training side feeds them (`schema.model_frame`).
- the blocks land where `output_indices_` says, "drop" and the remainder as fitted.
Anything else (other transformers, multi-column encoders whose blocks it cannot place, sparse output,
a datetime column used by a branch) makes `compile_transformer` raise `NotCompilable`, and the caller
uses sklearn's own predict on a DataFrame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.errors import ServingError
from serving.schema import NUMERIC_TYPES, Batch, Column, RequestError

_UNSEEN = "\x00flightdeck-unseen-category\x00"
_NULL = object()  # the JSON null candidate; sent to sklearn as the column's null marker


class NotCompilable(ServingError, ValueError):
    """The transformer has a part this module does not reproduce; the message says which."""


def _is_sklearn(obj: Any, *names: str) -> bool:
    return type(obj).__name__ in names and type(obj).__module__.startswith("sklearn.")


def _is_identity(step: Any) -> bool:
    """ "passthrough", or the identity FunctionTransformer sklearn fits in its place (a passthrough remainder)."""
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return True
    return _is_sklearn(step, "FunctionTransformer") and step.func is None


def _steps(transformer: Any) -> list[Any]:
    steps = [step for _, step in transformer.steps] if _is_sklearn(transformer, "Pipeline") else [transformer]
    return [step for step in steps if not _is_identity(step)]


@dataclass
class _NumericBranch:
    """Columns -> float block: impute NaN with `fill`, then `(x - mean) / scale` per scaler."""

    positions: list[int]
    out: slice
    fill: np.ndarray | None
    scalers: list[tuple[np.ndarray | None, np.ndarray | None]]

    def apply(self, batch: Batch, out: np.ndarray) -> None:
        if batch.matrix is not None:
            x = batch.matrix[:, self.positions].astype(np.float64, copy=True)
        else:
            x = np.array([_floats(batch.columns[p]) for p in self.positions], dtype=np.float64).T.copy()
        if self.fill is not None:
            nan = np.isnan(x)
            if nan.any():
                x[nan] = np.broadcast_to(self.fill, x.shape)[nan]
        for mean, scale in self.scalers:
            if mean is not None:
                x -= mean
            if scale is not None:
                x /= scale
        out[:, self.out] = x


@dataclass
class _CategoricalBranch:
    """Per column: value -> row of a table of output rows (the branch's own answers, made at load)."""

    positions: list[int]
    names: list[str]
    blocks: list[slice]
    index: list[dict[Any, int]]
    tables: list[np.ndarray]
    unseen: list[int | None]  # row for an unseen value; None: the branch refuses unseen values
    markers: dict[str, Any]  # column -> what a JSON null stands for in it (None or NaN, see null_marker)

    def apply(self, batch: Batch, out: np.ndarray) -> None:
        for pos, name, block, index, table, unseen in zip(
            self.positions, self.names, self.blocks, self.index, self.tables, self.unseen, strict=True
        ):
            values = batch.columns[pos] if batch.matrix is None else batch.matrix[:, pos].tolist()
            get = index.get
            rows = [get(v, unseen) for v in values]
            if unseen is None and None in rows:
                i = rows.index(None)
                raise RequestError(
                    422,
                    "unknown_category",
                    f"row {i}, column {name!r}: {values[i]!r} is not a category the model knows",
                    row=i,
                    column=name,
                )
            out[:, block] = table.take(rows, axis=0)


def _floats(values: Sequence[Any]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


class CompiledTransformer:
    """`transform(batch)` -> the (n_rows, n_outputs) float64 matrix the ColumnTransformer would give."""

    def __init__(self, branches: list[Any], n_outputs: int, used: list[str]) -> None:
        self.branches = branches
        self.n_outputs = n_outputs
        self.used = used
        # column -> what a JSON null stands for, for the DataFrame sklearn's own predict is checked on
        self.null_markers: dict[str, Any] = {}
        for branch in branches:
            self.null_markers.update(getattr(branch, "markers", {}))

    def transform(self, batch: Batch) -> np.ndarray:
        """The transformer's output for `batch`: float64 array, shape (rows, n_outputs), as sklearn's would be."""
        out = np.empty((batch.n_rows, self.n_outputs), dtype=np.float64)
        for branch in self.branches:
            branch.apply(batch, out)
        return out


def _numeric_branch(steps: list[Any], positions: list[int], out: slice) -> _NumericBranch:
    fill = None
    scalers: list[tuple[np.ndarray | None, np.ndarray | None]] = []
    for i, step in enumerate(steps):
        if _is_sklearn(step, "SimpleImputer") and i == 0:
            stats = np.asarray(step.statistics_, dtype=np.float64)
            missing = step.missing_values
            if not (isinstance(missing, float) and math.isnan(missing)) or step.add_indicator or np.isnan(stats).any():
                raise NotCompilable("SimpleImputer: only NaN imputation without indicator or empty columns")
            fill = stats
        elif _is_sklearn(step, "StandardScaler"):
            mean = step.mean_ if step.with_mean else None
            scale = step.scale_ if step.with_std else None
            scalers.append((mean, scale))
        else:
            raise NotCompilable(f"numeric step {type(step).__name__} is not compiled")
    return _NumericBranch(positions, out, fill, scalers)


def _encoder_widths(encoder: Any) -> list[int]:
    if _is_sklearn(encoder, "OrdinalEncoder"):
        return [1] * len(encoder.categories_)
    if _is_sklearn(encoder, "OneHotEncoder"):
        if getattr(encoder, "drop_idx_", None) is not None or getattr(encoder, "_infrequent_enabled", False):
            raise NotCompilable("OneHotEncoder with drop or infrequent categories is not compiled")
        return [len(c) for c in encoder.categories_]
    raise NotCompilable(f"categorical encoder {type(encoder).__name__} is not compiled")


def _categorical_branch(
    transformer: Any, steps: list[Any], positions: list[int], names: list[str], out: slice
) -> _CategoricalBranch:
    for step in steps[:-1]:
        if not _is_sklearn(step, "SimpleImputer") or step.add_indicator:
            raise NotCompilable(f"categorical step {type(step).__name__} is not compiled")
    encoder = steps[-1]
    widths = _encoder_widths(encoder)
    if len(widths) != len(positions) or sum(widths) != out.stop - out.start:
        raise NotCompilable("the encoder's output blocks do not match its columns")
    categories = [list(c.tolist()) for c in encoder.categories_]
    known = [[v for v in cats if v is not None and v == v] for cats in categories]
    markers = [null_marker(cats) for cats in categories]
    # Candidate values per column: its categories, None (a JSON null), then one unseen value; a branch
    # that refuses unseen values (handle_unknown="error") is asked again without them, then without None.
    for extra in ([_NULL, _UNSEEN], [_NULL], []):
        candidates = [k + extra for k in known]
        try:
            result = _transform_candidates(transformer, candidates, markers)
            break
        except (ValueError, TypeError):  # sklearn's "Found unknown categories", or str vs number categories
            continue
    else:
        raise NotCompilable("the categorical branch refuses its own categories")
    blocks, index, tables, unseen = [], [], [], []
    start = out.start
    depth = max(len(c) for c in candidates)
    for j, (cands, width) in enumerate(zip(candidates, widths, strict=True)):
        local = slice(start - out.start, start - out.start + width)
        rows = result[j * depth : j * depth + len(cands), local]
        blocks.append(slice(start, start + width))
        has_unseen = bool(cands) and cands[-1] is _UNSEEN
        index.append({None if v is _NULL else v: i for i, v in enumerate(cands[:-1] if has_unseen else cands)})
        tables.append(np.ascontiguousarray(rows))
        unseen.append(len(cands) - 1 if has_unseen else None)
        start += width
    return _CategoricalBranch(positions, names, blocks, index, tables, unseen, dict(zip(names, markers, strict=True)))


def null_marker(categories: Sequence[Any]) -> Any:
    """What a JSON null must become in a string column for the model to see its training's missing value.

    sklearn does not treat None and NaN alike: SimpleImputer fills only NaN and OrdinalEncoder /
    OneHotEncoder keep None as a category of its own. A frame built by `astype(object).where(notna,
    None)` (the training side's `model_frame`) holds None; one read by pandas 3 (`str` dtype) holds NaN.
    The fitted encoder tells which: None among its categories means training saw None; otherwise NaN
    (seen as NaN, imputed before encoding, or never seen, where both are unknown alike).
    """
    return None if any(v is None for v in categories) else math.nan


def _transform_candidates(transformer: Any, candidates: list[list[Any]], markers: list[Any]) -> np.ndarray:
    """The branch's output for each candidate of each column (other columns hold their first candidate);
    the `_NULL` candidate is sent as the column's null marker."""
    depth = max(len(c) for c in candidates)
    probe = np.empty((depth * len(candidates), len(candidates)), dtype=object)
    for j, cands in enumerate(candidates):
        probe[:, j] = cands[0]
    for j, cands in enumerate(candidates):
        for i, v in enumerate(cands):
            probe[j * depth + i, j] = markers[j] if v is _NULL else v
    result = transformer.transform(probe)
    if hasattr(result, "toarray"):  # a sparse block: ColumnTransformer stacks it densely (sparse_output_ False)
        result = result.toarray()
    return np.asarray(result, dtype=np.float64)


def null_markers(ct: Any) -> dict[str, Any]:
    """column -> null marker (see `null_marker`) for every encoded column of a fitted ColumnTransformer."""
    markers: dict[str, Any] = {}
    for name, transformer, _ in getattr(ct, "transformers_", []):
        if isinstance(transformer, str):
            continue
        steps = _steps(transformer)
        categories = getattr(steps[-1], "categories_", None) if steps else None
        if categories is None:
            continue
        names = [str(ct.feature_names_in_[i]) for i in ct._transformer_to_input_indices[name]]
        for col, cats in zip(names, categories, strict=False):
            markers[col] = null_marker(cats.tolist())
    return markers


def compile_transformer(ct: Any, columns: Sequence[Column]) -> CompiledTransformer:
    """Compile a fitted ColumnTransformer for requests validated against `columns` (signature order).

    Raises NotCompilable for anything it does not reproduce exactly (see the module docstring).
    """
    if not _is_sklearn(ct, "ColumnTransformer"):
        raise NotCompilable(f"{type(ct).__name__} is not a ColumnTransformer")
    if getattr(ct, "sparse_output_", False):
        raise NotCompilable("the ColumnTransformer returns a sparse matrix")
    fitted_names = getattr(ct, "feature_names_in_", None)
    if fitted_names is None:
        raise NotCompilable("the ColumnTransformer was not fitted on named columns")
    position = {c.name: i for i, c in enumerate(columns)}
    types = {c.name: c.type for c in columns}
    branches: list[Any] = []
    used: list[str] = []
    n_outputs = 0
    for name, transformer, _ in ct.transformers_:
        block = ct.output_indices_[name]
        n_outputs = max(n_outputs, block.stop)
        if (isinstance(transformer, str) and transformer == "drop") or block.stop == block.start:
            continue
        names = [str(fitted_names[i]) for i in ct._transformer_to_input_indices[name]]
        missing = [n for n in names if n not in position]
        if missing:
            raise NotCompilable(f"columns {missing} are used by the model but not in the signature")
        positions = [position[n] for n in names]
        kinds = {types[n] for n in names}
        used.extend(names)
        steps = _steps(transformer)
        if steps and (_is_sklearn(steps[-1], "OrdinalEncoder", "OneHotEncoder")):
            if "datetime" in kinds or "binary" in kinds:
                raise NotCompilable(f"branch {name!r} encodes a datetime or binary column")
            branches.append(_categorical_branch(transformer, steps, positions, names, block))
        elif kinds <= NUMERIC_TYPES | {"boolean"}:
            branches.append(_numeric_branch(steps, positions, block))
        else:
            raise NotCompilable(f"branch {name!r} feeds {sorted(kinds)} columns to a numeric transform")
    return CompiledTransformer(branches, n_outputs, used)
