"""The deploy DAG's steps as plain functions (each one task; no Airflow import here).

State between steps lives in the deployment record (S3, see records.py), keyed by the run: every step
reads the run's spec (what was asked) and the status earlier steps wrote, and writes only the status,
so any task can be cleared and re-run on its own, and the rollback step works whichever step failed.
Steps also return small typed payloads (the TypedDicts below) for XCom so the grid shows what happened.
Pinning: once a run has resolved its model and pushed its image, a re-run (cleared tasks) reuses
exactly that model version and image digest.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypedDict, TypeVar

from flightdeck import images
from flightdeck import settings as settings_mod
from flightdeck.deploy import controller as ctl
from flightdeck.deploy import records as rec
from flightdeck.deploy.backend import Backend, RevisionSpec, RevisionSpecDict, RollSpec
from flightdeck.deploy.params import MAX_SHIFT_STEPS, DeployParams
from flightdeck.deploy.records import Event, EventKind, ImageInfo, ModelInfo, Outcome
from flightdeck.deploy.registry_tags import tag_models
from flightdeck.deploy.targets import AWS_TARGETS, backend_for
from flightdeck.errors import FlightdeckError
from flightdeck.monitoring.capture import capture_env

__all__ = ["MAX_SHIFT_STEPS", "Deploy", "DeployFailed", "StepNotInPlan"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class DeployFailed(FlightdeckError, RuntimeError):
    """The run's deploy did not succeed (rolled back or failed); the message says why."""


class StepNotInPlan(FlightdeckError):
    """This shift task has no step in the run's plan (the DAG skips it)."""


# -- what each step returns (XCom; JSON-serialisable) ------------------------------------------------
class RollStart(TypedDict):
    """start_new of a roll in place: the roll `roll_service` (ecs) or `refresh_instances` (ec2) starts, and
    the split to restore."""

    roll: RollSpec
    previous: ctl.SnapshotDict


class HealthyResult(TypedDict):
    healthy: int  # targets passing the LB's health check


class FinalizeResult(TypedDict):
    weights: dict[str, int]  # revision -> traffic percent after finalize


class RollbackResult(TypedDict):
    restored: dict[str, int] | None  # revision -> percent restored; None: nothing had started
    reason: str


class OutcomeResult(TypedDict):
    outcome: str  # always "succeeded" (any other outcome raises DeployFailed)
    revision: str
    weights: dict[str, int]


class Deploy:
    """One deploy run: its params, record store and target backend."""

    def __init__(
        self,
        run_id: str,
        params: Mapping[str, Any],
        *,
        store: rec.RecordStore | None = None,
        backend: Backend | None = None,
        aws_conn_id: str | None = "aws_default",
        dag_id: str = "deploy",
        tracking_uri: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.dag_id = dag_id
        self.aws_conn_id = aws_conn_id
        self.settings = settings_mod.load()
        self.tracking_uri = tracking_uri or self.settings.mlflow_uri
        self._store = store
        self._backend = backend
        self.dep_id = rec.deployment_id(run_id)
        existing = self.store.get(params.get("target", "local"), self.dep_id) if params else None
        # a re-run keeps the params the run started with
        self.p: DeployParams = DeployParams.resolve(existing.spec.params.to_dict() if existing else params or {})
        self.target = self.p.target

    # -- plumbing ----------------------------------------------------------------------------------
    @property
    def store(self) -> rec.RecordStore:
        """The deployment record store (built on first use from `aws_conn_id` and settings.deploy_bucket)."""
        if self._store is None:
            from flightdeck import s3

            self._store = rec.RecordStore(s3.client(self.aws_conn_id), self.settings.deploy_bucket)
        return self._store

    @property
    def backend(self) -> Backend:
        """The target's backend (built on first use by targets.backend_for, on the run's `aws_conn_id`)."""
        if self._backend is None:
            self._backend = backend_for(self.target, self.p.aws_conn_id)
        return self._backend

    def record(self) -> rec.DeploymentRecord:
        """The run's record; raises ctl.DeployError when `resolve` has not created it."""
        r = self.store.get(self.target, self.dep_id)
        if r is None:
            raise ctl.DeployError(f"no deployment record for run {self.run_id} (did `resolve` run?)")
        return r

    def _update(
        self,
        step: str | None = None,
        detail: Mapping[str, Any] | None = None,
        event: Event | None = None,
        **status: Any,
    ) -> rec.DeploymentRecord:
        """Write status fields (DeploymentStatus names), a step entry and an event into the run's record."""
        return self.store.update(self.target, self.dep_id, step=step, detail=detail, event=event, **status)

    def _step(self, name: str, fn: Callable[[], T]) -> T:
        """Run one step; on failure write the reason into the record (the rollback step reads it)."""
        try:
            out = fn()
        except StepNotInPlan:
            raise
        except Exception as e:
            self._update(
                step=name,
                detail={"status": "failed", "reason": str(e)},
                failure=rec.Failure(step=name, reason=str(e), at=rec.now_iso()),
            )
            log.error("step %s failed: %s", name, e)
            raise
        self._update(step=name, detail={"status": "ok", **out})  # type: ignore[dict-item]
        return out

    def _spec(self, r: rec.DeploymentRecord | None = None) -> RevisionSpec:
        spec = (r or self.record()).status.revision_spec
        if spec is None:
            raise ctl.DeployError(f"run {self.run_id} has no registered revision (did `register` run?)")
        return spec

    def _snap(self, r: rec.DeploymentRecord | None = None) -> ctl.Snapshot:
        snap = (r or self.record()).status.previous
        if snap is None:
            raise ctl.DeployError(f"run {self.run_id} has no snapshot of the previous split (did `start_new` run?)")
        return snap

    # -- steps -------------------------------------------------------------------------------------
    def resolve(self) -> ModelInfo:
        """Model version (pinned for the run) and a fresh record (its spec: this run's params)."""
        existing = self.store.get(self.target, self.dep_id)
        if existing and existing.status.model:
            model = existing.status.model
            log.info("run %s already resolved %s v%s: keeping it", self.run_id, model["name"], model["version"])
            self._update(step="resolve", detail={"status": "ok", "pinned": True})
            return model

        def go() -> ModelInfo:
            if self.p.image and str(self.p.model) in ("", "none"):  # a bare image, no model lineage
                return ModelInfo(name=self.p.model_name, version="0", alias="", run_id="", data_version="")
            m = images.resolve_model(self.p.model_name, str(self.p.model), self.tracking_uri)
            return ModelInfo(
                name=m.name, version=m.version, alias=m.alias, run_id=m.run_id, data_version=m.data_version
            )

        self.store.create(rec.DeploymentSpec(self.dep_id, self.target, self.run_id, self.dag_id, self.p))
        model = self._step("resolve", go)
        self._update(model=model)
        return model

    def build(self) -> ImageInfo:
        """The serving image with the run's model baked in (or the given image, pinned).

        Raises DeployError without a resolved model, images.ModelFilesMissing for a version without files."""
        r = self.record()
        image = r.status.image or ImageInfo()
        if image.get("digest") or image.get("pinned"):
            log.info("run already built %s: keeping that image", image.get("pinned"))
            return image
        model = r.status.model
        if model is None:
            raise ctl.DeployError(f"run {self.run_id} has no resolved model (did `resolve` run?)")

        def go() -> ImageInfo:
            if self.p.image:  # deploy a given image (hotfix, tests): no build, but pin it now
                return ImageInfo(**images.pin_given(self.p.image))  # type: ignore[typeddict-item]
            m = images.ModelRef(**model)
            registry = self.settings.registry
            if self.target in AWS_TARGETS:
                from flightdeck.deploy.aws import ensure_ecr_repository

                registry = ensure_ecr_repository(m.name, self.p.aws_conn_id).rsplit("/", 1)[0]
            with tempfile.TemporaryDirectory(prefix="fd-model-") as tmp:
                model_dir = images.download_model(m, Path(tmp) / "dl", self.tracking_uri)
                built = images.build_image(m, registry=registry, model_dir=model_dir)
            return ImageInfo(**built.to_dict())  # type: ignore[typeddict-item]

        image = self._step("build", go)
        self._update(image=image)
        return image

    def push(self) -> ImageInfo:
        """The built image pushed to the registry, pinned by its manifest digest.

        Raises DeployError when `build` has not recorded an image."""
        image = self.record().status.image
        if image is None:
            raise ctl.DeployError(f"run {self.run_id} has no image (did `build` run?)")
        if image.get("digest") or image.get("given"):
            log.info("image pinned at %s", image.get("pinned"))
            return image
        built = image

        def go() -> ImageInfo:
            auth = None
            if self.target in AWS_TARGETS:
                from flightdeck.deploy.aws import ecr_login

                _, auth = ecr_login(self.p.aws_conn_id)
            pushed = images.push_image(images.BuiltImage.from_dict(built), auth_config=auth)
            return ImageInfo(**pushed.to_dict())  # type: ignore[typeddict-item]

        image = self._step("push", go)
        self._update(image=image)
        return image

    def register(self) -> RevisionSpecDict:
        """The revision to run: a name unique to this run and image, pinned by digest.

        Raises DeployError when the run has no model or image yet."""
        r = self.record()
        if r.status.revision_spec is not None:
            return r.status.revision_spec.to_dict()
        image, model = r.status.image, r.status.model
        if image is None or model is None:
            raise ctl.DeployError(f"run {self.run_id} has no model or image to register (did `push` run?)")

        to_roll = self._service_to_roll()

        def go() -> RevisionSpecDict:
            pinned = image.get("pinned", "")
            key = hashlib.sha256(pinned.encode()).hexdigest()[:8]
            run_key = hashlib.sha256(self.run_id.encode()).hexdigest()[:6]
            revision = to_roll or f"v{model['version']}-{key}-{run_key}".lower()
            # the server's /version names the image it runs from these (a container cannot see its own digest)
            env = {
                "MODEL_NAME": model["name"],
                "MODEL_VERSION": str(model["version"]),
                "IMAGE_REF": pinned,
                "IMAGE_TAG": image.get("tag") or "",
                "IMAGE_DIGEST": image.get("digest") or "",
                **capture_env(self._capture_percent(), self.settings.data_bucket),
                **{str(k): str(v) for k, v in (self.p.env or {}).items()},
            }
            spec = RevisionSpec(
                revision=revision,
                image=pinned,
                digest=image.get("digest", ""),
                model_name=model["name"],
                model_version=str(model["version"]),
                replicas=int(self.p.replicas),
                env=env,
                run_id=self.run_id,
                scaling=self.p.scaling() if self.target in AWS_TARGETS else None,
            )
            return spec.to_dict()

        spec = self._step("register", go)
        rolling = bool(to_roll) and spec["revision"] == to_roll
        self._update(
            revision_spec=RevisionSpec.from_dict(spec),
            revision=spec["revision"],
            mode="roll" if rolling else "revision",
            plan=[]
            if rolling
            else ctl.plan_steps(
                self.p.strategy, int(self.p.canary_percent), int(self.p.canary_steps), int(self.p.replicas)
            ),
        )
        return spec

    def _capture_percent(self) -> float:
        """The run's capture_percent, or 0 on ECS without a task role (FLIGHTDECK_ECS_TASK_ROLE_ARN): a task
        with no credentials of its own could only count every record as write_failed."""
        percent = float(self.p.capture_percent)
        if percent and self.target == "ecs":
            from flightdeck.deploy.ecs import EcsConfig

            if not EcsConfig.from_env().task_role_arn:
                log.warning("capture off: the ECS task has no role to write to S3 (set FLIGHTDECK_ECS_TASK_ROLE_ARN)")
                return 0.0
        return percent

    def _service_to_roll(self) -> str:
        """On a target that rolls in place, strategy rolling updates the one live revision in place (ECS:
        its rolling deployment with the circuit breaker; EC2: an instance refresh of its group) instead of
        starting a revision beside it; the first deploy, or a target split between revisions, starts a
        revision as the other strategies do."""
        if self.p.strategy != "rolling" or not self.backend.rolls_in_place:
            return ""
        live = [r for r, w in self.backend.weights().items() if w > 0]
        return live[0] if len(live) == 1 else ""

    def _rolling(self, r: rec.DeploymentRecord | None = None) -> bool:
        return (r or self.record()).status.mode == "roll"

    def rolling_in_place(self, target: str | None = None) -> bool:
        """Whether this run rolls its live revision in place (on `target` only, when given): whether
        `roll_service` (ecs) or `refresh_instances` (ec2) has work."""
        if target is not None and target != self.target:
            return False
        r = self.record()
        return self._rolling(r) and bool(r.status.roll)

    def _begin(self, r: rec.DeploymentRecord) -> None:
        """A finished run started again (its `start_new` cleared: a redeploy): a `restarted` event now."""
        if r.outcome.finished:
            self._update(
                event=Event(EventKind.RESTARTED, rec.now_iso()),
                outcome=Outcome.IN_PROGRESS,
                failure=None,
                rollback=None,
                finished_at=None,
            )

    def start_new(self) -> ctl.SnapshotDict | RollStart:
        """Snapshot the live split and start the new revision with no traffic (rolling in place: register
        what the live revision rolls to, see `_start_roll`)."""
        r = self.record()
        spec = self._spec(r)
        self._begin(r)
        if self._rolling(r):
            return self._start_roll(r, spec)

        def go() -> ctl.SnapshotDict:
            return ctl.start(self.backend, spec).to_dict()

        snap = self._step("start_new", go)
        self._update(
            previous=ctl.Snapshot.from_dict(snap),
            outcome=Outcome.IN_PROGRESS,
            failure=None,
            rollback=None,
            finished_at=None,
        )
        return snap

    def _start_roll(self, r: rec.DeploymentRecord, spec: RevisionSpec) -> RollStart:
        """Register what the live revision rolls to: ECS, a task definition (`roll_service`); EC2, a launch
        template version (`refresh_instances`)."""

        def go() -> RollStart:
            if r.status.roll and r.status.previous:  # a re-run rolls to the task definition this run registered
                return RollStart(roll=r.status.roll, previous=r.status.previous.to_dict())
            current = self.backend.spec(spec.revision)
            if current is None:
                raise ctl.DeployError(f"cannot read the live spec of {spec.revision} to roll back to")
            snap = ctl.Snapshot(weights={spec.revision: 100}, specs={spec.revision: dict(current.to_dict())})
            return RollStart(roll=self.backend.prepare_roll(spec, self.p.roll_plan()), previous=snap.to_dict())

        out = self._step("start_new", go)
        self._update(
            roll=out["roll"],
            previous=ctl.Snapshot.from_dict(out["previous"]),
            outcome=Outcome.IN_PROGRESS,
            failure=None,
            rollback=None,
            finished_at=None,
        )
        log.info("rolling %s in place on %s: %s", spec.revision, self.target, out["roll"])
        return out

    def wait_healthy(self) -> HealthyResult:
        """Block until every target of the new revision passes the LB health check (raises DeployError)."""
        spec = self._spec()
        th = self.p.thresholds()
        return self._step(
            "wait_healthy", lambda: HealthyResult(healthy=ctl.wait_healthy(self.backend, spec.revision, th).healthy)
        )

    def shift(self, index: int) -> ctl.ShiftResult:
        """Shift step `index` (1-based) of the run's plan; raises StepNotInPlan past the plan's end."""
        r = self.record()
        plan = r.status.plan
        if index > len(plan):
            raise StepNotInPlan(f"plan {plan} has {len(plan)} step(s); shift_{index} has nothing to do")
        pct = plan[index - 1]
        spec, snap = self._spec(r), self._snap(r)
        hold = float(self.p.step_seconds) if pct < 100 else 0.0
        th = self.p.thresholds()
        return self._step(f"shift_{index}", lambda: ctl.shift(self.backend, spec.revision, pct, snap, th, hold_s=hold))

    def bake(self) -> ctl.WatchResult:
        """Watch the new revision at full traffic for `bake_seconds` (raises DeployError)."""
        r = self.record()
        spec, snap = self._spec(r), self._snap(r)
        th = self.p.thresholds()
        return self._step("bake", lambda: ctl.bake(self.backend, spec.revision, snap, float(self.p.bake_seconds), th))

    def finalize(self) -> FinalizeResult:
        """All traffic to the new revision, the others retired; the record ends `succeeded` with a `live`
        event, and the run that served before gets `replaced` by this one."""
        r = self.record()
        spec, snap = self._spec(r), self._snap(r)
        out = self._step("finalize", lambda: FinalizeResult(weights=ctl.finalize(self.backend, spec.revision, snap)))
        live_now = None if self.record().status.serving else Event(EventKind.LIVE, rec.now_iso())
        r = self._update(outcome=Outcome.SUCCEEDED, finished_at=rec.now_iso(), weights=out["weights"], event=live_now)
        replaced = self.store.mark_replaced(r, served=[rev for rev, w in snap.weights.items() if w > 0])
        if replaced:
            log.info("%s replaces %s on %s", self.dep_id, ", ".join(replaced), self.target)
        tag_models(self.tracking_uri, self.target, self.run_id, live=spec, others=snap, status="live")
        log.info("%s", r.render())
        return out

    def rollback(self, failed_tasks: list[str] | None = None, watch_error: str = "") -> RollbackResult:
        """Restore the previous revision with 100% of traffic; reason from the failed step.

        `watch_error`: roll_service failed because its watcher could not judge ECS's rollout (a
        missing service, an error of the watcher itself), not because the rollout failed. Then
        nothing is rolled back: the record ends `failed` with that reason. Raises DeployError or the
        backend's error when restoring fails (the record then says `rollback_failed`; clearing the task
        retries).
        """
        r = self.store.get(self.target, self.dep_id)
        failed_tasks = failed_tasks or []
        if r is not None and failed_tasks and (r.status.failure or {}).get("step") not in failed_tasks:
            why = "canary approval rejected or timed out" if "approve_canary" in failed_tasks else "see that task's log"
            r = self._update(
                failure=rec.Failure(
                    step=", ".join(failed_tasks),
                    reason=f"{', '.join(failed_tasks)} failed ({why})",
                    at=rec.now_iso(),
                )
            )
        if watch_error and r is not None and self._rolling(r) and set(failed_tasks) <= {"roll_service"}:
            return self._watch_failed(r, watch_error)
        if r is None or r.status.previous is None:
            failure = r.status.failure if r is not None else None
            reason = failure["reason"] if failure else "failed before any revision started"
            if r is not None:
                at = rec.now_iso()
                r = self._update(
                    step="rollback",
                    detail={"status": "nothing_started"},
                    event=Event(EventKind.FAILED, at, reason=reason),
                    outcome=Outcome.FAILED,
                    finished_at=at,
                    rollback=rec.RollbackInfo(
                        reason=reason, failed_step=failure["step"] if failure else "", at=at, restored=None
                    ),
                )
                log.info("%s", r.render())
            log.error("deploy failed before a revision started (%s): live traffic untouched", reason)
            return RollbackResult(restored=None, reason=reason)
        failure = r.status.failure or rec.Failure(step="?", reason="an upstream task failed", at=rec.now_iso())
        spec, snap = self._spec(r), self._snap(r)
        log.warning(
            "rolling back %s on %s because %s failed: %s",
            spec.revision,
            self.target,
            failure["step"],
            failure["reason"],
        )
        try:
            if self._rolling(r):
                if r.status.roll is None:
                    raise ctl.DeployError(f"run {self.run_id} rolls in place but recorded no roll to undo")
                self.backend.roll_back(r.status.roll)
                restored = self.backend.weights()
            else:
                restored = ctl.rollback(self.backend, spec.revision, snap, self.p.thresholds())
        except Exception as e:
            self._update(
                step="rollback",
                detail={"status": "failed", "error": str(e)},
                event=Event(EventKind.ROLLBACK_FAILED, rec.now_iso(), reason=str(e)),
                outcome=Outcome.ROLLBACK_FAILED,
            )
            raise
        at = rec.now_iso()
        r = self._update(
            step="rollback",
            detail={"status": "ok", "restored": restored},
            event=Event(EventKind.ROLLED_BACK, at, reason=failure["reason"]),
            outcome=Outcome.ROLLED_BACK,
            finished_at=at,
            weights=restored,
            rollback=rec.RollbackInfo(reason=failure["reason"], failed_step=failure["step"], at=at, restored=restored),
        )
        tag_models(
            self.tracking_uri,
            self.target,
            self.run_id,
            live=None,
            others=snap,
            status="rolled_back",
            reason=failure["reason"],
            bad=spec,
        )
        log.info("%s", r.render())
        log.error("deploy of %s rolled back: %s failed: %s", spec.revision, failure["step"], failure["reason"])
        return RollbackResult(restored=restored, reason=failure["reason"])

    def _watch_failed(self, r: rec.DeploymentRecord, watch_error: str) -> RollbackResult:
        """The rollout was not judged: leave it to ECS (its circuit breaker still guards it)."""
        service = r.status.roll["service"] if r.status.roll else "?"
        reason = (
            f"roll_service: the rollout's watcher failed, not the rollout: {watch_error}. Not rolled back: "
            f"ECS may still complete the rollout; check service {service}"
        )
        at = rec.now_iso()
        r = self._update(
            step="rollback",
            detail={"status": "not_rolled_back", "watch_error": watch_error},
            event=Event(EventKind.FAILED, at, reason=reason),
            outcome=Outcome.FAILED,
            finished_at=at,
            failure=rec.Failure(step="roll_service", reason=reason, at=at),
            rollback=None,
        )
        log.info("%s", r.render())
        log.error("%s", reason)
        return RollbackResult(restored=None, reason=reason)

    def outcome(self) -> OutcomeResult:
        """Print the record; raises DeployFailed (with the reason) unless the deploy succeeded."""
        r = self.store.get(self.target, self.dep_id)
        log.info("%s", r.render() if r else f"no deployment record for {self.run_id}")
        if r is None or r.outcome is not Outcome.SUCCEEDED:
            rollback = r.status.rollback if r else None
            failure = r.status.failure if r else None
            why = (rollback or {}).get("reason") or (failure or {}).get("reason") or "unknown"
            state = r.outcome.value if r else "failed"
            raise DeployFailed(f"deploy {state} on {self.target}: {why}")
        return OutcomeResult(outcome=Outcome.SUCCEEDED.value, revision=r.status.revision, weights=r.status.weights)
