"""Validation of one landed batch against the dataset's schema: the checks whose failure sends it to
quarantine, each reason naming the column and example rows (1-based data rows, the header not counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from flightdeck.data.schema import (
    FALSE_WORDS,
    MAX_EXAMPLES,
    TRUE_WORDS,
    ColumnType,
    DatasetSchema,
    SchemaError,
    Task,
    coerce_trusted,
    read_text_columns,
)


class UnseenCategories(StrEnum):
    """What a feature value outside the schema's categories does to its batch."""

    REPORT = "report"  # counted in the log and the sync result; the batch is merged
    QUARANTINE = "quarantine"  # the batch is quarantined with the counts as its reason


@dataclass
class BatchCheck:
    """The verdict on one batch: `frame` is the typed table when `ok`; `unseen` counts new categories
    per feature column ({column: {value: rows}})."""

    key: str
    ok: bool
    reasons: list[str] = field(default_factory=list)
    frame: pd.DataFrame | None = None
    unseen: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """Every failed check's message, joined with "; " ("" when the batch passed)."""
        return "; ".join(self.reasons)


def _examples(frame: pd.DataFrame, mask: pd.Series, column: str) -> str:
    rows = frame.index[mask][:MAX_EXAMPLES]
    return ", ".join(f"row {int(i) + 1}: {_plain(frame.at[i, column])!r}" for i in rows)


def _plain(value: Any) -> Any:
    """A numpy scalar as its Python value, so a reason reads `7`, not `np.int64(7)`."""
    return value.item() if isinstance(value, np.generic) else value


def _null_examples(mask: pd.Series) -> str:
    return ", ".join(f"row {int(i) + 1}" for i in mask.index[mask][:MAX_EXAMPLES])


def _type_errors(frame: pd.DataFrame, col: str, col_type: ColumnType) -> tuple[pd.Series, pd.Series]:
    """(converted column, mask of cells that are present but not of the type)."""
    raw = frame[col]
    present = raw.notna()
    if col_type.is_numeric:
        if pd.api.types.is_bool_dtype(raw):
            return raw, present
        converted = pd.to_numeric(raw, errors="coerce")
        bad = present & converted.isna()
        if col_type is ColumnType.INTEGER:
            bad |= present & converted.notna() & (converted.fillna(0) % 1 != 0)
        return converted, bad
    if col_type is ColumnType.BOOLEAN:
        if pd.api.types.is_bool_dtype(raw):
            return raw, pd.Series(False, index=raw.index)
        text = raw.astype("string").str.strip().str.lower()
        bad = present & ~text.isin(TRUE_WORDS | FALSE_WORDS)
        return raw, bad
    # Categorical: any value is a string; a Parquet column of numbers is still a different schema.
    if not (raw.dtype == object or pd.api.types.is_string_dtype(raw)):
        return raw, present
    return raw, pd.Series(False, index=raw.index)


def validate_batch(
    key: str,
    payload: bytes,
    schema: DatasetSchema,
    *,
    unseen_categories: UnseenCategories | str = UnseenCategories.REPORT,
) -> BatchCheck:
    """Parse CSV or Parquet bytes and check them against `schema`.

    Quarantine reasons: empty or unreadable file, missing or extra columns, a header-only file, a value
    not of its column's type, a null where the column is not nullable, a label outside the known classes
    (classification) and, when `unseen_categories` is "quarantine", a feature value outside its column's
    categories.
    """
    policy = UnseenCategories(unseen_categories)
    try:
        frame = read_text_columns(key, payload)
    except SchemaError as exc:
        return BatchCheck(key, False, [str(exc)])
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    expected = schema.names
    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in frame.columns if c not in expected]
    reasons: list[str] = []
    if missing:
        reasons.append(f"missing columns: {missing}")
    if extra:
        reasons.append(f"extra columns: {extra} (declare them in the schema or drop them upstream)")
    if frame.empty:
        reasons.append("no rows (header only)")
    if reasons:
        return BatchCheck(key, False, reasons)

    for col in schema.columns:
        _, bad = _type_errors(frame, col.name, col.type)
        if bad.any():
            got = "" if payload[:4] != b"PAR1" else f" (the file's type is {frame[col.name].dtype})"
            reasons.append(
                f"column {col.name!r}: {int(bad.sum())} value(s) are not {col.type.value}{got}, e.g. "
                + _examples(frame, bad, col.name)
            )
        nulls = frame[col.name].isna()
        if not col.nullable and nulls.any():
            what = "target" if col.name == schema.target else "column"
            reasons.append(
                f"{what} {col.name!r}: {int(nulls.sum())} null(s) but it is not nullable, at " + _null_examples(nulls)
            )
    if reasons:
        return BatchCheck(key, False, reasons)
    typed = coerce_trusted(frame[expected], schema)

    classes = schema.classes
    if schema.task is Task.CLASSIFICATION and classes is not None:
        target = typed[schema.target]
        unknown_mask = ~target.isin(classes)
        if unknown_mask.any():
            unknown = sorted({str(v) for v in target[unknown_mask]})
            reasons.append(
                f"target {schema.target!r}: {int(unknown_mask.sum())} label(s) outside the known classes "
                f"{[str(c) for c in classes]}: {unknown[:10]}, e.g. " + _examples(typed, unknown_mask, schema.target)
            )
    unseen: dict[str, dict[str, int]] = {}
    for col in schema.features:
        if col.type is not ColumnType.CATEGORICAL or col.categories is None:
            continue
        values = typed[col.name]
        mask = values.notna() & ~values.isin(col.categories)
        if mask.any():
            counts = values[mask].value_counts()
            unseen[col.name] = {str(k): int(v) for k, v in counts.items()}
    if unseen and policy is UnseenCategories.QUARANTINE:
        for name, counts in unseen.items():
            reasons.append(
                f"column {name!r}: {sum(counts.values())} value(s) outside its categories: "
                f"{_summarise(counts)} (datasets.<name>.unseen_categories: quarantine)"
            )
    if reasons:
        return BatchCheck(key, False, reasons, unseen=unseen)
    return BatchCheck(key, True, [], typed, unseen=unseen)


def _summarise(counts: dict[str, Any]) -> str:
    items = sorted(counts.items(), key=lambda kv: -kv[1])[:5]
    more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
    return ", ".join(f"{k!r} x{v}" for k, v in items) + more
