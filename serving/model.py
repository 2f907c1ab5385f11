"""Loading an MLflow model directory once, and predicting through the cheapest correct path.

For the sklearn flavor the estimator is loaded straight from the flavor's file (skops/cloudpickle/
pickle, as MLflow saved it, after putting its logged code_paths on sys.path) and called the cheapest
exact way serving/sklearn_native.py finds: a compiled ColumnTransformer pipeline or a float matrix
(no pandas, no MLflow: the lean image ships neither), else sklearn on a DataFrame (needs pandas).
Any other flavor goes through `mlflow.pyfunc.load_model` with a DataFrame built from the
already-validated columns (serving/frames.py), which needs the image built with WITH_MLFLOW=1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from serving import sklearn_native
from serving.errors import ServingError
from serving.frames import pyfunc_frame
from serving.schema import Batch, Column, RequestError, Validator

log = logging.getLogger(__name__)

# Environment variables carrying lineage (build args in the image) -> keys of /version.
LINEAGE_ENV = {
    "model_name": "MODEL_NAME",
    "model_version": "MODEL_VERSION",
    "run_id": "RUN_ID",
    "data_version": "DATA_VERSION",
    "git_sha": "GIT_SHA",
    "image_tag": "IMAGE_TAG",
    "image_digest": "IMAGE_DIGEST",
}

# The estimator is fed an ndarray while it may have been fitted on a DataFrame; the columns are
# already in its feature_names_in_ order, so this warning is noise (and it costs time per call).
warnings.filterwarnings("ignore", message="X does not have valid feature names")


class ModelLoadError(ServingError, RuntimeError):
    """The model directory cannot be served (no signature, unreadable file, failed smoke test)."""


@dataclass
class LoadedModel:
    """A ready-to-call model: its validator, predict function(s) and lineage.

    `predict` returns one plain JSON value per row: class labels as the model gives them (str, int,
    bool), regression outputs as floats.
    """

    validator: Validator
    predict_batch: Callable[[Batch], Any]
    flavor: str
    predict_path: str  # "sklearn-native" or "pyfunc"
    lineage: dict[str, str | None]
    smoke: Batch
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    predict_proba_batch: Callable[[Batch], Any] | None = None
    classes: list[Any] | None = None  # the class labels, in the order of predict_proba's columns

    def predict(self, batch: Batch) -> list[Any]:
        """One prediction per row of `batch` (label or value, JSON-ready); a one-column output is flattened.

        Raises RequestError (422 non_finite_output) when a numeric prediction is NaN or infinite."""
        out = self.predict_batch(batch)
        if hasattr(out, "to_numpy"):  # pyfunc may return a DataFrame/Series
            out = out.to_numpy()
        if isinstance(out, np.ndarray):
            if out.ndim > 1 and out.shape[1] == 1:
                out = out[:, 0]
            _refuse_non_finite(out, "predictions")
            return out.tolist()
        return list(out)

    def predict_proba(self, batch: Batch) -> list[list[float]]:
        """One list of class probabilities per row, in `classes` order.

        Raises RequestError (422 probabilities_not_supported) for a model without them (a regressor,
        a pyfunc model).
        """
        if self.predict_proba_batch is None or self.classes is None:
            raise RequestError(
                422, "probabilities_not_supported", "this model gives no class probabilities (not a classifier)"
            )
        probabilities = np.asarray(self.predict_proba_batch(batch), dtype=np.float64)
        _refuse_non_finite(probabilities, "probabilities")
        return probabilities.tolist()

    def smoke_test(self) -> list[Any]:
        """Predict the signature's example batch once at load; the predictions.

        Raises ModelLoadError when the model answers with another number of rows than it was given."""
        preds = self.predict(self.smoke)
        if len(preds) != self.smoke.n_rows:
            raise ModelLoadError(f"smoke prediction returned {len(preds)} rows for {self.smoke.n_rows}")
        return preds


def _refuse_non_finite(values: np.ndarray, what: str) -> None:
    """Raise RequestError (422 non_finite_output) when a float output holds NaN or an infinity: JSON has no
    such number (it would go out as null, which the response schema does not allow). Finite inputs at the edge
    of float64 (e.g. +1.8e308 beside -1.8e308) make a linear model's score inf - inf = NaN."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        rows = sorted({int(i) for i in np.argwhere(~np.isfinite(values))[:, 0]})
        raise RequestError(
            422,
            "non_finite_output",
            f"the model's {what} are not finite numbers for row(s) {rows[:10]}: feature values out of the range "
            "the model can score",
        )


def _read_mlmodel(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "MLmodel"
    if not path.is_file():
        raise ModelLoadError(f"{model_dir} is not an MLflow model directory (no MLmodel file)")
    with path.open() as fh:
        return yaml.safe_load(fh)


def _signature_columns(mlmodel: Mapping[str, Any]) -> list[Column]:
    signature = mlmodel.get("signature") or {}
    raw = signature.get("inputs")
    if not raw:
        raise ModelLoadError("the model has no input signature; log it with `signature=` to serve it")
    specs = json.loads(raw)
    columns = []
    for spec in specs:
        if "name" not in spec or spec.get("type") in (None, "tensor"):
            raise ModelLoadError("only column-based (ColSpec) signatures with named columns are supported")
        columns.append(Column(spec["name"], spec["type"], bool(spec.get("required", True))))
    return columns


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _add_code_paths(model_dir: Path, conf: Mapping[str, Any]) -> None:
    """Put the model's logged `code_paths` (`<model dir>/code`) first on sys.path, as MLflow's loaders do.

    A model pickled from the user's own training code references its classes by module name; they
    must be importable before the model (or its baked pickle) is loaded.
    """
    code = conf.get("code")
    if code:
        path = str(model_dir / code)
        if path not in sys.path:
            sys.path.insert(0, path)


def _load_sklearn(model_dir: Path, conf: Mapping[str, Any], cache_dir: Path | None = None) -> Any:
    path = model_dir / conf["pickled_model"]
    fmt = conf.get("serialization_format", "cloudpickle")
    if cache_dir is not None and (cache_dir / "source.sha256").is_file():
        # Written at image build time from this very file (see bake_cache): skops.io imports all of
        # sklearn to list its trusted types (~3 s), a pickle of the same estimator loads in ms.
        if (cache_dir / "source.sha256").read_text().strip() == _sha256(path):
            with (cache_dir / "estimator.pkl").open("rb") as fh:
                return pickle.load(fh)  # made by our own image build
        log.warning("model cache in %s does not match %s; loading the original", cache_dir, path)
    if fmt == "skops":
        import skops.io

        return skops.io.load(path, trusted=conf.get("skops_trusted_types") or None)
    if fmt == "cloudpickle":
        import cloudpickle

        with path.open("rb") as fh:
            return cloudpickle.load(fh)
    if fmt == "pickle":
        with path.open("rb") as fh:
            return pickle.load(fh)  # the model is our own registered artifact
    raise ModelLoadError(f"unknown sklearn serialization format {fmt!r}")


def _smoke_batch(model_dir: Path, mlmodel: Mapping[str, Any], validator: Validator) -> Batch:
    """One row from the logged input example, else a row of neutral values per column type."""
    info = mlmodel.get("saved_input_example_info") or {}
    example_path = model_dir / info.get("artifact_path", "input_example.json")
    if example_path.is_file():
        try:
            example = json.loads(example_path.read_text())
            if isinstance(example, dict) and "data" in example:
                example = {"columns": example["columns"], "data": example["data"][:1]}
                return validator.split(example, where="input_example")
            if isinstance(example, list):
                return validator.records(example[:1], where="input_example")
        except (RequestError, ValueError, KeyError, TypeError) as exc:
            log.warning("input example not usable for the smoke test (%s); using neutral values", exc)
    neutral = {"boolean": False, "string": "", "binary": "", "datetime": "1970-01-01T00:00:00"}
    row = {c.name: neutral.get(c.type, 0) for c in validator.specs}
    return validator.records([row], where="smoke")


def _pyfunc_predictor(model_dir: Path, validator: Validator) -> Callable[[Batch], Any]:
    try:
        import mlflow.pyfunc
        import pandas  # noqa: F401
    except ImportError as exc:  # the lean image ships no MLflow
        raise ModelLoadError(
            "this model needs the pyfunc path (a non-sklearn flavor); build the image with --build-arg WITH_MLFLOW=1"
        ) from exc
    from mlflow.exceptions import MlflowException

    pyfunc_model = mlflow.pyfunc.load_model(str(model_dir))
    specs = validator.specs

    def predict(batch: Batch) -> Any:
        try:
            return pyfunc_model.predict(pyfunc_frame(batch, specs))
        except MlflowException as exc:
            # MLflow's own schema enforcement refused the input (e.g. a null in a long column, which
            # it cannot represent): a client error with MLflow's reason, as its scoring server answers.
            if "enforce schema" not in exc.message and exc.error_code != "INVALID_PARAMETER_VALUE":
                raise
            reason = exc.message.rsplit("Error: ", 1)[-1].strip()[:500]
            raise RequestError(
                422, "rejected_by_model", f"MLflow's schema enforcement refused the input: {reason}"
            ) from None

    return predict


def bake_cache(model_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> bool:
    """At image build: store the sklearn estimator as a pickle next to the hash of its source file."""
    model_dir, cache_dir = Path(model_dir), Path(cache_dir)
    conf = (_read_mlmodel(model_dir).get("flavors") or {}).get("sklearn")
    if not conf:
        return False
    _add_code_paths(model_dir, conf)
    estimator = _load_sklearn(model_dir, conf)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / "estimator.pkl").open("wb") as fh:
        pickle.dump(estimator, fh, protocol=pickle.HIGHEST_PROTOCOL)
    (cache_dir / "source.sha256").write_text(_sha256(model_dir / conf["pickled_model"]))
    return True


def load_model_dir(
    model_dir: str | os.PathLike[str],
    max_rows: int = 10_000,
    lineage: dict | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load a local MLflow model directory (as `download_artifacts("models:/...")` produces), validate
    batches of at most `max_rows` rows against its signature, and smoke-test it on the signature's example.

    Raises ModelLoadError when there is no MLmodel or no column signature, the format is unknown, the model
    needs pandas/MLflow the image lacks, or the smoke prediction fails."""
    started = time.perf_counter()
    model_dir = Path(model_dir)
    mlmodel = _read_mlmodel(model_dir)
    columns = _signature_columns(mlmodel)
    flavors = mlmodel.get("flavors") or {}
    sk_conf = flavors.get("sklearn")
    pyfunc_conf = flavors.get("python_function") or {}

    flavor = "sklearn" if sk_conf else str(pyfunc_conf.get("loader_module", "python_function"))
    predict_proba_batch: Callable[[Batch], Any] | None = None
    classes: list[Any] | None = None
    if sk_conf:
        _add_code_paths(model_dir, sk_conf)
        estimator = _load_sklearn(model_dir, sk_conf, Path(cache_dir) if cache_dir else None)
        try:
            plan = sklearn_native.plan(estimator, columns, max_rows, pyfunc_conf.get("predict_fn") or "predict")
        except sklearn_native.NeedsPandas as exc:
            raise ModelLoadError(f"{exc}; build the image with --build-arg WITH_MLFLOW=1") from exc
        validator, predict_batch, evaluator = plan.validator, plan.predict, plan.evaluator
        predict_proba_batch, classes = plan.predict_proba, plan.classes
        path = "sklearn-native"
    else:
        validator = Validator(columns, max_rows=max_rows)
        predict_batch = _pyfunc_predictor(model_dir, validator)
        evaluator, path = "mlflow pyfunc", "pyfunc"

    merged = {key: os.environ.get(env) or None for key, env in LINEAGE_ENV.items()}
    merged["run_id"] = merged["run_id"] or mlmodel.get("run_id")
    for key, value in (lineage or {}).items():
        merged[key] = merged.get(key) or value
    model = LoadedModel(
        validator=validator,
        predict_batch=predict_batch,
        flavor=flavor,
        predict_path=path,
        lineage=merged,
        smoke=_smoke_batch(model_dir, mlmodel, validator),
        predict_proba_batch=predict_proba_batch,
        classes=classes,
        extra={
            "mlflow_version": mlmodel.get("mlflow_version"),
            "model_uuid": mlmodel.get("model_uuid"),
            "evaluator": evaluator,
        },
    )
    try:
        model.smoke_test()
    except Exception as exc:
        raise ModelLoadError(f"smoke prediction failed: {exc}") from exc
    model.load_seconds = time.perf_counter() - started
    log.info(
        "model loaded: flavor=%s path=%s evaluator=%s columns=%d in %.2fs",
        flavor,
        path,
        evaluator,
        len(columns),
        model.load_seconds,
    )
    return model


def fetch_model(model_uri: str, tracking_uri: str | None = None, dst: str | None = None) -> tuple[Path, dict]:
    """Download `models:/NAME@alias` (or /VERSION, runs:/...) with MLflow's client; return dir + lineage.

    Raises ModelLoadError when the MLflow client is not installed (the lean image)."""
    try:
        import mlflow
        from mlflow import MlflowClient
    except ImportError as exc:
        raise ModelLoadError(
            "MODEL_URI needs the MLflow client; build the image with --build-arg WITH_MLFLOW=1 "
            "or bake the model in with --build-arg MODEL_DIR=..."
        ) from exc
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    lineage: dict[str, str | None] = {}
    if model_uri.startswith("models:/"):
        client = MlflowClient()
        ref = model_uri[len("models:/") :].strip("/")
        if "@" in ref:
            name, alias = ref.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, version = ref.split("/", 1)
            mv = client.get_model_version(name, version)
        lineage = {"model_name": mv.name, "model_version": str(mv.version), "run_id": mv.run_id}
        tags = dict(mv.tags or {})
        if mv.run_id:
            run = client.get_run(mv.run_id)
            tags = {**run.data.params, **run.data.tags, **tags}
        lineage["data_version"] = tags.get("data_version") or tags.get("flightdeck.data_version")
        lineage["git_sha"] = tags.get("git_sha") or tags.get("mlflow.source.git.commit")
    dst = dst or tempfile.mkdtemp(prefix="flightdeck-model-")
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dst)
    return Path(local), lineage


if __name__ == "__main__":  # image build step: python -m serving.model MODEL_DIR CACHE_DIR
    import sys

    logging.basicConfig(level=logging.INFO)
    src, cache = sys.argv[1], sys.argv[2]
    baked = bake_cache(src, cache)
    loaded = load_model_dir(src, cache_dir=cache if baked else None)
    print(f"baked model ok: flavor={loaded.flavor} path={loaded.predict_path} cache={baked}")
