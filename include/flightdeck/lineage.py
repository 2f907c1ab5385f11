"""Lineage: what serves on a target now and where it came from; what changed between two deployments.

The chain is data version (DVC md5) + git sha -> MLflow run -> model version (+ aliases) -> image digest
-> deployment record -> live traffic. Each link is read from the system that owns it: the load balancer
(/version), the deploy target's backend (weights, health), the deployment records in S3, MLflow, and the
image registry (manifest digest, config labels). Nothing here imports Airflow: the CLI passes a plain
boto3 S3 client, the UI plugin one from S3Hook.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import requests

from flightdeck import settings as settings_mod
from flightdeck.deploy import records as rec
from flightdeck.deploy.targets import backend_for

log = logging.getLogger(__name__)

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


# ---- links ---------------------------------------------------------------------------------------------
def airflow_run_url(airflow_url: str, dag_id: str, run_id: str) -> str:
    """The Airflow UI page of one DAG run (ids URL-quoted)."""
    return f"{airflow_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def mlflow_run_url(mlflow_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run."""
    return f"{mlflow_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def mlflow_model_url(mlflow_url: str, name: str, version: str) -> str:
    """The MLflow UI page of one registered model version (name URL-quoted)."""
    return f"{mlflow_url.rstrip('/')}/#/models/{quote(name, safe='')}/versions/{version}"


# ---- one link of the chain each --------------------------------------------------------------------------
def live_version(lb_url: str, timeout: float = 5) -> dict[str, Any]:
    """GET /version through the load balancer: what actually answers traffic."""
    url = lb_url.rstrip("/") + "/version"
    try:
        # /version needs the endpoint's API key when keys are on (serving/auth.py)
        resp = requests.get(url, timeout=timeout, headers=settings_mod.serving_client_headers())
        resp.raise_for_status()
        return {"url": url, "ok": True, "version": resp.json(), "error": None}
    except (requests.RequestException, ValueError, OSError) as e:
        return {"url": url, "ok": False, "version": None, "error": str(e)}


def traffic(backend: Any) -> dict[str, Any]:
    """Weights and LB health of every revision the backend runs."""
    try:
        weights = backend.weights()
        health = {}
        for revision in weights:
            h = backend.target_health(revision)
            health[revision] = {
                "healthy": h.healthy,
                "total": h.total,
                "states": dict(h.states),
                "requests": h.requests,
                "errors_5xx": h.errors_5xx,
                "retried": h.retried,  # of the 5xx: retried by the LB on another revision, unseen by clients
            }
        return {"weights": weights, "health": health, "error": None}
    except Exception as e:  # a down engine/LB is part of the answer, not a crash
        return {"weights": {}, "health": {}, "error": f"{type(e).__name__}: {e}"}


def _split_ref(ref: str) -> tuple[str, str, str]:
    """registry/repo:tag or registry/repo@digest -> (registry, repo, tag-or-digest)."""
    if "@" in ref:
        name, reference = ref.split("@", 1)
    else:
        name, _, reference = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    registry, _, repo = name.partition("/")
    return registry, repo, reference


def registry_image(ref: str, timeout: float = 5) -> dict[str, Any]:
    """The registry's own answer for an image reference: manifest digest and the config's labels
    (plain registry v2 API; a registry that wants auth, like ECR, answers with an error here)."""
    registry, repo, reference = _split_ref(ref)
    base = f"http://{registry}/v2/{repo}"
    try:
        resp = requests.get(f"{base}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES}, timeout=timeout)
        resp.raise_for_status()
        manifest = resp.json()
        out: dict[str, Any] = {
            "ref": ref,
            "digest": resp.headers.get("Docker-Content-Digest", ""),
            "media_type": manifest.get("mediaType", ""),
            "labels": {},
            "error": None,
        }
        config = manifest.get("config", {}).get("digest")
        if config:
            blob = requests.get(f"{base}/blobs/{config}", timeout=timeout)
            blob.raise_for_status()
            out["labels"] = (blob.json().get("config") or {}).get("Labels") or {}
        return out
    except (requests.RequestException, ValueError) as e:
        return {"ref": ref, "digest": "", "labels": {}, "error": str(e)}


def model_lineage(name: str, version: str, tracking_uri: str, mlflow_url: str | None = None) -> dict[str, Any]:
    """MLflow's side: the version, its aliases and tags, and its training run (params, metrics,
    data version, git sha)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlflow_url = mlflow_url or tracking_uri
    out: dict[str, Any] = {
        "name": name,
        "version": str(version),
        "aliases": [],
        "version_tags": {},
        "run_id": "",
        "run_name": "",
        "experiment_id": "",
        "params": {},
        "metrics": {},
        "data_version": "",
        "git_sha": "",
        "dataset": "",
        "source": "",
        "url": mlflow_model_url(mlflow_url, name, str(version)),
        "run_url": "",
        "error": None,
        "missing": False,  # the registry no longer holds this version (deleted)
    }
    if not name or str(version) in ("", "0"):
        out["error"] = "no registered model version (an image deployed without a model)"
        return out
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        mv = client.get_model_version(name, str(version))
        rm = client.get_registered_model(name)
        out["aliases"] = sorted(a for a, v in (rm.aliases or {}).items() if str(v) == str(version))
        out["version_tags"] = dict(mv.tags or {})
        out["source"] = mv.source or ""
        out["run_id"] = mv.run_id or ""
        if mv.run_id:
            run = client.get_run(mv.run_id)
            tags = run.data.tags
            out.update(
                run_name=run.info.run_name or "",
                experiment_id=run.info.experiment_id,
                params=dict(run.data.params),
                metrics=dict(run.data.metrics),
                data_version=tags.get("data_version") or run.data.params.get("data_version", ""),
                git_sha=tags.get("git_sha") or tags.get("mlflow.source.git.commit", ""),
                dataset=tags.get("dataset", ""),
                run_url=mlflow_run_url(mlflow_url, run.info.experiment_id, mv.run_id),
            )
    except MlflowException as e:
        out["error"] = str(e)
        out["missing"] = e.error_code == "RESOURCE_DOES_NOT_EXIST"
    except Exception as e:  # status reports what it cannot read; it must not crash on it
        out["error"] = f"{type(e).__name__}: {e}"
    return out


# ---- records --------------------------------------------------------------------------------------------
def current_record(store: rec.RecordStore, target: str) -> rec.DeploymentRecord | None:
    """The record of the last finished deploy on the target (what the deploy code says serves), or None."""
    return store.current(target)


def find_record(store: rec.RecordStore, ref: str, target: str | None = None) -> rec.DeploymentRecord:
    """A record by deployment id or Airflow run id (on `target`, else on any target).

    Raises LookupError when no record matches."""
    dep_id = rec.deployment_id(ref)
    if target:
        found = store.get(target, dep_id)
        if found:
            return found
    for r in store.list(target):
        if r.deployment_id == dep_id or r.run_id == ref:
            return r
    raise LookupError(f"no deployment record {ref!r}" + (f" on target {target}" if target else ""))


def summarize(record: rec.DeploymentRecord, airflow_url: str) -> dict[str, Any]:
    """The fields of a record a person looks at first (history rows, status headers), JSON-ready:
    deployment_id, run_id, dag_id, target, outcome, strategy, revision, started_at, finished_at,
    model_name, model_version, model_run_id (MLflow), image (pinned ref), digest, weights {revision: percent}, rollback
    ({reason, failed_step, restored} or None), airflow_url."""
    st, spec = record.status, record.spec
    model = st.model
    image = st.image or {}
    rollback = st.rollback
    return {
        "deployment_id": spec.deployment_id,
        "run_id": spec.run_id,
        "dag_id": spec.dag_id,
        "target": spec.target,
        "outcome": st.outcome.value,
        "strategy": spec.strategy,
        "revision": st.revision,
        "started_at": st.started_at,
        "finished_at": st.finished_at or "",
        "model_name": model["name"] if model else "",
        "model_version": model["version"] if model else "",
        "model_run_id": model["run_id"] if model else "",
        "image": image.get("pinned", ""),
        "digest": image.get("digest", ""),
        "weights": dict(st.weights),
        "rollback": (
            {
                "reason": rollback.get("reason", ""),
                "failed_step": rollback.get("failed_step", ""),
                "restored": rollback.get("restored"),
            }
            if rollback
            else None
        ),
        "airflow_url": airflow_run_url(airflow_url, spec.dag_id, spec.run_id) if spec.run_id else "",
    }


def history(store: rec.RecordStore, target: str, airflow_url: str, limit: int = 50) -> list[dict[str, Any]]:
    """The target's history as an event log, newest first, at most `limit` events.

    One row per event (started, restarted, live, rolled_back, rollback_failed, failed, replaced): the
    summary of its run (see `summarize`) plus at (ISO-8601 UTC), event, reason (rolled_back/failed: why)
    and by / by_run_id (replaced: the deployment that went live instead). A run started again later
    shows its `restarted` and `live` at their new times; the run it displaced shows `replaced` then."""
    records = store.list(target)
    rows = []
    summaries: dict[str, dict[str, Any]] = {}
    for event, record in rec.events(records)[:limit]:
        if record.deployment_id not in summaries:
            summaries[record.deployment_id] = summarize(record, airflow_url)
        rows.append(
            {
                **summaries[record.deployment_id],
                "at": event.at,
                "event": event.kind.value,
                "reason": event.reason,
                "by": event.by,
                "by_run_id": event.by_run_id,
            }
        )
    return rows


# ---- the two questions ------------------------------------------------------------------------------
def _serving_record(store: rec.RecordStore, target: str, weights: Mapping[str, int]) -> rec.DeploymentRecord | None:
    """The record that started the revision carrying most traffic; else the target's current record."""
    top = max(weights.items(), key=lambda kv: kv[1])[0] if weights and max(weights.values()) > 0 else None
    if top:
        for r in store.list(target):
            if r.status.revision == top and r.outcome is rec.Outcome.SUCCEEDED:
                return r
    return current_record(store, target)


def recorded_backend(target: str, store: rec.RecordStore) -> Any:
    """targets.backend_for `target` on the AWS connection of the deploy that serves there (its run's
    `aws_conn_id` param; "aws_default" before any finished deploy). Raises what backend_for raises."""
    current = current_record(store, target)
    return backend_for(target, current.spec.params.aws_conn_id if current else "aws_default")


def status(
    target: str,
    store: rec.RecordStore,
    *,
    settings: settings_mod.Settings | None = None,
    backend_factory: Callable[[str], Any] | None = backend_for,
) -> dict[str, Any]:
    """What is serving on `target` now, and where did it come from.

    `backend_factory`: builds the target's backend for the traffic split (None: not asked); the default
    builds it on the AWS connection the target's deploys use (`recorded_backend`)."""
    s = settings or settings_mod.load()
    if backend_factory is backend_for:
        backend_factory = functools.partial(recorded_backend, store=store)
    live = (
        live_version(s.lb_url)
        if target == "local"
        else {"url": "", "ok": False, "version": None, "error": "live check only through the local LB"}
    )
    flow = traffic(backend_factory(target)) if backend_factory else {"weights": {}, "health": {}, "error": "off"}
    record = _serving_record(store, target, flow["weights"])
    records = store.list(target)
    latest = records[0] if records else None
    warnings: list[str] = []  # something disagrees or cannot be checked
    notes: list[str] = []  # worth knowing, not wrong (a deploy in flight)
    out: dict[str, Any] = {
        "target": target,
        "checked_at": rec.now_iso(),
        "live": live,
        "traffic": flow,
        "deployment": summarize(record, s.airflow_url) if record else None,
        "latest_attempt": None,
        "model": None,
        "image": None,
        "checks": {},
        "warnings": warnings,
        "notes": notes,
    }
    if latest and (not record or latest.deployment_id != record.deployment_id):
        out["latest_attempt"] = summarize(latest, s.airflow_url)
        if latest.outcome is rec.Outcome.IN_PROGRESS:
            notes.append(f"deploy {latest.run_id} is in progress")
    if record is None:
        warnings.append(f"no finished deployment on target {target}")
        return out
    model: Mapping[str, str] = record.status.model or {}
    served = live.get("version") or {}
    name = served.get("model_name") or model.get("name", "")
    version = str(served.get("model_version") or model.get("version", ""))
    out["model"] = model_lineage(name, version, s.mlflow_uri)
    image: dict[str, Any] = dict(record.status.image or {})
    reg = (
        registry_image(image["pinned"])
        if image.get("digest")
        else {"digest": "", "labels": {}, "error": "image not in a registry"}
    )
    out["image"] = {
        "tag": image.get("tag", ""),
        "pinned": image.get("pinned", ""),
        "digest": image.get("digest", ""),
        "registry_digest": reg.get("digest", ""),
        "labels": reg.get("labels") or image.get("labels") or {},
        "git_sha": (reg.get("labels") or image.get("labels") or {}).get("org.opencontainers.image.revision", ""),
        "registry_error": reg.get("error"),
    }
    checks = out["checks"]
    if live["ok"]:
        checks["live_matches_record"] = str(served.get("model_name")) == model.get("name") and str(
            served.get("model_version")
        ) == str(model.get("version"))
        if not checks["live_matches_record"]:
            warnings.append(
                f"the LB serves {served.get('model_name')} v{served.get('model_version')} but the "
                f"deployment record says {model.get('name')} v{model.get('version')}"
            )
    else:
        warnings.append(f"live check failed: {live['error']}")
    if image.get("digest"):
        checks["digest_matches_registry"] = image["digest"] == reg.get("digest")
        if not checks["digest_matches_registry"]:
            warnings.append(f"registry digest {reg.get('digest') or reg.get('error')} != record {image['digest']}")
    if out["model"]["missing"]:
        warnings.append(
            f"the live model {name} v{version} is gone from the MLflow registry (deleted?): its lineage is "
            "unknown, and the retrain's champion gate refuses to promote against it until it is restored or "
            "the champion alias is set by hand"
        )
    elif out["model"]["error"] and str(version) not in ("", "0"):
        warnings.append(f"MLflow lookup of {name} v{version} failed: {out['model']['error']}")
    elif out["model"]["run_id"] or model.get("run_id"):
        checks["mlflow_run_matches"] = out["model"]["run_id"] == model.get("run_id")
    if flow["error"]:
        warnings.append(f"traffic unknown: {flow['error']}")
    return out


def _dict_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """key -> {a, b} for every key whose value differs (missing = None)."""
    return {k: {"a": a.get(k), "b": b.get(k)} for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def diff(
    ref_a: str,
    ref_b: str,
    store: rec.RecordStore,
    *,
    target: str | None = None,
    settings: settings_mod.Settings | None = None,
    lineage: Callable[[str, str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What changed from deployment A to deployment B: model, data, params, metrics, image, settings."""
    s = settings or settings_mod.load()
    lineage = lineage or (lambda name, version: model_lineage(name, version, s.mlflow_uri))
    ra, rb = find_record(store, ref_a, target), find_record(store, ref_b, target)
    ma: Mapping[str, str] = ra.status.model or {}
    mb: Mapping[str, str] = rb.status.model or {}
    la, lb = (
        lineage(ma.get("name", ""), str(ma.get("version", ""))),
        lineage(mb.get("name", ""), str(mb.get("version", ""))),
    )
    ia: Mapping[str, Any] = ra.status.image or {}
    ib: Mapping[str, Any] = rb.status.image or {}
    metric_delta = {}
    for k, v in _dict_diff(la["metrics"], lb["metrics"]).items():
        both = isinstance(v["a"], int | float) and isinstance(v["b"], int | float)
        metric_delta[k] = {**v, "delta": (v["b"] - v["a"]) if both else None}
    sha_a = (ia.get("labels") or {}).get("org.opencontainers.image.revision", "")
    sha_b = (ib.get("labels") or {}).get("org.opencontainers.image.revision", "")
    changes = {
        "model": _dict_diff(
            {"name": ma.get("name"), "version": str(ma.get("version", "")), "run_id": ma.get("run_id")},
            {"name": mb.get("name"), "version": str(mb.get("version", "")), "run_id": mb.get("run_id")},
        ),
        "data": _dict_diff(
            {"data_version": la["data_version"] or ma.get("data_version", ""), "dataset": la["dataset"]},
            {"data_version": lb["data_version"] or mb.get("data_version", ""), "dataset": lb["dataset"]},
        ),
        "code": _dict_diff(
            {"training_git_sha": la["git_sha"], "image_git_sha": sha_a},
            {"training_git_sha": lb["git_sha"], "image_git_sha": sha_b},
        ),
        "params": _dict_diff(la["params"], lb["params"]),
        "metrics": metric_delta,
        "image": _dict_diff(
            {"digest": ia.get("digest", ""), "tag": ia.get("tag", "")},
            {"digest": ib.get("digest", ""), "tag": ib.get("tag", "")},
        ),
        "deploy_params": _dict_diff(ra.spec.params.to_dict(), rb.spec.params.to_dict()),
        "outcome": _dict_diff({"outcome": ra.outcome.value}, {"outcome": rb.outcome.value}),
    }
    return {
        "a": summarize(ra, s.airflow_url),
        "b": summarize(rb, s.airflow_url),
        "identical": not any(changes[k] for k in ("model", "data", "code", "params", "image")),
        "changes": changes,
        "errors": [e for e in (la["error"], lb["error"]) if e],
    }


def age(iso: str) -> str:
    """'3m ago' style age of an ISO timestamp (for the UI and the CLI)."""
    if not iso:
        return ""
    try:
        then = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return ""
    secs = int((dt.datetime.now(dt.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit} ago"
    return f"{max(secs, 0)}s ago"
