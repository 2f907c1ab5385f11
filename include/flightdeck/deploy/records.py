"""Deployment records: one JSON document per deploy run, kept in S3 and printed in task logs.

Layout (bucket = settings.deploy_bucket, default flightdeck-deployments):
    s3://BUCKET/records/<target>/<deployment_id>.json   one record per deploy run (updated by each step)
    s3://BUCKET/current/<target>.json                   the record of the last deploy that finished
                                                        (succeeded or rolled back): what serves now
deployment_id = the Airflow run_id made key-safe (manual__2026-11-27T09_00_00.123456_00_00): stable for
the run, so a cleared task updates the same record. List and sort by `started_at`.

Record fields (schema 1):
    schema, deployment_id, target, dag_id, run_id, started_at, updated_at, finished_at (ISO-8601 UTC)
    model {name, version, alias, run_id, data_version}
    image {tag, digest, pinned, image_id, inputs_hash, reused, pushed}
    strategy, params {canary_percent, canary_steps, step_seconds, bake_seconds, thresholds...}
    revision (the new revision's name), previous {weights {revision: percent}, specs}
    outcome: in_progress | succeeded | rolled_back | rollback_failed
    rollback: null | {reason, failed_step, at, restored {revision: percent}}
    steps: [{step, at, ...details}]   (append-only log of what each task did)
The client is any boto3-compatible S3 client (tasks pass S3Hook(aws_conn_id).get_conn()).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = 1


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def deployment_id(run_id: str) -> str:
    """Key-safe and stable for the run (every task and every retry of the run finds the same record)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_")


class RecordStore:
    def __init__(self, client: Any, bucket: str) -> None:
        self.s3 = client
        self.bucket = bucket

    def key(self, target: str, dep_id: str) -> str:
        return f"records/{target}/{dep_id}.json"

    def get(self, target: str, dep_id: str) -> dict[str, Any] | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.key(target, dep_id))["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return json.loads(body)

    def put(self, record: dict[str, Any]) -> None:
        record["updated_at"] = now_iso()
        body = json.dumps(record, indent=1, sort_keys=True).encode()
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.key(record["target"], record["deployment_id"]),
            Body=body,
            ContentType="application/json",
        )
        if record.get("outcome") in ("succeeded", "rolled_back"):
            self.s3.put_object(
                Bucket=self.bucket, Key=f"current/{record['target']}.json", Body=body, ContentType="application/json"
            )

    def update(
        self, target: str, dep_id: str, step: str | None = None, detail: dict[str, Any] | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Merge fields into the record (creating it) and append a step entry; returns the record."""
        record = self.get(target, dep_id) or {
            "schema": SCHEMA,
            "deployment_id": dep_id,
            "target": target,
            "started_at": now_iso(),
            "outcome": "in_progress",
            "rollback": None,
            "steps": [],
        }
        record.update(fields)
        if step:
            record["steps"].append({"step": step, "at": now_iso(), **(detail or {})})
        self.put(record)
        return record

    def list(self, target: str | None = None) -> list[dict[str, Any]]:
        """Every record (newest first), for the UI/CLI."""
        prefix = f"records/{target}/" if target else "records/"
        out = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out.append(json.loads(self.s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()))
        return sorted(out, key=lambda r: r.get("started_at", ""), reverse=True)


def served_models(record: dict[str, Any]) -> list[dict[str, str]]:
    """What a finished record says serves: {name, version, run_id} for the new revision when the deploy
    succeeded, for the restored revisions (traffic > 0) when it rolled back."""
    if record.get("outcome") == "succeeded":
        model = record.get("model") or {}
        return [
            {
                "name": str(model.get("name", "")),
                "version": str(model.get("version", "")),
                "run_id": str(record.get("run_id", "")),
            }
        ]
    if record.get("outcome") == "rolled_back":
        restored = (record.get("rollback") or {}).get("restored") or {}
        specs = (record.get("previous") or {}).get("specs") or {}
        return [
            {
                "name": str(spec.get("model_name", "")),
                "version": str(spec.get("model_version", "")),
                "run_id": str(spec.get("run_id", "")),
            }
            for revision, pct in sorted(restored.items())
            if pct and (spec := specs.get(revision))
        ]
    return []


def live_versions(store: RecordStore, model_name: str, targets: tuple[str, ...] = ("local", "ecs")) -> dict:
    """target -> (version, deploy run id) of `model_name` where the target's current record says it serves
    (s3://BUCKET/current/<target>.json); targets without a record, or serving another model, are left out."""
    out: dict[str, tuple[str, str]] = {}
    for target in targets:
        try:
            body = store.s3.get_object(Bucket=store.bucket, Key=f"current/{target}.json")["Body"].read()
        except (store.s3.exceptions.NoSuchKey, store.s3.exceptions.NoSuchBucket):
            continue
        for model in served_models(json.loads(body)):
            if model["name"] == model_name and model["version"] not in ("", "0"):
                out[target] = (model["version"], model["run_id"])
    return out


def render(record: dict[str, Any]) -> str:
    """The record as the task log shows it."""
    return "deployment record:\n" + json.dumps(record, indent=1, sort_keys=True)
