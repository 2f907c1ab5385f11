"""The deploy DAG's steps as plain functions (each one task; no Airflow import here).

State between steps lives in the deployment record (S3), keyed by the run: every step reads what
it needs from there, so any task can be cleared and re-run on its own, and the rollback step works
whichever step failed. Steps also return small dicts for XCom so the grid shows what happened.
Pinning: once a run has resolved its model and pushed its image, a re-run (cleared tasks) reuses
exactly that model version and image digest.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flightdeck import images
from flightdeck import settings as settings_mod
from flightdeck.deploy import controller as ctl
from flightdeck.deploy import records as rec
from flightdeck.deploy.backend import Backend, RevisionSpec

log = logging.getLogger(__name__)

MAX_SHIFT_STEPS = 4  # the DAG has this many shift tasks; a plan uses the first N of them


class DeployFailed(RuntimeError):
    """The run's deploy did not succeed (rolled back or failed); the message says why."""


class StepNotInPlan(Exception):
    """This shift task has no step in the run's plan (the DAG skips it)."""


DEFAULT_PARAMS: dict[str, Any] = {
    "model": "champion",
    "model_name": "",
    "target": "local",
    "strategy": "blue_green",
    "canary_percent": 10,
    "canary_steps": 3,
    "step_seconds": 10,
    "bake_seconds": 20,
    "replicas": 1,
    "healthy_timeout_seconds": 90,
    "max_5xx_rate": 0.05,
    "min_requests": 20,
    "unhealthy_polls": 2,
    "require_approval": False,
    "image": "",
    "env": {},
}


def _params(params: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**DEFAULT_PARAMS, **{k: v for k, v in params.items() if v is not None}}
    merged["model_name"] = merged["model_name"] or settings_mod.load().model_name
    if merged["strategy"] not in ctl.STRATEGIES:
        raise ValueError(f"strategy must be one of {ctl.STRATEGIES}, got {merged['strategy']!r}")
    if merged["target"] not in ("local", "ecs"):
        raise ValueError(f"target must be local or ecs, got {merged['target']!r}")
    return merged


def thresholds(p: Mapping[str, Any]) -> ctl.Thresholds:
    return ctl.Thresholds(
        healthy_timeout_s=float(p["healthy_timeout_seconds"]),
        max_5xx_rate=float(p["max_5xx_rate"]),
        min_requests=int(p["min_requests"]),
        unhealthy_polls=int(p["unhealthy_polls"]),
    )


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
        self.p = _params(existing["params"] if existing and existing.get("params") else params)
        self.target = self.p["target"]

    # -- plumbing ----------------------------------------------------------------------------------
    @property
    def store(self) -> rec.RecordStore:
        if self._store is None:
            from flightdeck.deploy.aws import s3_client

            self._store = rec.RecordStore(s3_client(self.aws_conn_id), self.settings.deploy_bucket)
        return self._store

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            if self.target == "local":
                from flightdeck.deploy.local import platform_backend

                self._backend = platform_backend()
            else:
                from flightdeck.deploy.ecs import EcsBackend

                self._backend = EcsBackend.from_settings(aws_conn_id=self.aws_conn_id)
        return self._backend

    def record(self) -> dict[str, Any]:
        r = self.store.get(self.target, self.dep_id)
        if r is None:
            raise ctl.DeployError(f"no deployment record for run {self.run_id} (did `resolve` run?)")
        return r

    def _update(self, step: str | None = None, detail: dict[str, Any] | None = None, **fields: Any) -> dict:
        return self.store.update(self.target, self.dep_id, step=step, detail=detail, **fields)

    def _step(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run one step; on failure write the reason into the record (the rollback step reads it)."""
        try:
            out = fn()
        except StepNotInPlan:
            raise
        except Exception as e:
            self._update(
                step=name,
                detail={"status": "failed", "reason": str(e)},
                failure={"step": name, "reason": str(e), "at": rec.now_iso()},
            )
            log.error("step %s failed: %s", name, e)
            raise
        self._update(step=name, detail={"status": "ok", **out})
        return out

    def _spec(self) -> RevisionSpec:
        return RevisionSpec.from_dict(self.record()["spec"])

    def _snap(self) -> ctl.Snapshot:
        return ctl.Snapshot.from_dict(self.record()["previous"])

    # -- steps -------------------------------------------------------------------------------------
    def resolve(self) -> dict[str, Any]:
        """Model version (pinned for the run) and a fresh record."""
        existing = self.store.get(self.target, self.dep_id)
        if existing and existing.get("model"):
            log.info(
                "run %s already resolved %s v%s: keeping it",
                self.run_id,
                existing["model"]["name"],
                existing["model"]["version"],
            )
            self._update(step="resolve", detail={"status": "ok", "pinned": True})
            return existing["model"]

        def go() -> dict[str, Any]:
            if self.p["image"] and str(self.p["model"]) in ("", "none"):  # a bare image, no model lineage
                return {"name": self.p["model_name"], "version": "0", "alias": "", "run_id": "", "data_version": ""}
            m = images.resolve_model(self.p["model_name"], str(self.p["model"]), self.tracking_uri)
            return {
                "name": m.name,
                "version": m.version,
                "alias": m.alias,
                "run_id": m.run_id,
                "data_version": m.data_version,
            }

        self._update(dag_id=self.dag_id, run_id=self.run_id, params=self.p, strategy=self.p["strategy"])
        model = self._step("resolve", go)
        self._update(model=model)
        return model

    def build(self) -> dict[str, Any]:
        r = self.record()
        if r.get("image", {}).get("digest") or r.get("image", {}).get("pinned"):
            log.info("run already built %s: keeping that image", r["image"]["pinned"])
            return r["image"]

        def go() -> dict[str, Any]:
            if self.p["image"]:  # deploy a given image (hotfix, tests): no build, but pin it now
                return images.pin_given(self.p["image"])
            m = images.ModelRef(**r["model"])
            registry = self.settings.registry
            if self.target == "ecs":
                from flightdeck.deploy.aws import ensure_ecr_repository

                registry = ensure_ecr_repository(m.name, self.aws_conn_id).rsplit("/", 1)[0]
            with tempfile.TemporaryDirectory(prefix="fd-model-") as tmp:
                model_dir = images.download_model(m, Path(tmp) / "dl", self.tracking_uri)
                built = images.build_image(m, registry=registry, model_dir=model_dir)
            return built.to_dict()

        image = self._step("build", go)
        self._update(image=image)
        return image

    def push(self) -> dict[str, Any]:
        r = self.record()
        image = r["image"]
        if image.get("digest") or image.get("given"):
            log.info("image pinned at %s", image["pinned"])
            return image

        def go() -> dict[str, Any]:
            auth = None
            if self.target == "ecs":
                from flightdeck.deploy.aws import ecr_login

                _, auth = ecr_login(self.aws_conn_id)
            return images.push_image(images.BuiltImage.from_dict(image), auth_config=auth).to_dict()

        image = self._step("push", go)
        self._update(image=image)
        return image

    def register(self) -> dict[str, Any]:
        """The revision to run: a name unique to this run and image, pinned by digest."""
        r = self.record()
        if r.get("spec"):
            return r["spec"]

        to_roll = self._service_to_roll()

        def go() -> dict[str, Any]:
            image, model = r["image"], r["model"]
            key = hashlib.sha256(image["pinned"].encode()).hexdigest()[:8]
            run_key = hashlib.sha256(self.run_id.encode()).hexdigest()[:6]
            revision = to_roll or f"v{model['version']}-{key}-{run_key}".lower()
            # the server's /version names the image it runs from these (a container cannot see its own digest)
            env = {
                "MODEL_NAME": model["name"],
                "MODEL_VERSION": str(model["version"]),
                "IMAGE_REF": image["pinned"],
                "IMAGE_TAG": image.get("tag") or "",
                "IMAGE_DIGEST": image.get("digest") or "",
                **{str(k): str(v) for k, v in (self.p["env"] or {}).items()},
            }
            spec = RevisionSpec(
                revision=revision,
                image=image["pinned"],
                digest=image.get("digest", ""),
                model_name=model["name"],
                model_version=str(model["version"]),
                replicas=int(self.p["replicas"]),
                env=env,
                run_id=self.run_id,
            )
            return spec.to_dict()

        spec = self._step("register", go)
        rolling = bool(to_roll) and spec["revision"] == to_roll
        self._update(
            spec=spec,
            revision=spec["revision"],
            mode="roll" if rolling else "revision",
            plan=[]
            if rolling
            else ctl.plan_steps(
                self.p["strategy"], int(self.p["canary_percent"]), int(self.p["canary_steps"]), int(self.p["replicas"])
            ),
        )
        return spec

    def _service_to_roll(self) -> str:
        """On ECS, strategy rolling updates the one live service in place (ECS's rolling deployment
        with its circuit breaker) instead of starting a revision beside it; the first deploy, or a
        target split between revisions, starts a revision as the other strategies do."""
        if self.target != "ecs" or self.p["strategy"] != "rolling":
            return ""
        live = [r for r, w in self.backend.weights().items() if w > 0]
        return live[0] if len(live) == 1 else ""

    def _rolling(self, r: Mapping[str, Any] | None = None) -> bool:
        return (r or self.record()).get("mode") == "roll"

    def rolling_in_place(self) -> bool:
        """Whether `roll_service` has work: this run rolls an ECS service in place."""
        r = self.record()
        return self._rolling(r) and bool(r.get("roll"))

    def start_new(self) -> dict[str, Any]:
        r = self.record()
        spec = self._spec()
        if self._rolling(r):
            return self._start_roll(r, spec)

        def go() -> dict[str, Any]:
            return ctl.start(self.backend, spec).to_dict()

        snap = self._step("start_new", go)
        self._update(previous=snap, outcome="in_progress", failure=None, rollback=None, finished_at=None)
        return snap

    def _start_roll(self, r: Mapping[str, Any], spec: RevisionSpec) -> dict[str, Any]:
        """Register the new task definition for ECS to roll the live service to (`roll_service`)."""

        def go() -> dict[str, Any]:
            if r.get("roll"):  # a re-run rolls to the task definition this run registered
                return {"roll": r["roll"], "previous": r["previous"]}
            current = self.backend.spec(spec.revision)
            if current is None:
                raise ctl.DeployError(f"cannot read the live spec of {spec.revision} to roll back to")
            snap = ctl.Snapshot(weights={spec.revision: 100}, specs={spec.revision: current.to_dict()})
            return {"roll": self.backend.prepare_roll(spec), "previous": snap.to_dict()}

        out = self._step("start_new", go)
        self._update(
            roll=out["roll"],
            previous=out["previous"],
            outcome="in_progress",
            failure=None,
            rollback=None,
            finished_at=None,
        )
        log.info(
            "rolling ECS service %s from %s to %s",
            out["roll"]["service"],
            out["roll"]["previous_task_definition"],
            out["roll"]["task_definition"],
        )
        return out

    def wait_healthy(self) -> dict[str, Any]:
        spec = self._spec()
        return self._step(
            "wait_healthy",
            lambda: {"healthy": ctl.wait_healthy(self.backend, spec.revision, thresholds(self.p)).healthy},
        )

    def shift(self, index: int) -> dict[str, Any]:
        plan = self.record()["plan"]
        if index > len(plan):
            raise StepNotInPlan(f"plan {plan} has {len(plan)} step(s); shift_{index} has nothing to do")
        pct = plan[index - 1]
        spec, snap = self._spec(), self._snap()
        hold = float(self.p["step_seconds"]) if pct < 100 else 0.0
        return self._step(
            f"shift_{index}", lambda: ctl.shift(self.backend, spec.revision, pct, snap, thresholds(self.p), hold_s=hold)
        )

    def bake(self) -> dict[str, Any]:
        spec, snap = self._spec(), self._snap()
        return self._step(
            "bake",
            lambda: ctl.bake(self.backend, spec.revision, snap, float(self.p["bake_seconds"]), thresholds(self.p)),
        )

    def finalize(self) -> dict[str, Any]:
        r = self.record()
        spec, snap = self._spec(), self._snap()
        out = self._step("finalize", lambda: {"weights": ctl.finalize(self.backend, spec.revision, snap)})
        r = self._update(outcome="succeeded", finished_at=rec.now_iso(), weights=out["weights"])
        self._tag_models(live=spec, others=snap, status="live", reason="")
        log.info("%s", rec.render(r))
        return out

    def rollback(self, failed_tasks: list[str] | None = None, watch_error: str = "") -> dict[str, Any]:
        """Restore the previous revision with 100% of traffic; reason from the failed step.

        `watch_error`: roll_service failed because its watcher could not judge ECS's rollout (a
        missing service, an error of the watcher itself), not because the rollout failed. Then
        nothing is rolled back: the record ends `failed` with that reason.
        """
        r = self.store.get(self.target, self.dep_id)
        failed_tasks = failed_tasks or []
        if r is not None and failed_tasks and (r.get("failure") or {}).get("step") not in failed_tasks:
            why = "canary approval rejected or timed out" if "approve_canary" in failed_tasks else "see that task's log"
            r = self._update(
                failure={
                    "step": ", ".join(failed_tasks),
                    "reason": f"{', '.join(failed_tasks)} failed ({why})",
                    "at": rec.now_iso(),
                }
            )
        if watch_error and r is not None and self._rolling(r) and set(failed_tasks) <= {"roll_service"}:
            return self._watch_failed(r, watch_error)
        if r is None or not r.get("previous"):
            reason = (r or {}).get("failure", {}).get("reason", "failed before any revision started")
            if r is not None:
                r = self._update(
                    step="rollback",
                    detail={"status": "nothing_started"},
                    outcome="failed",
                    finished_at=rec.now_iso(),
                    rollback={"reason": reason, "at": rec.now_iso(), "restored": None},
                )
                log.info("%s", rec.render(r))
            log.error("deploy failed before a revision started (%s): live traffic untouched", reason)
            return {"restored": None, "reason": reason}
        failure = r.get("failure") or {"step": "?", "reason": "an upstream task failed"}
        spec, snap = self._spec(), self._snap()
        log.warning(
            "rolling back %s on %s because %s failed: %s",
            spec.revision,
            self.target,
            failure["step"],
            failure["reason"],
        )
        try:
            if self._rolling(r):
                self.backend.roll_back(r["roll"])
                restored = self.backend.weights()
            else:
                restored = ctl.rollback(self.backend, spec.revision, snap, thresholds(self.p))
        except Exception as e:
            self._update(step="rollback", detail={"status": "failed", "error": str(e)}, outcome="rollback_failed")
            raise
        r = self._update(
            step="rollback",
            detail={"status": "ok", "restored": restored},
            outcome="rolled_back",
            finished_at=rec.now_iso(),
            weights=restored,
            rollback={
                "reason": failure["reason"],
                "failed_step": failure["step"],
                "at": rec.now_iso(),
                "restored": restored,
            },
        )
        self._tag_models(live=None, others=snap, status="rolled_back", reason=failure["reason"], bad=spec)
        log.info("%s", rec.render(r))
        log.error("deploy of %s rolled back: %s failed: %s", spec.revision, failure["step"], failure["reason"])
        return {"restored": restored, "reason": failure["reason"]}

    def _watch_failed(self, r: Mapping[str, Any], watch_error: str) -> dict[str, Any]:
        """The rollout was not judged: leave it to ECS (its circuit breaker still guards it)."""
        service = (r.get("roll") or {}).get("service", "?")
        reason = (
            f"roll_service: the rollout's watcher failed, not the rollout: {watch_error}. Not rolled back: "
            f"ECS may still complete the rollout; check service {service}"
        )
        r = self._update(
            step="rollback",
            detail={"status": "not_rolled_back", "watch_error": watch_error},
            outcome="failed",
            finished_at=rec.now_iso(),
            failure={"step": "roll_service", "reason": reason, "at": rec.now_iso()},
            rollback=None,
        )
        log.info("%s", rec.render(r))
        log.error("%s", reason)
        return {"restored": None, "reason": reason}

    def outcome(self) -> dict[str, Any]:
        """Print the record; fail (with the reason) unless the deploy succeeded."""
        r = self.store.get(self.target, self.dep_id) or {}
        log.info("%s", rec.render(r) if r else f"no deployment record for {self.run_id}")
        if r.get("outcome") != "succeeded":
            why = (r.get("rollback") or {}).get("reason") or (r.get("failure") or {}).get("reason") or "unknown"
            raise DeployFailed(f"deploy {r.get('outcome', 'failed')} on {self.target}: {why}")
        return {"outcome": "succeeded", "revision": r.get("revision"), "weights": r.get("weights")}

    # -- registry tags ------------------------------------------------------------------------------
    def _tag_models(
        self, live: RevisionSpec | None, others: ctl.Snapshot, status: str, reason: str, bad: RevisionSpec | None = None
    ) -> None:
        """Tag model versions with what the target serves, so registry and service never disagree
        silently (aliases stay the retrain pipeline's business)."""
        specs = [live, bad, *(RevisionSpec.from_dict(d) for d in others.specs.values())]
        if not any(s and s.model_name and s.model_version not in ("", "0") for s in specs):
            return  # bare images: no registered model to tag (and no reason to import MLflow)
        try:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=self.tracking_uri)
            prefix = f"deploy.{self.target}"

            def tag(spec: RevisionSpec, values: dict[str, str]) -> None:
                if not spec.model_name or spec.model_version in ("", "0"):
                    return
                for k, v in values.items():
                    client.set_model_version_tag(spec.model_name, spec.model_version, f"{prefix}.{k}", v)

            if live is not None:
                tag(live, {"status": "live", "digest": live.digest, "run_id": self.run_id})
                for d in others.specs.values():
                    prev = RevisionSpec.from_dict(d)
                    if prev.model_version != live.model_version:
                        tag(prev, {"status": "retired"})
            if bad is not None:
                tag(bad, {"status": status, "rollback_reason": reason[:4000], "run_id": self.run_id})
                for r, d in others.specs.items():
                    if others.weights.get(r, 0) > 0:
                        tag(RevisionSpec.from_dict(d), {"status": "live"})
        except Exception:  # tagging must not turn a finished rollback into a failure
            log.exception("could not tag model versions in MLflow")
