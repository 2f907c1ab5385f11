"""MLflow logging of a training run, idempotent per Airflow dag run.

A retried task first looks its run up by tags (dag id, run id, data version, params hash): a complete
run is reused as is, an incomplete one (the previous attempt died half way) is deleted with its nested
runs before a fresh one is made, so the experiment never shows duplicates.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

from flightdeck import settings as settings_mod
from flightdeck.data.schema import DatasetSchema, Task
from flightdeck.pipeline_config import DatasetConfig
from flightdeck.reachability import ServiceUnavailable, ping_mlflow

log = logging.getLogger(__name__)

# Tag names (the deploy side reads the version tags; see the README of the retrain pipeline).
TAG_DATASET = "dataset"
TAG_DATA_VERSION = "data_version"
TAG_HOLDOUT_VERSION = "holdout_version"
TAG_PARAMS_HASH = "params_hash"
TAG_GIT_SHA = "git_sha"
TAG_DAG_ID = "airflow.dag_id"
TAG_RUN_ID = "airflow.run_id"
TAG_ROLE = "flightdeck.role"
TAG_MODEL_URI = "flightdeck.model_uri"
TAG_COMPLETE = "flightdeck.complete"
TAG_OUTCOME = "flightdeck.outcome"
TAG_TASK = "flightdeck.task"
TAG_NAMESPACE = "flightdeck.namespace"  # the lineage's namespace ("" = the main one): what a drift retrain reruns

# What the serving image needs to load the model: the sklearn stack pinned to what trained it, and
# the flask-free MLflow client. Giving the list also skips MLflow's ~12 s requirement inference.
SERVING_PACKAGES = ("mlflow-skinny", "scikit-learn", "numpy", "scipy", "pandas", "skops", "joblib")


def pip_requirements() -> list[str]:
    """`name==version` for each of SERVING_PACKAGES, pinned to what is installed here (the training env)."""
    return [f"{name}=={pkg_version('mlflow' if name == 'mlflow-skinny' else name)}" for name in SERVING_PACKAGES]


@dataclass(frozen=True)
class RunContext:
    """Who trained a run on what: the Airflow DAG and run, the DVC md5s of dataset and holdout, the params hash."""

    dag_id: str
    run_id: str
    data_version: str
    holdout_version: str
    params_hash: str

    def tags(self, cfg: DatasetConfig) -> dict[str, str]:
        """The MLflow run tags that make a run findable by data and params (find_runs, already_trained)."""
        return {
            TAG_DATASET: cfg.name,
            TAG_DATA_VERSION: self.data_version,
            TAG_HOLDOUT_VERSION: self.holdout_version,
            TAG_PARAMS_HASH: self.params_hash,
            TAG_DAG_ID: self.dag_id,
            TAG_RUN_ID: self.run_id,
        }


def client():
    """An MlflowClient on the configured server, after a fast health probe that names the service."""
    import mlflow
    from mlflow.tracking import MlflowClient

    # The client's default retries last minutes; Airflow's task retries are the retry policy here.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    uri = settings_mod.load().mlflow_uri
    ping_mlflow(uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def mlflow_call(what: str):
    """Context manager turning MLflow client errors into ServiceUnavailable naming MLflow."""
    import contextlib

    import requests
    from mlflow.exceptions import MlflowException

    @contextlib.contextmanager
    def _guard():
        try:
            yield
        except (requests.RequestException, MlflowException) as exc:
            # 4xx answers are our own mistakes (bad filter, missing alias): not an outage.
            if isinstance(exc, MlflowException) and exc.get_http_status_code() < 500:
                raise
            raise ServiceUnavailable("MLflow", settings_mod.load().mlflow_uri, f"{what}: {exc}") from exc

    return _guard()


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def find_runs(cl, cfg: DatasetConfig, tags: dict[str, str], *, only_complete: bool = False) -> list[Any]:
    """Training runs of `cfg`'s experiment carrying every one of `tags` (newest first, at most 50); with
    `only_complete`, only runs that went through the gates. `cl`: an MlflowClient (call inside mlflow_call)."""
    exp = cl.get_experiment_by_name(cfg.experiment_name)
    if exp is None:
        return []
    clauses = [f"tags.`{k}` = {_quote(v)}" for k, v in sorted(tags.items())]
    clauses.append(f"tags.`{TAG_ROLE}` = 'training'")
    if only_complete:
        clauses.append(f"tags.`{TAG_COMPLETE}` = 'true'")
    return list(cl.search_runs([exp.experiment_id], " and ".join(clauses), max_results=50))


def already_trained(cfg: DatasetConfig, data_version: str, params_hash: str) -> Any | None:
    """A training run on exactly this data and params that went through the gates, if any."""
    cl = client()
    with mlflow_call("search runs"):
        runs = find_runs(
            cl,
            cfg,
            {TAG_DATASET: cfg.name, TAG_DATA_VERSION: data_version, TAG_PARAMS_HASH: params_hash},
            only_complete=True,
        )
    gated = [r for r in runs if r.data.tags.get(TAG_OUTCOME)]
    return gated[0] if gated else None


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list | bool) or value is None else str(value)


def model_signature(schema: DatasetSchema, labels: Any) -> Any:
    """The MLflow signature: one ColSpec per feature with the schema's type (strings stay strings,
    nullable columns are optional), and the prediction's type (the labels' for classification, double
    for regression)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec(c.type.mlflow_type, c.name, required=not c.nullable) for c in schema.features])
    if schema.task is Task.REGRESSION:
        out_type = "double"
    else:
        out_type = schema.by_name[schema.target].type.mlflow_type
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec(out_type)]))


def _log_model(model: Any, *, signature: Any, example: Any, code_paths: list[str] | None) -> Any:
    """Log the model in the flavor that fits it: sklearn (skops, trusting exactly the types it holds;
    cloudpickle when it carries user code) or pyfunc for a PythonModel."""
    import mlflow
    from mlflow.pyfunc import PythonModel

    common = {
        "name": "model",
        "signature": signature,
        "input_example": example,
        "pip_requirements": pip_requirements(),
        "code_paths": code_paths or None,
    }
    with warnings.catch_warnings():
        # Saving walks module attributes; inside an Airflow worker that trips ~1000 deprecation (Future)
        # warnings from airflow.utils shims, which drown the task log.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if isinstance(model, PythonModel):
            return mlflow.pyfunc.log_model(python_model=model, **common)
        if code_paths:
            return mlflow.sklearn.log_model(model, serialization_format="cloudpickle", **common)
        import skops.io

        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
        return mlflow.sklearn.log_model(
            model, serialization_format="skops", skops_trusted_types=trusted or None, **common
        )


def _code_paths(folder: Path | None) -> list[str] | None:
    """The modules and packages in the user's code folder: MLflow copies each into the model's `code/`,
    which its loaders (and the model server) put on sys.path, so `import <module>` works there too."""
    if folder is None:
        return None
    return sorted(
        str(p)
        for p in folder.iterdir()
        if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").is_file())) and not p.name.startswith(".")
    )


def log_training_run(cfg: DatasetConfig, workspace: Path, ctx: RunContext) -> dict[str, Any]:
    """Log the outputs of `dvc repro` in `workspace` as one MLflow run (reused if already complete)."""
    import sys

    import joblib
    import mlflow
    import pandas as pd

    from flightdeck.data.schema import example_frame, target_values
    from flightdeck.monitoring.baseline import PROFILE_ARTIFACT
    from flightdeck.stages.train import code_path

    cl = client()
    tags = ctx.tags(cfg)
    with mlflow_call("look up runs of this dag run"):
        for run in find_runs(cl, cfg, tags):
            if run.data.tags.get(TAG_COMPLETE) == "true":
                log.info("reusing complete MLflow run %s of this dag run (retry)", run.info.run_id)
                return _summary(run.info.run_id, run.data.tags[TAG_MODEL_URI], run.data.metrics)
            _delete_with_children(cl, run)

    assert cfg.schema is not None
    schema = cfg.schema
    prepared = json.loads((workspace / "prepared" / "schema.json").read_text())
    search = json.loads((workspace / "model" / "search.json").read_text())
    scores = json.loads((workspace / "metrics.json").read_text())
    user_code = code_path(cfg.params["train"])
    if user_code is not None and str(user_code) not in sys.path:
        sys.path.insert(0, str(user_code))
    model = joblib.load(workspace / "model" / "model.joblib")
    holdout = pd.read_parquet(workspace / "prepared" / "holdout.parquet")
    example = example_frame(holdout, schema)
    signature = model_signature(schema, target_values(holdout, schema))
    params: dict[str, str] = {}
    _flatten("", cfg.params, params)

    with mlflow_call("log the training run"):
        mlflow.set_experiment(cfg.experiment_name)
        run_name = f"{cfg.name}-{ctx.data_version[:8]}-{ctx.run_id[-19:]}"
        run_tags = {
            **tags,
            TAG_GIT_SHA: settings_mod.git_sha(),
            TAG_ROLE: "training",
            TAG_TASK: schema.task.value,
            TAG_NAMESPACE: cfg.namespace,
        }
        with mlflow.start_run(run_name=run_name, tags=run_tags) as run:
            mlflow.log_params(params)
            mlflow.log_params({f"best.{k}": str(v) for k, v in search["best_params"].items()})
            mlflow.log_param("model", search["model"])
            for i, cand in enumerate(search["candidates"]):
                with mlflow.start_run(run_name=f"candidate-{i}", nested=True, tags={**tags, TAG_ROLE: "candidate"}):
                    mlflow.log_params({k: str(v) for k, v in cand["params"].items()})
                    mlflow.log_metrics(
                        {
                            f"cv_{cand['scoring']}": cand["mean_score"],
                            f"cv_{cand['scoring']}_std": cand["std_score"],
                        }
                    )
            extra = {"train_rows": float(prepared["train_rows"])}
            if search.get("best_cv_score") is not None:
                extra["best_cv_score"] = float(search["best_cv_score"])
            mlflow.log_metrics({**scores, **extra})
            for name in ("prepared/schema.json", "model/search.json", "metrics.json", "params.yaml"):
                mlflow.log_artifact(str(workspace / name))
            # what the version is watched against once live (monitoring.baseline)
            mlflow.log_artifact(str(workspace / PROFILE_ARTIFACT), artifact_path=str(Path(PROFILE_ARTIFACT).parent))
            info = _log_model(model, signature=signature, example=example, code_paths=_code_paths(user_code))
            mlflow.set_tags({TAG_MODEL_URI: info.model_uri, TAG_COMPLETE: "true"})
            run_id = run.info.run_id
    log.info(
        "MLflow run %s (experiment %s): %s; model %s",
        run_id,
        cfg.experiment_name,
        ", ".join(f"{k}={v:.4f}" for k, v in sorted(scores.items())),
        info.model_uri,
    )
    return _summary(run_id, info.model_uri, scores)


def is_pyfunc(model: Any) -> bool:
    """True for a model `load_model` returned through MLflow's pyfunc loader."""
    return type(model).__module__.startswith("mlflow.pyfunc")


def load_model(model_uri: str) -> Any:
    """A registered model to score in-process: the sklearn object when the flavor is sklearn (so
    predict_proba is there for roc_auc/log_loss), else the pyfunc model."""
    import mlflow
    from mlflow.models import get_model_info

    if "sklearn" in (get_model_info(model_uri).flavors or {}):
        return mlflow.sklearn.load_model(model_uri)
    return mlflow.pyfunc.load_model(model_uri)


def _summary(run_id: str, model_uri: str, metrics: dict[str, float]) -> dict[str, Any]:
    return {"mlflow_run_id": run_id, "model_uri": model_uri, "metrics": dict(metrics)}


def _delete_with_children(cl, run) -> None:
    children = cl.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    for child in children:
        cl.delete_run(child.info.run_id)
    cl.delete_run(run.info.run_id)
    log.warning(
        "deleted incomplete MLflow run %s (%d nested) left by an earlier attempt",
        run.info.run_id,
        len(children),
    )


def set_outcome(mlflow_run_id: str, outcome: str) -> None:
    """Tag the run with how the retrain ended (`outcome`). Raises ServiceUnavailable when MLflow does not answer."""
    cl = client()
    with mlflow_call("tag the run outcome"):
        cl.set_tag(mlflow_run_id, TAG_OUTCOME, outcome)
