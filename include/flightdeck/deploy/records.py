"""Deployment records: one typed document per deploy run, kept in S3 and printed in task logs.

Layout (bucket = settings.deploy_bucket, default flightdeck-deployments):
    s3://BUCKET/records/<target>/<deployment_id>.json   one record per deploy run (updated by each step)
    s3://BUCKET/current/<target>.json                   the record of the last deploy that finished
                                                        (succeeded or rolled back): what serves now
deployment_id = the Airflow run_id made key-safe (manual__2026-11-27T09_00_00.123456_00_00): stable for
the run, so a cleared task updates the same record.

A record (`DeploymentRecord`, JSON schema 2) is a `spec` and a `status`:
    spec    what was asked, written once by the run's `resolve` step: deployment_id, target, dag_id,
            run_id, strategy, params (the run's DeployParams)
    status  what happened, written by the steps: outcome (Outcome), started_at/updated_at/finished_at
            (ISO-8601 UTC), model {name, version, alias, run_id, data_version}, image {tag, digest,
            pinned, ...}, revision, revision_spec (RevisionSpec), mode (revision | roll), plan [percent],
            roll (RollSpec: an ECS rolling update or an EC2 instance refresh), previous {weights {revision:
            percent}, specs}, weights,
            failure {step, reason, at}, rollback {reason, failed_step, at, restored}, steps [{step, at,
            status, ...details}] (append-only), events [Event] (append-only: what the run did to the
            target and when: started, restarted, live, rolled_back, rollback_failed, failed, replaced)
Schema-1 records (one flat dict) are upgraded on read by `DeploymentRecord.from_json`; they are written
back as schema 2 the next time a step updates them. History (`events`) of a schema-1 record is rebuilt
from its timestamps; who replaced it is only known from records written since.
The client is any boto3-compatible S3 client (tasks pass S3Hook(aws_conn_id).get_conn()).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypedDict

from flightdeck.deploy.backend import RevisionSpec, RollSpec
from flightdeck.deploy.controller import Snapshot
from flightdeck.deploy.params import DeployParams
from flightdeck.deploy.targets import TARGETS

log = logging.getLogger(__name__)

SCHEMA = 2


class Outcome(StrEnum):
    """Where a deploy run stands."""

    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"  # the new revision took all traffic
    ROLLED_BACK = "rolled_back"  # it failed and the previous split was restored
    ROLLBACK_FAILED = "rollback_failed"  # it failed and restoring failed too (clear `rollback` to retry)
    FAILED = "failed"  # it failed before any revision started, or its watcher failed: traffic untouched

    @property
    def finished(self) -> bool:
        """Whether the run has ended (any outcome but in_progress)."""
        return self is not Outcome.IN_PROGRESS


class EventKind(StrEnum):
    """What one moment of a run did to its target (the history log's rows)."""

    STARTED = "started"  # the run resolved its model: a new deploy began
    RESTARTED = "restarted"  # a finished run was started again (its `start_new` cleared: a redeploy)
    LIVE = "live"  # the run's revision took all traffic
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    FAILED = "failed"
    REPLACED = "replaced"  # another run went live on the target: this one no longer serves


# events that end a run's stay in front of traffic, or put it there
_SERVING_CHANGES = (
    EventKind.RESTARTED,
    EventKind.LIVE,
    EventKind.ROLLED_BACK,
    EventKind.ROLLBACK_FAILED,
    EventKind.FAILED,
    EventKind.REPLACED,
)


class ModelInfo(TypedDict):
    """The registered model version a run deploys (pinned by `resolve`)."""

    name: str
    version: str  # "0" for a bare image without a registered model
    alias: str
    run_id: str  # the MLflow run that trained it
    data_version: str


class ImageInfo(TypedDict, total=False):
    """The serving image a run deploys (images.BuiltImage.to_dict, or images.pin_given for a given image)."""

    tag: str
    pinned: str  # what the revision runs: repo@sha256:... once pushed, else the image id
    digest: str  # registry manifest digest ("" before push)
    image_id: str
    inputs_hash: str
    repository: str
    reused: bool
    pushed: bool
    given: bool  # deployed as given (param `image`), not built
    labels: dict[str, str]


class Failure(TypedDict):
    step: str  # the task(s) that failed
    reason: str
    at: str


class RollbackInfo(TypedDict):
    reason: str
    failed_step: str
    at: str
    restored: dict[str, int] | None  # revision -> percent after the rollback; None: nothing was started


class StepEntry(TypedDict, total=False):
    """One line of the append-only step log: the step, when, its status and what it returned."""

    step: str
    at: str
    status: str  # ok | failed | nothing_started | not_rolled_back
    reason: str
    error: str
    pinned: bool
    restored: dict[str, int] | None
    weights: dict[str, int]


def now_iso() -> str:
    """Now, UTC, as ISO-8601 with microseconds and a Z (the records' timestamp format)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def deployment_id(run_id: str) -> str:
    """Key-safe and stable for the run (every task and every retry of the run finds the same record)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_")


@dataclass(frozen=True)
class Event:
    """One entry of a run's history: what happened to the target, when."""

    kind: EventKind
    at: str  # ISO-8601 UTC
    reason: str = ""  # rolled_back / failed: why
    by: str = ""  # replaced: the deployment id that went live instead
    by_run_id: str = ""  # replaced: that deployment's Airflow run id

    def to_dict(self) -> dict[str, str]:
        """JSON: kind and at always, reason/by/by_run_id when set."""
        return {k: str(v) for k, v in dataclasses.asdict(self).items() if v or k in ("kind", "at")}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        """An event from its JSON; raises KeyError without kind/at, ValueError for an unknown kind."""
        return cls(
            kind=EventKind(d["kind"]),
            at=str(d["at"]),
            reason=str(d.get("reason", "")),
            by=str(d.get("by", "")),
            by_run_id=str(d.get("by_run_id", "")),
        )


@dataclass(frozen=True)
class DeploymentSpec:
    """What a deploy run was asked to do; written once, by `resolve`."""

    deployment_id: str
    target: str
    run_id: str
    dag_id: str = "deploy"
    params: DeployParams = field(default_factory=DeployParams)

    @property
    def strategy(self) -> str:
        """The strategy asked for (rolling, blue_green, canary)."""
        return self.params.strategy

    def to_dict(self) -> dict[str, Any]:
        """JSON: deployment_id, target, run_id, dag_id, strategy, params {DeployParams fields}."""
        return {
            "deployment_id": self.deployment_id,
            "target": self.target,
            "run_id": self.run_id,
            "dag_id": self.dag_id,
            "strategy": self.strategy,
            "params": self.params.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeploymentSpec:
        """A spec from its JSON, or from a schema-1 record's top-level fields (missing params: defaults)."""
        params = dict(d.get("params") or {})
        if d.get("strategy") and not params.get("strategy"):
            params["strategy"] = d["strategy"]
        params.setdefault("target", d.get("target") or "local")
        return cls(
            deployment_id=str(d.get("deployment_id") or deployment_id(str(d.get("run_id") or ""))),
            target=str(d.get("target") or params["target"]),
            run_id=str(d.get("run_id") or ""),
            dag_id=str(d.get("dag_id") or "deploy"),
            params=DeployParams.from_dict(params),
        )


@dataclass
class DeploymentStatus:
    """What happened in a deploy run; the steps write only this."""

    outcome: Outcome = Outcome.IN_PROGRESS
    started_at: str = ""
    updated_at: str = ""
    finished_at: str | None = None
    model: ModelInfo | None = None
    image: ImageInfo | None = None
    revision: str = ""  # the new revision's name
    revision_spec: RevisionSpec | None = None  # what `register` decided to run
    mode: str = "revision"  # revision: a new revision beside the live one; roll: the live one rolled in place
    plan: list[int] = field(default_factory=list)  # the new revision's traffic percent after each shift step
    roll: RollSpec | None = None
    previous: Snapshot | None = None  # the split before this run touched it, and how to restart it
    weights: dict[str, int] = field(default_factory=dict)  # the split when the run finished
    failure: Failure | None = None
    rollback: RollbackInfo | None = None
    steps: list[StepEntry] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def serving(self) -> bool:
        """Whether, by this record, the run's revision still holds the target's traffic (its last serving
        change is `live`)."""
        changes = [e for e in self.events if e.kind in _SERVING_CHANGES]
        return bool(changes) and changes[-1].kind is EventKind.LIVE

    def to_dict(self) -> dict[str, Any]:
        """JSON of every field (RevisionSpec, Snapshot and events as their dicts)."""
        return {
            "outcome": self.outcome.value,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "model": self.model,
            "image": self.image,
            "revision": self.revision,
            "revision_spec": self.revision_spec.to_dict() if self.revision_spec else None,
            "mode": self.mode,
            "plan": list(self.plan),
            "roll": self.roll,
            "previous": self.previous.to_dict() if self.previous else None,
            "weights": dict(self.weights),
            "failure": self.failure,
            "rollback": self.rollback,
            "steps": list(self.steps),
            "events": [e.to_dict() for e in self.events],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeploymentStatus:
        """A status from its JSON (or a schema-1 record's flat fields); missing fields get defaults.

        Raises ValueError for an unknown outcome or event kind."""
        spec = d.get("revision_spec")
        prev = d.get("previous")
        return cls(
            outcome=Outcome(d.get("outcome") or Outcome.IN_PROGRESS),
            started_at=str(d.get("started_at") or ""),
            updated_at=str(d.get("updated_at") or ""),
            finished_at=d.get("finished_at") or None,
            model=_model(d.get("model")),
            image=d.get("image") or None,
            revision=str(d.get("revision") or ""),
            revision_spec=RevisionSpec.from_dict(spec) if spec else None,
            mode=str(d.get("mode") or "revision"),
            plan=[int(p) for p in d.get("plan") or []],
            roll=d.get("roll") or None,
            previous=Snapshot.from_dict(prev) if prev else None,
            weights={str(k): int(v) for k, v in (d.get("weights") or {}).items()},
            failure=d.get("failure") or None,
            rollback=d.get("rollback") or None,
            steps=list(d.get("steps") or []),
            events=[Event.from_dict(e) for e in d.get("events") or []],
        )


def _model(d: Mapping[str, Any] | None) -> ModelInfo | None:
    if not d:
        return None
    return ModelInfo(
        name=str(d.get("name", "")),
        version=str(d.get("version", "")),
        alias=str(d.get("alias", "")),
        run_id=str(d.get("run_id", "")),
        data_version=str(d.get("data_version", "")),
    )


def _legacy_events(status: DeploymentStatus) -> list[Event]:
    """A schema-1 record's history from its timestamps (it kept none)."""
    events = [Event(EventKind.STARTED, status.started_at)] if status.started_at else []
    end = status.finished_at or status.updated_at
    reason = (status.rollback or {}).get("reason", "") or (status.failure or {}).get("reason", "")
    kind = {
        Outcome.SUCCEEDED: EventKind.LIVE,
        Outcome.ROLLED_BACK: EventKind.ROLLED_BACK,
        Outcome.ROLLBACK_FAILED: EventKind.ROLLBACK_FAILED,
        Outcome.FAILED: EventKind.FAILED,
    }.get(status.outcome)
    if kind and end:
        events.append(Event(kind, end, reason="" if kind is EventKind.LIVE else reason))
    return events


@dataclass
class DeploymentRecord:
    """One deploy run: what was asked (`spec`) and what happened (`status`)."""

    spec: DeploymentSpec
    status: DeploymentStatus = field(default_factory=DeploymentStatus)

    @property
    def deployment_id(self) -> str:
        """The record's key: the Airflow run id made key-safe."""
        return self.spec.deployment_id

    @property
    def target(self) -> str:
        """The deploy target (local, ecs, ec2)."""
        return self.spec.target

    @property
    def run_id(self) -> str:
        """The deploy DAG run id."""
        return self.spec.run_id

    @property
    def outcome(self) -> Outcome:
        """Where the run stands (status.outcome)."""
        return self.status.outcome

    def to_json(self) -> dict[str, Any]:
        """The schema-2 JSON document (what S3 stores)."""
        return {"schema": SCHEMA, "spec": self.spec.to_dict(), "status": self.status.to_dict()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DeploymentRecord:
        """A record from its JSON document, schema 2 or schema 1 (one flat dict; upgraded here).

        Raises KeyError/ValueError for a document that is neither.
        """
        if int(doc.get("schema", 1)) >= 2:
            return cls(DeploymentSpec.from_dict(doc["spec"]), DeploymentStatus.from_dict(doc["status"]))
        flat = dict(doc)
        if flat.get("spec"):  # schema 1 kept the revision spec under "spec"
            flat["revision_spec"] = flat.pop("spec")
        status = DeploymentStatus.from_dict(flat)
        status.events = _legacy_events(status)
        return cls(DeploymentSpec.from_dict(flat), status)

    def render(self) -> str:
        """The record as the task log shows it."""
        return "deployment record:\n" + json.dumps(self.to_json(), indent=1, sort_keys=True)


class RecordStore:
    """Deployment records in one S3 bucket (see the module docstring for the layout)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.s3 = client
        self.bucket = bucket

    def key(self, target: str, dep_id: str) -> str:
        """The S3 key of a run's record: records/<target>/<deployment_id>.json."""
        return f"records/{target}/{dep_id}.json"

    def _read(self, key: str) -> DeploymentRecord | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (self.s3.exceptions.NoSuchKey, self.s3.exceptions.NoSuchBucket):
            return None
        return DeploymentRecord.from_json(json.loads(body))

    def get(self, target: str, dep_id: str) -> DeploymentRecord | None:
        """The run's record, or None. Raises the client's errors other than a missing key/bucket."""
        return self._read(self.key(target, dep_id))

    def current(self, target: str) -> DeploymentRecord | None:
        """The record of the last deploy that finished on `target` (current/<target>.json), or None."""
        return self._read(f"current/{target}.json")

    def put(self, record: DeploymentRecord, *, publish: bool = True) -> None:
        """Write the record (stamping `updated_at`). With `publish`, a record that ended succeeded or
        rolled back also becomes current/<target>.json."""
        record.status.updated_at = now_iso()
        body = json.dumps(record.to_json(), indent=1, sort_keys=True).encode()
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.key(record.target, record.deployment_id),
            Body=body,
            ContentType="application/json",
        )
        if publish and record.outcome in (Outcome.SUCCEEDED, Outcome.ROLLED_BACK):
            self.s3.put_object(
                Bucket=self.bucket, Key=f"current/{record.target}.json", Body=body, ContentType="application/json"
            )

    def create(self, spec: DeploymentSpec) -> DeploymentRecord:
        """The run's record, created (status in progress, a `started` event) unless it exists."""
        existing = self.get(spec.target, spec.deployment_id)
        if existing is not None:
            return existing
        at = now_iso()
        record = DeploymentRecord(spec, DeploymentStatus(started_at=at, events=[Event(EventKind.STARTED, at)]))
        self.put(record)
        return record

    def update(
        self,
        target: str,
        dep_id: str,
        step: str | None = None,
        detail: Mapping[str, Any] | None = None,
        event: Event | None = None,
        **status: Any,
    ) -> DeploymentRecord:
        """Set `status` fields (DeploymentStatus's names; TypeError for others), append a step entry and
        an event; returns the written record. Raises LookupError when the run has no record."""
        record = self.get(target, dep_id)
        if record is None:
            raise LookupError(f"no deployment record {dep_id} on target {target}")
        record.status = dataclasses.replace(record.status, **status)
        if step:
            record.status.steps.append(StepEntry(step=step, at=now_iso(), **(detail or {})))  # type: ignore[typeddict-item]
        if event is not None:
            record.status.events.append(event)
        self.put(record)
        return record

    def list(self, target: str | None = None) -> list[DeploymentRecord]:
        """Every record (newest start first), for the UI/CLI. A document that is not a record (neither
        schema) is logged and left out, so one bad object does not hide the history."""
        prefix = f"records/{target}/" if target else "records/"
        out = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                try:
                    found = self._read(obj["Key"])
                except (KeyError, TypeError, ValueError) as e:
                    log.warning("s3://%s/%s is not a deployment record (%s): left out", self.bucket, obj["Key"], e)
                    continue
                if found is not None:
                    out.append(found)
        return sorted(out, key=lambda r: r.status.started_at, reverse=True)

    def mark_replaced(self, live: DeploymentRecord, served: Collection[str]) -> list[str]:
        """`live` just took all traffic on its target, where revisions `served` had traffic before: every
        other record there that still says it serves one of them gets a `replaced` event naming `live`.
        Returns their deployment ids."""
        at = now_iso()
        replaced = []
        for other in self.list(live.target):
            if other.deployment_id == live.deployment_id or not other.status.serving:
                continue
            if other.status.revision not in served:
                continue
            other.status.events.append(Event(EventKind.REPLACED, at, by=live.deployment_id, by_run_id=live.run_id))
            self.put(other, publish=False)
            replaced.append(other.deployment_id)
        return replaced


def events(records: list[DeploymentRecord]) -> list[tuple[Event, DeploymentRecord]]:
    """Every event of `records` with its record, newest first (ties: the order they were written)."""
    pairs = [(e, r) for r in records for e in r.status.events]
    order = {id(e): i for i, (e, _) in enumerate(pairs)}
    return sorted(pairs, key=lambda p: (p[0].at, order[id(p[0])]), reverse=True)


class ServedModel(TypedDict):
    name: str
    version: str
    run_id: str  # the deploy run (Airflow run id) that put it there


def served_models(record: DeploymentRecord) -> list[ServedModel]:
    """What a finished record says serves: the new revision's model when the deploy succeeded, the
    restored revisions' models (traffic > 0) when it rolled back; [] otherwise."""
    if record.outcome is Outcome.SUCCEEDED:
        model = record.status.model
        return [
            ServedModel(
                name=model["name"] if model else "", version=model["version"] if model else "", run_id=record.run_id
            )
        ]
    if record.outcome is Outcome.ROLLED_BACK:
        restored = (record.status.rollback or {}).get("restored") or {}
        specs = record.status.previous.specs if record.status.previous else {}
        return [
            ServedModel(
                name=str(spec.get("model_name", "")),
                version=str(spec.get("model_version", "")),
                run_id=str(spec.get("run_id", "")),
            )
            for revision, pct in sorted(restored.items())
            if pct and (spec := specs.get(revision))
        ]
    return []


def live_versions(
    store: RecordStore, model_name: str, targets: tuple[str, ...] = TARGETS
) -> dict[str, tuple[str, str]]:
    """target -> (version, deploy run id) of `model_name` where the target's current record says it serves
    (s3://BUCKET/current/<target>.json); targets without a record, or serving another model, are left out."""
    out: dict[str, tuple[str, str]] = {}
    for target in targets:
        current = store.current(target)
        for model in served_models(current) if current else []:
            if model["name"] == model_name and model["version"] not in ("", "0"):
                out[target] = (model["version"], model["run_id"])
    return out


def render(record: DeploymentRecord) -> str:
    """The record as the task log shows it."""
    return record.render()
