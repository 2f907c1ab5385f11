"""How a loaded sklearn estimator is called for a signature: the cheapest path that gives sklearn's answers.

In order of preference:
1. `Pipeline([ColumnTransformer, estimator])` (what the training side logs): the transformer compiled
   to numpy and the estimator scored by a fast evaluator (serving/fast_pipeline.py). No pandas.
2. An estimator fitted on an all-numeric matrix whose features are the signature's columns: a float
   matrix in its fitted feature order, scored by a fast evaluator or its own method. No pandas.
3. Anything else: the estimator's own method on a DataFrame (serving/frames.py `sklearn_frame`), as
   sklearn would be called after `model.predict(df)`. Needs pandas: without it, ModelLoadError at
   load (which is at image build: the build fails and says to use WITH_MLFLOW=1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving import fast_columns, fast_hgb, fast_linear, fast_pipeline, fast_trees
from serving.errors import ServingError
from serving.schema import Batch, Column, Validator

log = logging.getLogger(__name__)


class NeedsPandas(ServingError, RuntimeError):
    """The estimator can only be called on a DataFrame and pandas is not installed."""


@dataclass
class NativePlan:
    """The validator and the functions that score a validated Batch (see LoadedModel)."""

    validator: Validator
    predict: Callable[[Batch], Any]
    predict_proba: Callable[[Batch], Any] | None
    classes: list[Any] | None
    evaluator: str


def _classes(estimator: Any) -> list[Any] | None:
    classes = getattr(estimator, "classes_", None)
    if classes is None or not hasattr(estimator, "predict_proba"):
        return None
    return np.asarray(classes).tolist()


def _fast_matrix_method(estimator: Any, method_name: str) -> tuple[Callable[[Any], Any], str]:
    for module in (fast_trees, fast_linear, fast_hgb):
        try:
            fast = module.build(estimator, method_name)
        except Exception as exc:  # an estimator shaped unlike the sklearn we know: keep its own
            log.warning(
                "%s evaluator not built (%s: %s); using the estimator's own %s",
                module.__name__,
                type(exc).__name__,
                exc,
                method_name,
            )
            continue
        if fast is not None:
            return fast
    return getattr(estimator, method_name), f"sklearn {type(estimator).__name__}.{method_name}"


def _compiled(estimator: Any, columns: Sequence[Column], max_rows: int, method_name: str) -> NativePlan | None:
    if method_name != "predict" or fast_pipeline.split_pipeline(estimator) is None:
        return None
    validator = Validator(columns, max_rows=max_rows)
    try:
        compiled = fast_pipeline.build(estimator, columns, validator)
    except (fast_columns.NotCompilable, ValueError) as exc:
        log.warning("pipeline not compiled (%s); using sklearn's own predict on a DataFrame", exc)
        return None
    return NativePlan(validator, compiled.predict, compiled.predict_proba, _classes(estimator), compiled.description)


def _matrix(estimator: Any, columns: Sequence[Column], max_rows: int, method_name: str) -> NativePlan | None:
    if not all(c.type in ("double", "float", "long", "integer") for c in columns):
        return None
    names = {c.name for c in columns}
    fitted = getattr(estimator, "feature_names_in_", None)
    fitted = [str(n) for n in fitted] if fitted is not None else None
    if fitted is not None and (set(fitted) != names or len(fitted) != len(names)):
        log.warning("estimator features differ from the signature; calling it on a DataFrame")
        return None
    if fast_pipeline.split_pipeline(estimator) is not None:
        return None  # selects columns by name: needs the DataFrame path
    # Feed the matrix in the order the estimator was fitted in, whatever the signature says.
    validator = Validator(columns, order=fitted, max_rows=max_rows)
    method, evaluator = _fast_matrix_method(estimator, method_name)
    proba = None
    if _classes(estimator) is not None and method_name == "predict":
        proba, _ = _fast_matrix_method(estimator, "predict_proba")

    def predict(batch: Batch) -> Any:
        return method(batch.matrix)

    predict_proba = None
    if proba is not None:
        proba_fn = proba

        def predict_proba(batch: Batch) -> Any:
            return proba_fn(batch.matrix)

    return NativePlan(validator, predict, predict_proba, _classes(estimator), evaluator)


def _dataframe(estimator: Any, columns: Sequence[Column], max_rows: int, method_name: str) -> NativePlan:
    try:
        import pandas  # noqa: F401
    except ImportError as exc:
        raise NeedsPandas(
            f"{type(estimator).__name__} is not a pipeline shape the compiled path serves, and calling it "
            "on a DataFrame needs pandas"
        ) from exc
    from serving.frames import sklearn_frame

    validator = Validator(columns, max_rows=max_rows)
    specs = validator.specs
    method = getattr(estimator, method_name)
    parts = fast_pipeline.split_pipeline(estimator)
    markers = fast_columns.null_markers(parts[0]) if parts else {}

    def predict(batch: Batch) -> Any:
        return method(sklearn_frame(batch, specs, markers))

    predict_proba = None
    if _classes(estimator) is not None and method_name == "predict":

        def predict_proba(batch: Batch) -> Any:
            return estimator.predict_proba(sklearn_frame(batch, specs, markers))

    evaluator = f"sklearn {type(estimator).__name__}.{method_name} on a DataFrame"
    return NativePlan(validator, predict, predict_proba, _classes(estimator), evaluator)


def plan(estimator: Any, columns: Sequence[Column], max_rows: int, method_name: str = "predict") -> NativePlan:
    """The cheapest exact way to call `estimator` for requests validated against `columns`.

    `method_name` is the flavor's pyfunc predict_fn ("predict" unless logged otherwise). Raises
    NeedsPandas when only the DataFrame path fits and pandas is missing.
    """
    return (
        _compiled(estimator, columns, max_rows, method_name)
        or _matrix(estimator, columns, max_rows, method_name)
        or _dataframe(estimator, columns, max_rows, method_name)
    )
