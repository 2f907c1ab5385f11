"""Structural validation of a landed batch: the checks whose failure sends it to quarantine."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class BatchCheck:
    """The verdict on one batch: `frame` is the parsed, typed table when `ok`."""

    key: str
    ok: bool
    reasons: list[str] = field(default_factory=list)
    frame: pd.DataFrame | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def validate_batch(
    key: str, payload: bytes, features: list[str], target: str, classes: list[int]
) -> BatchCheck:
    """Parse CSV bytes and check columns, types and emptiness against the dataset's schema."""
    if not payload.strip():
        return BatchCheck(key, False, ["empty file (0 bytes of data)"])
    try:
        frame = pd.read_csv(io.BytesIO(payload))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        return BatchCheck(key, False, [f"unreadable CSV: {exc}"])
    reasons: list[str] = []
    expected = [*features, target]
    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in frame.columns if c not in expected]
    if missing:
        reasons.append(f"missing columns: {missing}")
    if extra:
        reasons.append(f"extra columns: {extra}")
    if frame.empty:
        reasons.append("no rows (header only)")
    if reasons:
        return BatchCheck(key, False, reasons)
    typed = frame[expected].copy()
    for col in features:
        numeric = pd.to_numeric(typed[col], errors="coerce")
        bad = int((numeric.isna() & typed[col].notna()).sum())
        if bad:
            sample = typed.loc[numeric.isna() & typed[col].notna(), col].astype(str).head(3).tolist()
            reasons.append(f"column {col!r}: {bad} non-numeric values (e.g. {sample})")
        typed[col] = numeric.astype("float64")
    labels = pd.to_numeric(typed[target], errors="coerce")
    non_int = int((labels.isna() | (labels.fillna(0) % 1 != 0)).sum())
    if non_int:
        reasons.append(f"target {target!r}: {non_int} values are not integer class labels")
    else:
        unknown = sorted(set(labels.astype("int64")) - set(classes))
        if unknown:
            reasons.append(f"target {target!r}: unknown classes {unknown} (known: {classes})")
        typed[target] = labels.astype("int64")
    if reasons:
        return BatchCheck(key, False, reasons)
    return BatchCheck(key, True, [], typed)
