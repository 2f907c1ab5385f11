"""Deploy: a registered model -> its serving image -> live behind the load balancer, or rolled back.

Trigger by hand with the form: model version or alias, target (local: containers behind HAProxy on
this machine; ecs: ECS services behind an ALB; ec2: Auto Scaling groups behind an ALB), strategy
(blue_green, canary, rolling), canary percent and steps, bake time, health thresholds and autoscaling.
Every step is a task; each canary step is its own `shift_N` task (steps a plan does not use are
skipped). On ECS, `rolling` updates the live service in place: `roll_service` (deferrable) has ECS
replace its tasks under the deployment circuit breaker and watches the rollout. On EC2, `rolling`
refreshes the live group's instances to a new launch template version: `refresh_instances`
(deferrable) runs an instance refresh with the canary steps as checkpoints and Auto Scaling's own
rollback on. The shift steps are skipped when a revision rolls in place. Any failure runs `rollback` (trigger
rule one_failed): it restores the previous revision with 100% of traffic, writes the reason into
the deployment record (s3://flightdeck-deployments/records/<target>/<run>.json) and tags the MLflow
model version; `outcome` then prints the record and fails the run with the reason. Clearing a
failed `rollback` retries it; clearing `start_new` (with downstream) of an older run redeploys
exactly that run's image digest. One deploy at a time (max_active_runs=1): a second run waits.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from flightdeck_deploy_operators import Ec2InstanceRefreshOperator, EcsServiceDeployOperator  # plugins/
from flightdeck_notify import FlightdeckFailureNotifier  # plugins/: log line, Slack or SNS

from flightdeck.deploy.backend import ScalingMetric
from flightdeck.deploy.controller import STRATEGIES
from flightdeck.deploy.ecs_rollout import WATCH_ERROR_XCOM_KEY
from flightdeck.deploy.params import DEFAULTS, MAX_SHIFT_STEPS
from flightdeck.deploy.steps import Deploy, StepNotInPlan
from flightdeck.deploy.targets import TARGETS
from flightdeck.images import ModelFilesMissing

# Steps that judge the new revision must hand over to rollback at once, not retry; the others are
# idempotent (pinned by the run's record) and retry.
UNHEALTHY_FAST = "Fail fast: a revision that is not healthy in time hands over to `rollback` at once."
BAKE_FAST = "Fail fast: bad health or 5xx rate at full traffic hands over to `rollback` at once."
SHIFT_FAST = "Fail fast: a canary step that sees bad health or 5xx hands over to `rollback` at once."


def _run(step: Callable[..., Any], params: dict, run_id: str, *args: int) -> Any:
    """Call one step of the run (`Deploy.resolve`, `Deploy.shift` with its index, ...)."""
    try:
        return step(Deploy(run_id, params), *args)
    except StepNotInPlan as e:
        raise AirflowSkipException(str(e)) from None
    except ModelFilesMissing as e:  # a retry downloads the same nothing: hand over to rollback at once
        raise AirflowFailException(str(e)) from None


@dag(
    dag_id=Path(__file__).stem,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["flightdeck", "deploy"],
    doc_md=__doc__,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=10),
        "on_failure_callback": FlightdeckFailureNotifier(),
    },
    params={
        "model": Param(
            DEFAULTS.model,
            type="string",
            title="Model version or alias",
            description="A version number, an alias (champion, challenger, previous) or 'none' with an image below",
        ),
        "model_name": Param(DEFAULTS.model_name, type="string", title="Registered model (empty: the platform default)"),
        "target": Param(DEFAULTS.target, enum=list(TARGETS), title="Target"),
        "strategy": Param(DEFAULTS.strategy, enum=sorted(STRATEGIES), title="Strategy"),
        "canary_percent": Param(
            DEFAULTS.canary_percent, type="integer", minimum=1, maximum=100, title="Canary: first step %"
        ),
        "canary_steps": Param(
            DEFAULTS.canary_steps, type="integer", minimum=1, maximum=MAX_SHIFT_STEPS, title="Canary: steps to 100%"
        ),
        "step_seconds": Param(DEFAULTS.step_seconds, type="integer", minimum=0, title="Watch time per canary step (s)"),
        "bake_seconds": Param(DEFAULTS.bake_seconds, type="integer", minimum=0, title="Bake time at 100% (s)"),
        "replicas": Param(DEFAULTS.replicas, type="integer", minimum=1, maximum=4, title="Replicas"),
        "healthy_timeout_seconds": Param(
            DEFAULTS.healthy_timeout_seconds, type="integer", minimum=5, title="Wait-healthy timeout (s)"
        ),
        "max_5xx_rate": Param(DEFAULTS.max_5xx_rate, type="number", minimum=0, maximum=1, title="Max 5xx rate"),
        "min_requests": Param(
            DEFAULTS.min_requests, type="integer", minimum=1, title="Min responses to judge the 5xx rate"
        ),
        "unhealthy_polls": Param(
            DEFAULTS.unhealthy_polls, type="integer", minimum=1, title="Consecutive unhealthy polls to fail"
        ),
        "require_approval": Param(DEFAULTS.require_approval, type="boolean", title="Hold the canary for approval"),
        "image": Param(DEFAULTS.image, type="string", title="Advanced: deploy this image instead of building"),
        "env": Param(dict(DEFAULTS.env), type="object", title="Advanced: extra container environment"),
        "min_capacity": Param(DEFAULTS.min_capacity, type="integer", minimum=1, title="Autoscaling (ecs, ec2): min"),
        "max_capacity": Param(DEFAULTS.max_capacity, type="integer", minimum=1, title="Autoscaling (ecs, ec2): max"),
        "scaling_metric": Param(
            DEFAULTS.scaling_metric, enum=[m.value for m in ScalingMetric], title="Autoscaling: target-tracking metric"
        ),
        "scaling_target": Param(
            DEFAULTS.scaling_target,
            type="number",
            minimum=0,
            title="Autoscaling: target value (0 = 60 % CPU or 1000 requests/target/min)",
        ),
        "min_healthy_percent": Param(
            DEFAULTS.min_healthy_percent,
            type="integer",
            minimum=0,
            maximum=100,
            title="Rolling on ec2: percent kept in service",
        ),
        "aws_conn_id": Param(DEFAULTS.aws_conn_id, type="string", title="AWS connection (ecs, ec2)"),
        "capture_percent": Param(
            DEFAULTS.capture_percent,
            type=["null", "number"],
            minimum=0,
            maximum=100,
            title="Capture: % of requests recorded to S3 (0 = off; empty: params.yaml monitor.capture_percent)",
        ),
    },
)
def deploy():
    def step(task_id: str, fn: Callable[..., Any], *args: int, trigger_rule: str = "all_success", fail_fast: str = ""):
        """A task that runs `fn` (a Deploy step) for the run; `fail_fast`: no retries, this doc."""
        fast = {"retries": 0, "doc_md": fail_fast} if fail_fast else {}

        @task(task_id=task_id, trigger_rule=trigger_rule, **fast)
        def run(params: dict | None = None, run_id: str | None = None) -> Any:
            return _run(fn, params, run_id, *args)

        return run()

    resolve, build = step("resolve", Deploy.resolve), step("build", Deploy.build)
    push, register = step("push", Deploy.push), step("register", Deploy.register)
    start_new = step("start_new", Deploy.start_new)
    wait_healthy = step("wait_healthy", Deploy.wait_healthy, trigger_rule="none_failed", fail_fast=UNHEALTHY_FAST)
    shifts = [
        step(f"shift_{i}", Deploy.shift, i, trigger_rule="none_failed", fail_fast=SHIFT_FAST)
        for i in range(1, MAX_SHIFT_STEPS + 1)
    ]

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def approval_wanted(params: dict | None = None) -> bool:
        return bool(params["require_approval"]) and params["strategy"] == "canary"

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def ecs_rolls_the_service(run_id: str | None = None, params: dict | None = None) -> bool:
        return Deploy(run_id, params).rolling_in_place("ecs")

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def ec2_refreshes_the_group(run_id: str | None = None, params: dict | None = None) -> bool:
        return Deploy(run_id, params).rolling_in_place("ec2")

    start_roll = "{{ ti.xcom_pull(task_ids='start_new')['roll']"
    roll_service = EcsServiceDeployOperator(
        task_id="roll_service",
        cluster=start_roll + "['cluster'] }}",
        service=start_roll + "['service'] }}",
        task_definition=start_roll + "['task_definition'] }}",
        aws_conn_id="{{ params.aws_conn_id }}",
        deferrable=True,
        waiter_delay=15,
        waiter_max_attempts=80,
        retries=0,
        doc_md="Fail fast: ECS's rolling update of the live service; a rollout the circuit breaker "
        "fails hands over to `rollback` at once.",
    )
    refresh_instances = Ec2InstanceRefreshOperator(
        task_id="refresh_instances",
        refresh="{{ ti.xcom_pull(task_ids='start_new')['roll'] | tojson }}",
        aws_conn_id="{{ params.aws_conn_id }}",
        deferrable=True,
        waiter_delay=15,
        waiter_max_attempts=120,
        retries=0,
        doc_md="Fail fast: an instance refresh of the live Auto Scaling group; one that fails or that Auto "
        "Scaling rolls back hands over to `rollback` at once.",
    )

    approve = ApprovalOperator(
        task_id="approve_canary",
        subject="Promote the canary of {{ run_id }} beyond its first step?",
        body="Target {{ params.target }}, model {{ params.model }}, strategy {{ params.strategy }}. "
        "Reject (or no answer in 30 minutes) rolls back.",
        response_timeout=timedelta(minutes=30),
        fail_on_reject=True,
        retries=0,
        doc_md="Fail fast: a rejected or unanswered approval hands over to `rollback`.",
    )
    bake = step("bake", Deploy.bake, trigger_rule="none_failed", fail_fast=BAKE_FAST)
    finalize = step("finalize", Deploy.finalize)

    @task(task_id="rollback", trigger_rule="one_failed", retry_delay=timedelta(seconds=5))
    def rollback(params: dict | None = None, run_id: str | None = None, ti=None) -> dict:
        try:  # which upstream failed: steps record their own reason, an approval does not
            states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id]).get(run_id, {})
            failed = sorted(t for t, s in states.items() if s == "failed" and t != "rollback")
        except Exception:  # the reason is a nicety; the rollback must run regardless
            failed = []
        # roll_service leaves this when its watcher (not the rollout) failed: nothing to roll back
        watch_error = ti.xcom_pull(task_ids="roll_service", key=WATCH_ERROR_XCOM_KEY) if ti else None
        return Deploy(run_id, params).rollback(failed_tasks=failed, watch_error=watch_error or "")

    chain = [resolve, build, push, register, start_new, wait_healthy, shifts[0]]
    for a, b in zip(chain, chain[1:], strict=False):
        a >> b
    start_new >> ecs_rolls_the_service() >> roll_service >> wait_healthy
    start_new >> ec2_refreshes_the_group() >> refresh_instances >> wait_healthy
    gate = approval_wanted()
    shifts[0] >> gate >> approve >> shifts[1]
    for a, b in zip(shifts[1:], shifts[2:], strict=False):
        a >> b
    shifts[-1] >> bake >> finalize
    undo = rollback()
    # not the short-circuits: their skips would skip rollback
    [*chain, roll_service, refresh_instances, *shifts, approve, bake, finalize] >> undo

    @task(
        task_id="outcome",
        trigger_rule="all_done",
        retries=0,
        doc_md="Fail fast: prints the deployment record and fails the run unless the deploy succeeded.",
    )
    def outcome(params: dict | None = None, run_id: str | None = None) -> dict:
        return _run(Deploy.outcome, params, run_id)

    [finalize, undo] >> outcome()


deploy()
