"""MLflow Model Registry: register a run's model, tag gate results, move the aliases.

Aliases: `challenger` = the latest trained version; `champion` = the version serving should run;
`previous` = the champion before the last promotion (one step back for a rollback).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from flightdeck import tracking
from flightdeck.gates import GateResult

log = logging.getLogger(__name__)

CHALLENGER, CHAMPION, PREVIOUS = "challenger", "champion", "previous"
TAG_PROMOTION = "promotion"  # promoted | rejected
TAG_PROMOTED_AT = "promoted_at"


def gate_tags(result: GateResult) -> dict[str, str]:
    """`gate.<name>` = passed|failed and `gate.<name>.message` = the sentence with the numbers."""
    return {f"gate.{result.gate}": result.status, f"gate.{result.gate}.message": result.message[:4900]}


def alias_version(name: str, alias: str) -> str | None:
    """The version `alias` points at, or None when the model or the alias does not exist.

    Raises ServiceUnavailable when MLflow does not answer (5xx, no connection)."""
    from mlflow.exceptions import MlflowException

    cl = tracking.client()
    try:
        with tracking.mlflow_call(f"read alias {alias}"):
            return str(cl.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None  # no such alias or model yet


def version_exists(name: str, version: str) -> bool:
    """Whether the registry still holds `name` v`version` (False once it was deleted)."""
    from mlflow.exceptions import MlflowException

    cl = tracking.client()
    try:
        with tracking.mlflow_call(f"read {name} v{version}"):
            cl.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or exc.get_http_status_code() == 404:
            return False
        raise
    return True


def register(name: str, mlflow_run_id: str, model_uri: str, tags: dict[str, str]) -> str:
    """Register the run's model once (a retry finds the version by run id) and point `challenger` at it."""
    import mlflow

    cl = tracking.client()
    with tracking.mlflow_call("register the model"):
        existing = [v for v in cl.search_model_versions(f"name = '{name}'") if v.run_id == mlflow_run_id]
        if existing:
            version = str(existing[0].version)
            log.info("run %s is already registered as %s v%s (retry)", mlflow_run_id, name, version)
        else:
            version = str(mlflow.register_model(model_uri, name, tags=tags).version)
            log.info("registered %s v%s from run %s", name, version, mlflow_run_id)
        for key, value in tags.items():
            cl.set_model_version_tag(name, version, key, value)
        cl.set_registered_model_alias(name, CHALLENGER, version)
    return version


def tag_version(name: str, version: str, tags: dict[str, str]) -> None:
    """Set each of `tags` on `name` v`version`. Raises ServiceUnavailable when MLflow does not answer."""
    cl = tracking.client()
    with tracking.mlflow_call("tag the model version"):
        for key, value in tags.items():
            cl.set_model_version_tag(name, version, key, value)


def version_tags(name: str, version: str) -> dict[str, str]:
    """The tags of `name` v`version`. Raises ServiceUnavailable when MLflow does not answer, MLflow's
    error when the version does not exist."""
    cl = tracking.client()
    with tracking.mlflow_call("read the model version"):
        return dict(cl.get_model_version(name, version).tags)


def promote(name: str, version: str) -> dict[str, Any]:
    """champion -> version, the former champion -> previous. Safe to repeat."""
    cl = tracking.client()
    former = alias_version(name, CHAMPION)
    with tracking.mlflow_call("move the aliases"):
        if former == version:
            log.info("%s v%s already is the champion", name, version)
        else:
            if former is not None:
                cl.set_registered_model_alias(name, PREVIOUS, former)
            cl.set_registered_model_alias(name, CHAMPION, version)
            log.info("promoted %s v%s to champion (previous: %s)", name, version, former or "none")
        cl.set_model_version_tag(name, version, TAG_PROMOTION, "promoted")
        cl.set_model_version_tag(name, version, TAG_PROMOTED_AT, datetime.now(UTC).isoformat())
    return {
        "model_name": name,
        "version": version,
        "previous": former if former != version else alias_version(name, PREVIOUS),
    }
