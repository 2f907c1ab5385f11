"""`Pipeline([ColumnTransformer, estimator])` served without pandas: compiled columns + a fast evaluator.

The transformer is compiled by serving/fast_columns.py; the final estimator is scored by the first
of serving/fast_hgb.py, fast_trees.py, fast_linear.py that accepts it (each checks itself against
the estimator on its own probe rows), else by the estimator's own method on the float matrix, which
is what the Pipeline hands it. When pandas is importable, `build()` also compares the whole thing with
sklearn's own `Pipeline.predict` on a DataFrame of probe rows (each category, an unseen one, nulls in
optional columns, numbers around the imputers' statistics) and refuses to serve on any difference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving import fast_columns, fast_hgb, fast_linear, fast_trees
from serving.frames import sklearn_frame
from serving.schema import Batch, Column, Validator

log = logging.getLogger(__name__)


@dataclass
class PipelinePredictor:
    """predict (and predict_proba for classifiers) on a validated Batch; `description` names the parts."""

    predict: Callable[[Batch], np.ndarray]
    predict_proba: Callable[[Batch], np.ndarray] | None
    description: str


def _evaluator(estimator: Any, method: str) -> tuple[Callable[[np.ndarray], Any], str]:
    for module in (fast_hgb, fast_trees, fast_linear):
        try:
            fast = module.build(estimator, method)
        except Exception as exc:  # shaped unlike the sklearn we know: keep the estimator's own
            log.warning("%s not built for %s (%s: %s)", module.__name__, method, type(exc).__name__, exc)
            continue
        if fast is not None:
            return fast
    return getattr(estimator, method), f"sklearn {type(estimator).__name__}.{method}"


def split_pipeline(estimator: Any) -> tuple[Any, Any] | None:
    """(ColumnTransformer, final estimator) of a fitted `Pipeline([ct, est])`, else None."""
    if type(estimator).__name__ != "Pipeline" or not type(estimator).__module__.startswith("sklearn."):
        return None
    steps = [s for _, s in estimator.steps if s not in (None, "passthrough")]
    if len(steps) != 2 or type(steps[0]).__name__ != "ColumnTransformer":
        return None
    return steps[0], steps[1]


def probe_batch(
    columns: Sequence[Column], ct: Any, validator: Validator, n: int = 64, seed: int = 0, unseen: bool = True
) -> Batch:
    """Probe rows: every known category, numbers near the data and, with `unseen`, an unseen category and
    nulls in optional columns (left out for a model that refuses them, whose answer is then a 422)."""
    rng = np.random.default_rng(seed)
    known: dict[str, list[Any]] = {}
    for name, transformer, _ in ct.transformers_:
        if transformer in ("drop", "passthrough"):
            continue
        last = transformer.steps[-1][1] if hasattr(transformer, "steps") else transformer
        cats = getattr(last, "categories_", None)
        if cats is not None:
            names = [str(ct.feature_names_in_[i]) for i in ct._transformer_to_input_indices[name]]
            for col, values in zip(names, cats, strict=True):
                known[col] = [v for v in values.tolist() if v is not None and v == v]
    rows = []
    for i in range(n):
        row: dict[str, Any] = {}
        for c in columns:
            null = unseen and not c.required and rng.random() < 0.2
            if null:
                row[c.name] = None
            elif c.type == "string":
                choices = known.get(c.name, []) + (["never-seen-in-training"] if unseen or c.name not in known else [])
                row[c.name] = str(choices[int(rng.integers(len(choices)))])
            elif c.type == "boolean":
                row[c.name] = bool(rng.random() < 0.5)
            elif c.type in ("long", "integer"):
                row[c.name] = int(rng.integers(-5, 100))
            elif c.type in ("double", "float"):
                row[c.name] = float(rng.normal(0, 50)) if i % 2 else float(rng.integers(-5, 100))
            elif c.type == "datetime":
                row[c.name] = f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00"
            else:
                row[c.name] = "x"
        rows.append(row)
    # Validated as requests are, without the server's row limit.
    return Validator(validator.specs, order=validator.order, max_rows=n).records(rows, where="probe")


def build(estimator: Any, columns: Sequence[Column], validator: Validator) -> PipelinePredictor:
    """Compile `estimator` for requests validated by `validator` (signature order).

    Raises fast_columns.NotCompilable if the pipeline is not of the shape this serves, and
    ValueError if the compiled pipeline's answers differ from sklearn's on the probe rows.
    """
    parts = split_pipeline(estimator)
    if parts is None:
        raise fast_columns.NotCompilable("not a Pipeline([ColumnTransformer, estimator])")
    ct, final = parts
    compiled = fast_columns.compile_transformer(ct, columns)
    if compiled.n_outputs != getattr(final, "n_features_in_", compiled.n_outputs):
        raise fast_columns.NotCompilable("the transformer's output width differs from the estimator's input")
    predict_fn, predict_desc = _evaluator(final, "predict")
    proba_fn = None
    if hasattr(final, "predict_proba") and hasattr(final, "classes_"):
        proba_fn, _ = _evaluator(final, "predict_proba")

    def predict(batch: Batch) -> np.ndarray:
        return predict_fn(compiled.transform(batch))

    predict_proba = None
    if proba_fn is not None:
        proba = proba_fn

        def predict_proba(batch: Batch) -> np.ndarray:
            return proba(compiled.transform(batch))

    _check_against_sklearn(estimator, columns, ct, validator, compiled, predict, predict_proba)
    return PipelinePredictor(predict, predict_proba, f"compiled ColumnTransformer + {predict_desc}")


def _check_against_sklearn(
    estimator: Any,
    columns: Sequence[Column],
    ct: Any,
    validator: Validator,
    compiled: fast_columns.CompiledTransformer,
    predict: Callable[[Batch], np.ndarray],
    predict_proba: Callable[[Batch], np.ndarray] | None,
) -> None:
    try:
        import pandas  # noqa: F401 - only to know whether sklearn's own path can run here
    except ImportError:
        log.info("pandas is not installed: the compiled pipeline is checked part by part only")
        return
    refuses = any(None in getattr(b, "unseen", ()) for b in compiled.branches)
    batch = probe_batch(columns, ct, validator, unseen=not refuses)
    frame = sklearn_frame(batch, validator.specs, compiled.null_markers)
    if not np.array_equal(predict(batch), estimator.predict(frame)):
        raise ValueError("the compiled pipeline's predictions differ from sklearn's on the probe rows")
    if predict_proba is not None and not np.array_equal(predict_proba(batch), estimator.predict_proba(frame)):
        raise ValueError("the compiled pipeline's probabilities differ from sklearn's on the probe rows")
