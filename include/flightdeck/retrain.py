"""The retrain flow's steps as plain functions: the DAG (dags/retrain.py) wires one task per step, and
`python -m flightdeck.retrain run` chains the same functions as a script (the benchmark's baseline).

Each step takes and returns JSON-able dicts (XCom), re-reads its configuration and rebuilds the DVC
workspace from S3 when needed, so any worker can run any step and a retried step is idempotent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flightdeck import pipeline_config, settings
from flightdeck.errors import FlightdeckError

if TYPE_CHECKING:
    from flightdeck.gates import ChampionRef

# Heavy modules (pandas, sklearn, mlflow, dvc, the Amazon provider) are imported inside the steps: the
# DAG file imports this module, and DAG parsing must stay fast and do no work.

log = logging.getLogger(__name__)


class DvcReproFailed(FlightdeckError, RuntimeError):
    """`dvc repro` failed; the message carries DVC's error (the failing stage and its exit code)."""


class ModelNotScorable(FlightdeckError, RuntimeError):
    """The champion or the challenger cannot be scored on the run's holdout (the schema changed)."""


def run_config(synced: dict[str, Any]) -> pipeline_config.DatasetConfig:
    """The run's configuration with the schema sync resolved (declared, stored or inferred)."""
    from flightdeck.data.schema import DatasetSchema

    cfg = pipeline_config.load(
        synced["dataset"], model_name=synced.get("model_name"), namespace=synced.get("namespace")
    )
    block = synced.get("schema")
    if block and cfg.schema is None:
        cfg = cfg.with_schema(
            DatasetSchema.from_params(block["schema"], target=block["target"], task=block["task"], where="synced")
        )
    return cfg


def sync_data(
    dataset: str | None = None,
    *,
    model_name: str | None = None,
    namespace: str | None = None,
    aws_conn_id: str | None = "aws_default",
    triggering_asset_events: Any = None,
) -> dict[str, Any]:
    """Step 1: validate landed batches (quarantine bad ones), merge, `dvc push`, report the data version.

    Empty strings (the DAG Params' defaults) mean "as configured". Names are strings whatever they look
    like ("2026", "None"); anything else is a caller's bug (a template rendered as a native object).
    A run started by the monitor's drift Asset event (Airflow passes `triggering_asset_events`) and given
    no names retrains the lineage that drifted: the event's dataset, namespace and model name.
    """
    if not (dataset or model_name or namespace):
        dataset, model_name, namespace = drifted_lineage(triggering_asset_events) or (dataset, model_name, namespace)
    for label, value in (("dataset", dataset), ("model_name", model_name), ("namespace", namespace)):
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"sync_data: {label} must be a string, got {type(value).__name__} {value!r} "
                "(was a template rendered as a native Python object?)"
            )
    from flightdeck.data import sync as data_sync
    from flightdeck.data.store import ObjectStore

    cfg = pipeline_config.load(dataset or None, model_name=model_name or None, namespace=namespace or None)
    return data_sync.sync(cfg, ObjectStore(aws_conn_id=aws_conn_id))


def drifted_lineage(triggering_asset_events: Any) -> tuple[str, str, str] | None:
    """(dataset, model_name, namespace) of the first drifted model in the monitor's drift Asset events (the
    extra of flightdeck.monitoring.steps.drift_event), or None when no such event started the run."""
    from flightdeck.monitoring.steps import DRIFT_ASSET_URI

    for asset, events in (triggering_asset_events or {}).items():
        if getattr(asset, "uri", "").rstrip("/") != DRIFT_ASSET_URI:
            continue
        for event in events:
            for model in (getattr(event, "extra", None) or {}).get("models", []):
                if model.get("dataset"):
                    log.info("started by drift on %s v%s", model.get("model_name"), model.get("model_version"))
                    return str(model["dataset"]), str(model.get("model_name") or ""), str(model.get("namespace") or "")
    return None


def has_changes(synced: dict[str, Any], force: bool = False) -> bool:
    """Short-circuit: False when this data version and these params already went through the gates."""
    if not synced.get("data_version"):
        log.warning("dataset %s has no data yet (land a batch first): nothing to train", synced["dataset"])
        return False
    if synced.get("holdout_cut"):
        log.warning("a new holdout was cut from this data: the champion comparison starts over on it")
    if synced["new_batches"]:
        log.info(
            "new data: %d batch(es) -> candidate data_version=%s",
            len(synced["new_batches"]),
            synced["data_version"],
        )
        return True
    from flightdeck import tracking

    cfg = run_config(synced)
    done = tracking.already_trained(cfg, synced["data_version"], synced["params_hash"])
    if done is None:
        log.info(
            "data_version=%s with params %s was never trained: training",
            synced["data_version"],
            synced["params_hash"],
        )
        return True
    if force:
        log.info("unchanged data and params, but force=True: training again")
        return True
    log.info(
        "unchanged: data_version=%s and params %s were trained by MLflow run %s (outcome %s); "
        "skipping the rest of the run",
        synced["data_version"],
        synced["params_hash"],
        done.info.run_id,
        done.data.tags.get(tracking.TAG_OUTCOME),
    )
    return False


def check_data(synced: dict[str, Any], *, aws_conn_id: str | None = "aws_default") -> bool:
    """Gate: data checks on the candidate dataset. Pass -> it becomes the current version; fail ->
    its new batches go to quarantine with the reason and the dataset stays as it was."""
    from flightdeck import gates
    from flightdeck.data import sync as data_sync
    from flightdeck.data.schema import read_typed
    from flightdeck.data.store import ObjectStore

    cfg = run_config(synced)
    assert cfg.schema is not None
    store = ObjectStore(aws_conn_id=aws_conn_id)
    ws = data_sync.Workspace(cfg, store)
    ws.ensure()
    ws.checkout(synced["data_version"], synced["holdout_version"], synced["size"], synced["holdout_size"])
    for key, counts in (synced.get("unseen_categories") or {}).items():
        log.warning("batch %s brought feature values outside the schema's categories: %s", key, counts)
    result = gates.check_data(
        read_typed(ws.dataset_path, cfg.schema),
        read_typed(ws.holdout_path, cfg.schema),
        cfg.schema,
        cfg.params["gates"]["data"],
    )
    if result.passed:
        log.info("GATE PASSED: %s", result.message)
        data_sync.commit(cfg, synced, store)
        return True
    log.error("GATE FAILED: %s", result.message)
    moved = data_sync.reject(cfg, synced, result.message, store)
    log.error("dataset %s stays at %s; quarantined %s", cfg.name, synced["previous_version"], moved)
    return False


def _dvc_logs_to_this_process() -> None:
    """Point DVC's console handlers at this process's stdout and stderr (warnings and errors).

    `import dvc` binds them to the streams of the process that imported it: with the executor's preload
    (LocalExecutor or a Celery worker) that is a parent of this task process, so DVC's lines would miss the
    task log, and under Celery the parent's stream can be closed here, where DVC's handler raises on a failed
    write and fails the stage ("I/O operation on closed file", seen on a restarted worker)."""
    from dvc.logger import LoggerHandler

    for name in ("dvc", "dvc_objects", "dvc_data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, LoggerHandler):
                # assigned, not setStream(): that flushes the old stream first, which may be closed
                handler.stream = sys.stderr if handler.level >= logging.WARNING else sys.stdout


def run_dvc_repro(root: Any) -> None:
    """`dvc repro` in the workspace, through DVC's Python API in this process (the stage commands still
    run as DVC's subprocesses): DVC logs each stage ("Running stage 'prepare':", its command) and the
    stages' own output goes to this process's stdout, so both land in the task's log. In-process saves
    the start of a second interpreter that imports DVC again (the executor preloads it).

    Raises DvcReproFailed, naming DVC's error (the failing stage and its exit code), when a stage fails.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    _dvc_logs_to_this_process()
    log.info("running dvc repro in %s", root)
    saved_path = os.environ.get("PATH", "")
    # Stage commands call `python`: it must be this interpreter (the venv's), wherever PATH points.
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), saved_path])
    try:
        # as the CLI does it, from the workspace: stages are named as in dvc.yaml ('prepare'), not by path
        with contextlib.chdir(root), Repo(".") as repo:
            stages = repo.reproduce()
    except DvcException as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise DvcReproFailed(f"dvc repro failed in {root}: {exc}{cause}") from exc
    finally:
        os.environ["PATH"] = saved_path
    log.info("dvc repro ran %d stage(s): %s", len(stages), ", ".join(s.addressing for s in stages) or "none")


def train(
    synced: dict[str, Any],
    *,
    dag_id: str = "manual",
    run_id: str | None = None,
    aws_conn_id: str | None = "aws_default",
    runner: str | None = None,
) -> dict[str, Any]:
    """Step 2: the DVC pipeline (prepare -> train -> evaluate) and one MLflow run for its outputs, on the
    runner params.yaml `train.runner` names when this step starts (`runner` overrides it): `worker` here
    (train_in_process), `container` in a local container of the train image, `ecs` as an ECS task
    (flightdeck.train_runner). Returns the same summary dict from each: mlflow_run_id, model_uri, metrics,
    dataset, namespace, model_name, data_version, holdout_version, holdout_size, params_hash, schema, dag_id,
    run_id.

    Raises DvcReproFailed, ServiceUnavailable (S3 or MLflow down), pipeline_config.ConfigError (unknown
    runner; user code from train.code_path off the worker), train_runner.TrainContainerFailed /
    TrainTaskFailed (the step failed off the worker)."""
    from flightdeck import train_runner

    choice = train_runner.resolve_runner(runner)
    run_id = run_id or f"manual__{uuid.uuid4().hex[:12]}"
    if choice is train_runner.Runner.WORKER:
        return train_in_process(synced, dag_id=dag_id, run_id=run_id, aws_conn_id=aws_conn_id)
    code_path = run_config(synced).params["train"].get("code_path")
    if code_path:
        raise pipeline_config.ConfigError(
            f"train.code_path {code_path!r} (your training code) is not in the train image: train this dataset "
            f"with train.runner: worker, or bake the code into the image (train.runner is {choice.value})"
        )
    request = train_runner.TrainRequest(synced=synced, dag_id=dag_id, run_id=run_id, git_sha=settings.git_sha())
    log.info("train.runner %s: training off the worker (request %s)", choice.value, request.token)
    if choice is train_runner.Runner.CONTAINER:
        return train_runner.train_in_container(request, aws_conn_id=aws_conn_id)
    return train_runner.train_on_ecs(request, aws_conn_id=aws_conn_id)


def train_in_process(
    synced: dict[str, Any],
    *,
    dag_id: str = "manual",
    run_id: str | None = None,
    aws_conn_id: str | None = "aws_default",
) -> dict[str, Any]:
    """The train step in this process (the `worker` runner, and what the train container runs): rebuild the
    workspace at the run's data version, `dvc repro`, log the MLflow run (tracking.log_training_run). Returns
    the summary dict train() documents. Raises DvcReproFailed and ServiceUnavailable."""
    from flightdeck import tracking
    from flightdeck.data import sync as data_sync
    from flightdeck.data.store import ObjectStore

    cfg = run_config(synced)
    tracking.client()  # fail fast, naming MLflow, before spending time on training
    ws = data_sync.Workspace(cfg, ObjectStore(aws_conn_id=aws_conn_id))
    ws.ensure()
    ws.checkout(synced["data_version"], synced["holdout_version"], synced["size"], synced["holdout_size"])
    run_dvc_repro(ws.root)
    ctx = tracking.RunContext(
        dag_id=dag_id,
        run_id=run_id or f"manual__{uuid.uuid4().hex[:12]}",
        data_version=synced["data_version"],
        holdout_version=synced["holdout_version"],
        params_hash=synced["params_hash"],
    )
    summary = tracking.log_training_run(cfg, ws.root, ctx)
    return {
        **summary,
        "dataset": cfg.name,
        "namespace": cfg.namespace,
        "model_name": cfg.model_name,
        "data_version": ctx.data_version,
        "holdout_version": ctx.holdout_version,
        "holdout_size": synced["holdout_size"],
        "params_hash": ctx.params_hash,
        "schema": synced["schema"],
        "dag_id": ctx.dag_id,
        "run_id": ctx.run_id,
    }


def register(trained: dict[str, Any]) -> dict[str, Any]:
    """Step 3: a registry version for the run's model, alias `challenger`, lineage tags."""
    from flightdeck import model_registry, tracking

    tags = {
        tracking.TAG_DATASET: trained["dataset"],
        tracking.TAG_DATA_VERSION: trained["data_version"],
        tracking.TAG_HOLDOUT_VERSION: trained["holdout_version"],
        tracking.TAG_PARAMS_HASH: trained["params_hash"],
        tracking.TAG_GIT_SHA: settings.git_sha(),
        tracking.TAG_DAG_ID: trained["dag_id"],
        tracking.TAG_RUN_ID: trained["run_id"],
        "mlflow_run_id": trained["mlflow_run_id"],
    }
    version = model_registry.register(trained["model_name"], trained["mlflow_run_id"], trained["model_uri"], tags)
    return {**trained, "version": version}


def _reject(registered: dict[str, Any], result: Any) -> None:
    from flightdeck import model_registry, tracking

    model_registry.tag_version(
        registered["model_name"],
        registered["version"],
        {**model_registry.gate_tags(result), model_registry.TAG_PROMOTION: "rejected"},
    )
    tracking.set_outcome(registered["mlflow_run_id"], "rejected")


def threshold_gate(registered: dict[str, Any]) -> bool:
    """Gate: the holdout metrics against the absolute floors in params (gates.thresholds)."""
    from flightdeck import gates, model_registry

    cfg = run_config(registered)
    result = gates.check_thresholds(registered["metrics"], cfg.params["gates"]["thresholds"])
    if not result.passed:
        log.error("GATE FAILED: %s (v%s stays a challenger)", result.message, registered["version"])
        _reject(registered, result)
        return False
    log.info("GATE PASSED: %s", result.message)
    model_registry.tag_version(registered["model_name"], registered["version"], model_registry.gate_tags(result))
    return True


def champion_reference(
    name: str, version: str, records: Any = None, *, aws_conn_id: str | None = "aws_default"
) -> ChampionRef:
    """The version challenger `version` must beat (gates.champion_reference): the `champion` alias; when
    MLflow dropped it (its version was deleted), what the deployment records say is live, else `previous`.
    Raises gates.ChampionUnknown when a live version is gone from the registry. `records`: a
    deploy.records.RecordStore (default: the platform's deployment bucket through `aws_conn_id`)."""
    from flightdeck import gates, model_registry

    champion = model_registry.alias_version(name, model_registry.CHAMPION)
    if champion is not None:
        return gates.champion_reference(
            name, version, champion_alias=champion, live={}, previous_alias=None, registered=lambda v: True
        )
    from flightdeck.deploy import records as rec

    if records is None:
        from flightdeck import s3

        records = rec.RecordStore(s3.client(aws_conn_id), settings.load().deploy_bucket)
    ref = gates.champion_reference(
        name,
        version,
        champion_alias=None,
        live=rec.live_versions(records, name),
        previous_alias=model_registry.alias_version(name, model_registry.PREVIOUS),
        registered=lambda v: model_registry.version_exists(name, v),
    )
    if ref.version is not None:
        log.warning("%s has no champion alias: comparing v%s against v%s (%s)", name, version, ref.version, ref.source)
    return ref


def champion_gate(registered: dict[str, Any], *, aws_conn_id: str | None = "aws_default", records: Any = None) -> bool:
    """Gate: challenger vs champion, both loaded from the registry and scored on the same holdout.

    The champion is the `champion` alias; when MLflow has dropped it (the version was deleted) it is
    what the deployment records say is live, else `previous`; a live version gone from the registry
    fails the gate with that reason (gates.ChampionUnknown) instead of promoting on thresholds alone.
    When the champion was judged on another holdout (a new one was cut since), the comparison starts
    over: the challenger is gated on the thresholds alone, and the log says so.

    Raises gates.ChampionUnknown as above, ModelNotScorable when either version cannot be scored on the
    holdout (the schema changed), and ServiceUnavailable when MLflow or S3 does not answer.
    """
    from flightdeck import gates, model_registry, modeling, tracking
    from flightdeck.data import sync as data_sync
    from flightdeck.data.schema import model_frame, natural_frame, read_typed, target_values
    from flightdeck.data.store import ObjectStore

    cfg = run_config(registered)
    assert cfg.schema is not None
    name, version = registered["model_name"], registered["version"]
    rule = cfg.params["gates"]["champion"]
    metric = rule["metric"]
    try:
        ref = champion_reference(name, version, records, aws_conn_id=aws_conn_id)
    except gates.ChampionUnknown as exc:
        log.error("GATE REFUSED: %s", exc)
        model_registry.tag_version(
            name, version, {"gate.champion": "refused", "gate.champion.message": str(exc)[:4900]}
        )
        raise
    champion = ref.version
    champion_score = None
    challenger_score = float(registered["metrics"][metric])
    if champion is not None and champion != version:
        champion_holdout = model_registry.version_tags(name, champion).get(tracking.TAG_HOLDOUT_VERSION)
        if champion_holdout and champion_holdout != registered["holdout_version"]:
            log.warning(
                "champion v%s was judged on holdout %s, this run on %s (a new holdout was cut): the champion "
                "comparison is reset, v%s is gated on the thresholds alone",
                champion,
                champion_holdout,
                registered["holdout_version"],
                version,
            )
            champion = None
    if champion is not None and champion != version:
        ws = data_sync.Workspace(cfg, ObjectStore(aws_conn_id=aws_conn_id))
        ws.ensure()
        ws.checkout_file(data_sync.HOLDOUT_FILE, registered["holdout_version"], registered.get("holdout_size"))
        holdout = read_typed(ws.holdout_path, cfg.schema)
        y = target_values(holdout, cfg.schema)
        scores = {}
        with tracking.mlflow_call("load the champion and the challenger"):
            for label, v in (("champion", champion), ("challenger", version)):
                model = tracking.load_model(f"models:/{name}/{v}")
                # A pyfunc model gets what MLflow's schema enforcement accepts (int64 integers, bools),
                # a scikit-learn one the frame it was trained on.
                X = (
                    natural_frame(holdout, cfg.schema, cfg.schema.features)
                    if tracking.is_pyfunc(model)
                    else model_frame(holdout, cfg.schema)
                )
                try:
                    scores[label] = modeling.metrics(model, X, y, cfg.task)[metric]
                except (KeyError, ValueError) as exc:
                    raise ModelNotScorable(
                        f"v{v} cannot be scored on this holdout ({exc}); the schema changed? "
                        "train under a new model name or promote by hand"
                    ) from exc
        champion_score, challenger_score = scores["champion"], scores["challenger"]
    result = gates.compare_champion(
        metric,
        challenger_score,
        champion_score,
        min_delta=float(rule["min_delta"]),
        challenger_version=version,
        champion_version=champion,
        champion_source=ref.source if champion is not None else "",
    )
    if not result.passed:
        log.error("GATE FAILED: %s; champion stays v%s", result.message, champion)
        _reject(registered, result)
        return False
    log.info("GATE PASSED: %s", result.message)
    model_registry.tag_version(name, version, model_registry.gate_tags(result))
    return True


def promote(registered: dict[str, Any]) -> dict[str, Any]:
    """Step 4: champion -> this version (former champion -> previous)."""
    from flightdeck import model_registry, tracking

    moved = model_registry.promote(registered["model_name"], registered["version"])
    tracking.set_outcome(registered["mlflow_run_id"], "promoted")
    return {
        **moved,
        "data_version": registered["data_version"],
        "dataset": registered["dataset"],
        "asset_uri": champion_asset_uri(registered["model_name"]),
    }


ANY_CHAMPION_ASSET_URI = "flightdeck://models/champion"  # updated on every promotion, of any model


def champion_asset_uri(model_name: str) -> str:
    """The Airflow Asset a deploy DAG can schedule on; an event is emitted on every promotion."""
    return f"flightdeck://models/{model_name}/champion"


def run_all(
    dataset: str | None = None,
    force: bool = False,
    *,
    model_name: str | None = None,
    namespace: str | None = None,
    aws_conn_id: str | None = "aws_default",
) -> dict[str, Any]:
    """Every step in order, as one plain process (what the DAG does, minus Airflow)."""
    timings: dict[str, float] = {}

    def timed(step: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        timings[step] = round(time.perf_counter() - start, 3)
        return out

    synced = timed("sync", sync_data, dataset, model_name=model_name, namespace=namespace, aws_conn_id=aws_conn_id)
    outcome: dict[str, Any] = {"synced": synced, "timings": timings, "outcome": "skipped"}
    if not timed("has_changes", has_changes, synced, force):
        return outcome
    if not timed("check_data", check_data, synced, aws_conn_id=aws_conn_id):
        outcome["outcome"] = "data_rejected"
        return outcome
    trained = timed(
        "train",
        train,
        synced,
        dag_id="script",
        run_id=f"script__{uuid.uuid4().hex[:12]}",
        aws_conn_id=aws_conn_id,
    )
    registered = timed("register", register, trained)
    outcome.update(registered=registered, outcome="rejected")
    if timed("threshold_gate", threshold_gate, registered) and timed(
        "champion_gate", champion_gate, registered, aws_conn_id=aws_conn_id
    ):
        outcome.update(promoted=timed("promote", promote, registered), outcome="promoted")
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flightdeck.retrain", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run every retrain step in this process")
    run.add_argument("--dataset", default=None)
    run.add_argument("--force", action="store_true")
    run.add_argument("--model-name", default=None)
    run.add_argument("--namespace", default=None)
    ws = sub.add_parser("workspace", help="prepare the dataset's DVC workspace at its current version")
    ws.add_argument("--dataset", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from flightdeck.provisioning import use_local_aws_default  # outside Airflow: the local platform's S3

    use_local_aws_default()
    if args.cmd == "run":
        result = run_all(args.dataset, args.force, model_name=args.model_name, namespace=args.namespace)
        print(json.dumps({k: result.get(k) for k in ("outcome", "timings")}, indent=2))
        return 0
    from flightdeck.data import sync as data_sync
    from flightdeck.data.store import ObjectStore

    cfg = pipeline_config.load(args.dataset)
    store = ObjectStore()
    workspace = data_sync.Workspace(cfg, store)
    workspace.ensure()
    manifest = data_sync.Manifest.read(store, cfg.key)
    if manifest and manifest.data_version and manifest.holdout_version:
        workspace.checkout(manifest.data_version, manifest.holdout_version, manifest.size, manifest.holdout_size)
    print(workspace.root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
