"""The ECS target against a moto server: every AWS call of the flow is a real API call with real
request/response shapes (task definitions, services, target groups, listener weights, scaling,
logs, CloudWatch metrics).

moto cannot run tasks, register them in target groups, report targets unhealthy, count ALB
requests or progress/roll back ECS deployments. Those states are INJECTED here, and each test
says where: we register EC2 instances as targets to stand for "ECS registered healthy tasks",
leave a target group empty for "tasks never became healthy", put ALB metrics into CloudWatch for
"the ALB saw 5xx", and rewrite a describe_services answer for "the circuit breaker failed the
deployment". Rollback itself is proven for real on the local target (test_deploy_local.py).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from flightdeck.deploy import controller as ctl
from flightdeck.deploy.backend import RevisionSpec
from flightdeck.deploy.ecs import EcsBackend, EcsConfig, deployment_state
from tests.support.moto_aws import client, ecr_revision, inject_alb_metrics, moto_server, sandbox

pytestmark = pytest.mark.integration

PORT = 8481
ENDPOINT = f"http://127.0.0.1:{PORT}"
CONN = "moto_deploy"
TH = ctl.Thresholds(healthy_timeout_s=3, poll_s=0.2, min_requests=10, max_5xx_rate=0.05)


@pytest.fixture(scope="module")
def moto():
    with moto_server(PORT, CONN, env={"MOTO_ECS_SERVICE_RUNNING": "0"}) as endpoint:
        yield endpoint


def _boto(service: str):
    return client(ENDPOINT, service)


@pytest.fixture(scope="module")
def env(moto):
    """Network, ALB, listener and cluster: what a platform's infrastructure code would have made (the
    RUNBOOK's prerequisites, as the sandbox makes them, plus the ECS cluster)."""
    infra = sandbox.prerequisites(ENDPOINT)
    vpc, subnets, listener = infra["vpc"], infra["subnets"], infra["listener"]
    ec2 = _boto("ec2")
    _boto("ecs").create_cluster(clusterName="flightdeck")
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    instances = [
        i["InstanceId"]
        for i in ec2.run_instances(ImageId=ami, MinCount=2, MaxCount=2, SubnetId=subnets[0])["Instances"]
    ]
    cfg = EcsConfig(
        cluster="flightdeck",
        listener_arn=listener,
        vpc_id=vpc,
        subnets=tuple(subnets),
        launch_type="EC2",
        network_mode="bridge",
        memory="256",
    )
    backend = EcsBackend.from_settings(aws_conn_id=CONN, cfg=cfg)
    return {"cfg": cfg, "backend": backend, "instances": instances}


def _spec(version: str, replicas: int = 1) -> RevisionSpec:
    return ecr_revision(version, replicas)


def _inject_healthy_targets(env, backend: EcsBackend, revision: str, n: int = 1) -> None:
    """INJECTED: stands for ECS registering the service's running tasks in its target group."""
    arn = backend.listener.tg_arn(revision)
    _boto("elbv2").register_targets(TargetGroupArn=arn, Targets=[{"Id": i, "Port": 8080} for i in env["instances"][:n]])


def _listener_weights(env) -> dict[str, int]:
    listener = _boto("elbv2").describe_listeners(ListenerArns=[env["cfg"].listener_arn])["Listeners"][0]
    out = {}
    for tg in listener["DefaultActions"][0]["ForwardConfig"]["TargetGroups"]:
        name = tg["TargetGroupArn"].split(":")[-1].split("/")[1]
        out[name] = tg["Weight"]
    return out


def _deploy_ok(env, spec: RevisionSpec) -> ctl.Snapshot:
    b = env["backend"]
    snap = ctl.start(b, spec)
    _inject_healthy_targets(env, b, spec.revision, spec.replicas)
    ctl.wait_healthy(b, spec.revision, TH)
    ctl.shift(b, spec.revision, 100, snap, TH)
    ctl.finalize(b, spec.revision, snap)
    return snap


def test_first_revision_every_resource_and_call(env):
    b, spec = env["backend"], _spec("1")
    _deploy_ok(env, spec)
    ecs, elb = _boto("ecs"), _boto("elbv2")
    svc = ecs.describe_services(cluster="flightdeck", services=[b.service_name(spec.revision)])["services"][0]
    assert svc["status"] == "ACTIVE" and svc["desiredCount"] == 1
    tg = elb.describe_target_groups(Names=[b.listener.tg_name(spec.revision)])["TargetGroups"][0]
    assert svc["loadBalancers"][0]["targetGroupArn"] == tg["TargetGroupArn"]
    assert tg["HealthCheckPath"] == "/readyz" and tg["Matcher"]["HttpCode"] == "200"
    td = ecs.describe_task_definition(taskDefinition=svc["taskDefinition"], include=["TAGS"])
    container = td["taskDefinition"]["containerDefinitions"][0]
    assert container["image"].endswith("@" + spec.digest)  # pinned by digest
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    assert container["logConfiguration"]["options"]["awslogs-group"] == "/flightdeck/serving"
    assert {"key": "fd.model_version", "value": "1"} in td["tags"]
    assert _listener_weights(env) == {b.listener.tg_name(spec.revision): 100}
    scaling = _boto("application-autoscaling")
    target = scaling.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in target] == [
        (f"service/flightdeck/{b.service_name(spec.revision)}", 1, 4)
    ]
    policy = scaling.describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"][0]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert (
        policy["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"]["PredefinedMetricType"]
        == "ECSServiceAverageCPUUtilization"
    )
    assert _boto("logs").describe_log_groups(logGroupNamePrefix="/flightdeck/serving")["logGroups"]
    assert b.weights() == {spec.revision: 100}
    assert b.spec(spec.revision).image == spec.image  # what rollback would restart it from


def test_blue_green_then_canary_shift_listener_weights(env):
    b = env["backend"]
    old = next(iter(b.weights()))
    spec = _spec("2")
    snap = ctl.start(b, spec)
    assert snap.weights == {old: 100}
    _inject_healthy_targets(env, b, spec.revision)
    ctl.wait_healthy(b, spec.revision, TH)
    for pct in ctl.plan_steps("canary", 10, 3):
        ctl.shift(b, spec.revision, pct, snap, TH)
        assert _listener_weights(env)[b.listener.tg_name(spec.revision)] == pct
        if pct < 100:
            assert _listener_weights(env)[b.listener.tg_name(old)] == 100 - pct
    ctl.finalize(b, spec.revision, snap)
    assert b.weights() == {spec.revision: 100}
    svc = _boto("ecs").describe_services(cluster="flightdeck", services=[b.service_name(old)])["services"]
    assert not svc or svc[0]["status"] != "ACTIVE"  # old service retired
    with pytest.raises(_boto("elbv2").exceptions.TargetGroupNotFoundException):
        _boto("elbv2").describe_target_groups(Names=[b.listener.tg_name(old)])


def test_never_healthy_revision_is_rolled_back(env):
    """INJECTED: no target is ever registered for the new service (its tasks never pass /readyz)."""
    b = env["backend"]
    live = b.weights()
    spec = _spec("3")
    snap = ctl.start(b, spec)
    with pytest.raises(ctl.DeployError, match="not healthy"):
        ctl.wait_healthy(b, spec.revision, TH)
    ctl.rollback(b, spec.revision, snap, TH)
    assert b.weights() == live
    assert set(_listener_weights(env)) == {b.listener.tg_name(r) for r in live}
    svc = _boto("ecs").describe_services(cluster="flightdeck", services=[b.service_name(spec.revision)])
    assert all(s["status"] != "ACTIVE" for s in svc["services"])
    ids = [
        t["ResourceId"]
        for t in _boto("application-autoscaling").describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
    ]
    assert f"service/flightdeck/{b.service_name(spec.revision)}" not in ids


def test_5xx_during_canary_pulls_traffic_back_then_rollback(env):
    """INJECTED: the ALB's CloudWatch metrics report 40% 5xx for the canary's target group."""
    b = env["backend"]
    live = b.weights()
    spec = _spec("4")
    snap = ctl.start(b, spec)
    _inject_healthy_targets(env, b, spec.revision)
    ctl.wait_healthy(b, spec.revision, TH)
    ctl.shift(b, spec.revision, 10, snap, TH)
    assert _listener_weights(env)[b.listener.tg_name(spec.revision)] == 10
    # The errors arrive while the bake watches (its baseline is read first, when there are none yet).
    late = threading.Timer(
        0.5, inject_alb_metrics, (ENDPOINT, b.listener, spec.revision), {"requests": 50, "errors": 20}
    )
    late.start()
    with pytest.raises(ctl.DeployError, match="5xx rate"):
        ctl.bake(b, spec.revision, snap, 3, TH)
    late.join()
    assert _listener_weights(env)[b.listener.tg_name(spec.revision)] == 0  # the guard, before rollback runs
    ctl.rollback(b, spec.revision, snap, TH)
    assert b.weights() == live


def test_rollback_restarts_a_retired_previous_revision(env):
    """After finalize retired the old service, a later rollback must recreate it from its task definition."""
    b = env["backend"]
    (prev,) = b.weights()
    spec = _spec("5")
    snap = _deploy_ok(env, spec)
    assert prev not in b.weights()

    class ReinjectingBackend(EcsBackend):  # INJECTED: the recreated service's tasks register healthy
        def start_revision(self, s: RevisionSpec) -> None:
            super().start_revision(s)
            _inject_healthy_targets(env, self, s.revision)

    rb = ReinjectingBackend(b.cfg, b._client)
    ctl.rollback(rb, spec.revision, snap, TH)
    assert b.weights() == {prev: 100}


def test_rolling_deployment_state_and_circuit_breaker(env):
    """ECS's own rolling update: moto keeps deployments IN_PROGRESS; FAILED is INJECTED."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
    from flightdeck_deploy_operators import EcsServiceDeployOperator

    b = env["backend"]
    (live,) = b.weights()
    td = b.register(_spec("6"))
    op = EcsServiceDeployOperator(
        task_id="roll",
        cluster="flightdeck",
        service=b.service_name(live),
        task_definition=td,
        aws_conn_id=CONN,
        wait_for_completion=False,
    )
    deployment_id = op.execute({})
    ecs = _boto("ecs")
    svc = ecs.describe_services(cluster="flightdeck", services=[b.service_name(live)])["services"][0]
    assert svc["taskDefinition"] == td
    assert any(d["id"] == deployment_id and d["status"] == "PRIMARY" for d in svc["deployments"])
    assert deployment_state(ecs, "flightdeck", b.service_name(live), deployment_id)[0] == "IN_PROGRESS"

    def failed_rollout(parsed, **_):  # INJECTED: moto's real answer with the circuit breaker's verdict written in
        for d in parsed["services"][0]["deployments"]:
            if d["status"] == "PRIMARY":
                d.update(rolloutState="FAILED", rolloutStateReason="tasks failed to start")

    ecs.meta.events.register("after-call.ecs.DescribeServices", failed_rollout)
    assert deployment_state(ecs, "flightdeck", b.service_name(live), deployment_id) == (
        "FAILED",
        "tasks failed to start",
    )
    waiting = EcsServiceDeployOperator(
        task_id="roll2",
        cluster="flightdeck",
        service=b.service_name(live),
        task_definition=td,
        aws_conn_id=CONN,
        waiter_delay=0,
        waiter_max_attempts=2,
    )
    from airflow.sdk.exceptions import AirflowException

    with pytest.raises(AirflowException, match="still in progress"):
        waiting.execute({})
    with pytest.raises(AirflowException, match="FAILED: tasks failed"):
        waiting.execute_complete({}, {"status": "FAILED", "deployment_id": deployment_id, "reason": "tasks failed"})


def test_ecr_repository_and_login_through_the_hook(moto):
    """ECR side of the flow (the push itself needs a real registry: moto does not serve one)."""
    from flightdeck.deploy.aws import ecr_login, ensure_ecr_repository

    uri = ensure_ecr_repository("flightdeck-model", CONN)
    assert uri.endswith("/flightdeck-model")
    assert ensure_ecr_repository("flightdeck-model", CONN) == uri  # idempotent
    repo = _boto("ecr").describe_repositories(repositoryNames=["flightdeck-model"])["repositories"][0]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"]["scanOnPush"] is True
    host, auth = ecr_login(CONN)
    assert host and auth["username"] == "AWS" and auth["password"]


@pytest.fixture(scope="module")
def records(moto):
    from flightdeck.deploy import records as rec

    s3 = _boto("s3")
    s3.create_bucket(Bucket="flightdeck-deployments")
    return rec.RecordStore(s3, "flightdeck-deployments")


def _operator(**kw):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
    from flightdeck_deploy_operators import EcsServiceDeployOperator

    return EcsServiceDeployOperator(aws_conn_id=CONN, **kw)


def _rolling_run(env, records, version: str):
    """The deploy DAG's tasks up to `roll_service`, for strategy rolling on ECS."""
    from flightdeck.deploy.steps import Deploy

    digest = "sha256:" + f"{int(version):064x}"
    params = {
        "target": "ecs",
        "strategy": "rolling",
        "model": "none",
        "model_name": "flightdeck-model",
        "image": f"123456789012.dkr.ecr.us-east-1.amazonaws.com/flightdeck-model@{digest}",
        "bake_seconds": 1,
        "healthy_timeout_seconds": 3,
        "env": {"MODEL_VERSION": version},
    }
    d = Deploy(f"manual__roll_{version}", params, store=records, backend=env["backend"], aws_conn_id=CONN)
    for step in ("resolve", "build", "push", "register"):
        getattr(d, step)()
    return d, d.start_new()


def test_rolling_updates_the_live_service_in_place(env, records):
    """ECS strategy rolling = the live service rolled to a new task definition by ECS (circuit breaker
    on), no second service or listener change. INJECTED: the rollout's COMPLETED state (moto keeps
    deployments IN_PROGRESS), so the operator here does not wait."""
    from flightdeck.deploy.steps import StepNotInPlan

    b = env["backend"]
    (live,) = b.weights()
    listener_before = _listener_weights(env)
    d, started = _rolling_run(env, records, "7")
    assert d.rolling_in_place() and d.record().status.plan == [] and d.record().status.revision_spec.revision == live
    roll = started["roll"]
    assert roll["service"] == b.service_name(live)
    svc = _boto("ecs").describe_services(cluster="flightdeck", services=[roll["service"]])["services"][0]
    assert roll["previous_task_definition"] == svc["taskDefinition"]
    assert f"task-definition/{b.family(live)}:" in roll["task_definition"]  # the live service's family
    _operator(
        task_id="roll_service",
        cluster=roll["cluster"],
        service=roll["service"],
        task_definition=roll["task_definition"],
        wait_for_completion=False,
    ).execute({})
    d.wait_healthy()
    for i in range(1, 5):
        with pytest.raises(StepNotInPlan):
            d.shift(i)
    d.bake()
    d.finalize()
    assert d.outcome()["outcome"] == "succeeded"
    svc = _boto("ecs").describe_services(cluster="flightdeck", services=[roll["service"]])["services"][0]
    assert svc["taskDefinition"] == roll["task_definition"]
    assert svc["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert b.weights() == {live: 100} and _listener_weights(env) == listener_before
    assert b.spec(live).env["MODEL_VERSION"] == "7" and b.spec(live).image.endswith(f"{7:064x}")


def test_rolling_that_the_circuit_breaker_fails_is_rolled_back(env, records):
    """INJECTED: the circuit breaker's FAILED verdict, as the deferred trigger would report it."""
    from airflow.sdk.exceptions import AirflowException

    b = env["backend"]
    (live,) = b.weights()
    d, started = _rolling_run(env, records, "8")
    roll = started["roll"]
    op = _operator(
        task_id="roll_service",
        cluster=roll["cluster"],
        service=roll["service"],
        task_definition=roll["task_definition"],
        wait_for_completion=False,
    )
    deployment_id = op.execute({})
    with pytest.raises(AirflowException, match="FAILED: tasks failed to start"):
        op.execute_complete({}, {"status": "FAILED", "deployment_id": deployment_id, "reason": "tasks failed to start"})
    out = d.rollback(failed_tasks=["roll_service"])
    assert "roll_service failed" in out["reason"] and out["restored"] == {live: 100}
    ecs = _boto("ecs")
    svc = ecs.describe_services(cluster="flightdeck", services=[roll["service"]])["services"][0]
    assert svc["taskDefinition"] == roll["previous_task_definition"]
    bad = ecs.describe_task_definition(taskDefinition=roll["task_definition"])["taskDefinition"]
    assert bad["status"] == "INACTIVE"
    assert b.spec(live).env["MODEL_VERSION"] == "7"  # what serves (and what a later rollback restores)
    assert d.record().outcome.value == "rolled_back"
    d.rollback(failed_tasks=["roll_service"])  # clearing the rollback task: idempotent
    assert (
        ecs.describe_services(cluster="flightdeck", services=[roll["service"]])["services"][0]["taskDefinition"]
        == roll["previous_task_definition"]
    )


# -- the rollout watcher against moto: transient errors are retried, a watcher error is not a rollback ---------------
def _throttle_once_then_completed(client, deployment_id: str, calls: dict[str, int]) -> None:
    """INJECTED on a real (moto-backed) client: the first describe_services is throttled (the answer AWS
    gives past botocore's own retries), later ones are moto's real answer with COMPLETED written in
    (moto keeps deployments IN_PROGRESS)."""
    from botocore.awsrequest import AWSResponse

    calls.update(throttled=0, answered=0)

    def throttle(**_):
        if calls["throttled"] == 0:
            calls["throttled"] += 1
            error = {
                "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
            return AWSResponse("", 400, {}, None), error
        return None

    def completed(parsed, **_):
        for d in (parsed.get("services") or [{}])[0].get("deployments", []):
            if d["id"] == deployment_id:
                d["rolloutState"] = "COMPLETED"
                calls["answered"] += 1

    client.meta.events.register("before-call.ecs.DescribeServices", throttle)
    client.meta.events.register("after-call.ecs.DescribeServices", completed)


def _inject_into_async_clients(monkeypatch, inject) -> None:
    """RolloutHook.get_async_conn as it is, but `inject(client)` runs on each aiobotocore client it
    opens, before the trigger uses it."""
    from flightdeck.deploy.ecs_rollout import RolloutHook

    real_conn = RolloutHook.get_async_conn

    async def injected_conn(self):
        cm = await real_conn(self)

        class Injecting:
            async def __aenter__(self_):
                client = await cm.__aenter__()
                inject(client)
                return client

            async def __aexit__(self_, *exc):
                return await cm.__aexit__(*exc)

        return Injecting()

    monkeypatch.setattr(RolloutHook, "get_async_conn", injected_conn)


def _first_event(trigger) -> dict:
    import asyncio

    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first())


def test_sync_watch_retries_a_throttle_and_completes(env, caplog):
    import logging

    b = env["backend"]
    (live,) = b.weights()
    td = b.register(_spec("11"))
    op = _operator(
        task_id="roll_service",
        cluster="flightdeck",
        service=b.service_name(live),
        task_definition=td,
        deferrable=False,
        waiter_delay=0,
        waiter_max_attempts=3,
    )
    real_update = op.hook.conn.update_service

    def update_then_inject(**kw):  # the deployment id exists only once update_service answered
        out = real_update(**kw)
        new = next(d["id"] for d in out["service"]["deployments"] if d["status"] == "PRIMARY")
        _throttle_once_then_completed(op.hook.conn, new, calls)
        return out

    calls: dict = {}
    op.hook.conn.update_service = update_then_inject
    with caplog.at_level(logging.INFO):
        deployment_id = op.execute({})
    assert deployment_id.startswith("ecs-svc/")
    assert calls == {"throttled": 1, "answered": 1}  # one throttle, then one real answer that completed it
    assert "retriable error: ThrottlingException" in caplog.text


def test_deferred_watch_retries_a_throttle_and_completes(env, monkeypatch):
    """The trigger's aiobotocore client against moto, with the same injection."""
    from airflow.sdk.exceptions import TaskDeferred

    b = env["backend"]
    (live,) = b.weights()
    op = _operator(
        task_id="roll_service",
        cluster="flightdeck",
        service=b.service_name(live),
        task_definition=b.register(_spec("12")),
        deferrable=True,
        waiter_delay=0,
        waiter_max_attempts=3,
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    trigger = deferred.value.trigger
    assert deferred.value.timeout.total_seconds() == 0 * 3 + 60 and deferred.value.method_name == "execute_complete"
    calls: dict = {}
    _inject_into_async_clients(
        monkeypatch, lambda client: _throttle_once_then_completed(client, trigger.deployment_id, calls)
    )
    event = _first_event(trigger)
    assert event["status"] == "COMPLETED" and calls == {"throttled": 1, "answered": 1}
    assert op.execute_complete({}, event) == trigger.deployment_id


def test_missing_service_ends_the_watch_with_a_reason_and_no_rollback(env, records, monkeypatch):
    """moto's own answer for a service that is not there matches the MISSING acceptor; a roll whose
    service vanishes (INJECTED: that answer, for the rolled service) fails the watch, and rollback
    then leaves ECS's rollout alone."""
    from flightdeck.deploy.ecs_rollout import WATCH_ERROR_XCOM_KEY, EcsWatchError
    from flightdeck.deploy.steps import DeployFailed

    ecs = _boto("ecs")
    state, reason = deployment_state(ecs, "flightdeck", "flightdeck-serving-gone", "ecs-svc/1")
    assert state == "MISSING" and "flightdeck-serving-gone" in reason

    d, started = _rolling_run(env, records, "13")
    roll = started["roll"]
    op = _operator(
        task_id="roll_service",
        cluster=roll["cluster"],
        service=roll["service"],
        task_definition=roll["task_definition"],
        deferrable=True,
        waiter_delay=0,
        waiter_max_attempts=3,
    )
    from airflow.sdk.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    trigger = deferred.value.trigger

    def gone(parsed, **_):  # INJECTED: ECS's answer once the service is deleted out of band
        missing = ecs.describe_services(cluster="flightdeck", services=["flightdeck-serving-gone"])
        parsed["services"], parsed["failures"] = [], missing["failures"]

    _inject_into_async_clients(
        monkeypatch, lambda client: client.meta.events.register("after-call.ecs.DescribeServices", gone)
    )
    event = _first_event(trigger)
    assert event["status"] == "WATCH_FAILED" and event["state"] == "MISSING" and "MISSING" in event["reason"]

    class TI:
        xcom: dict = {}

        def xcom_push(self, key, value):
            self.xcom[key] = value

    ti = TI()
    with pytest.raises(EcsWatchError, match="the watch failed, not the rollout"):
        op.execute_complete({"ti": ti}, event)
    out = d.rollback(failed_tasks=["roll_service"], watch_error=ti.xcom[WATCH_ERROR_XCOM_KEY])
    assert out["restored"] is None and "watcher failed, not the rollout" in out["reason"]
    svc = ecs.describe_services(cluster="flightdeck", services=[roll["service"]])["services"][0]
    assert svc["taskDefinition"] == roll["task_definition"]  # not reverted: ECS's rollout is left alone
    td = ecs.describe_task_definition(taskDefinition=roll["task_definition"])["taskDefinition"]
    assert td["status"] == "ACTIVE"
    r = d.record()
    assert r.outcome.value == "failed" and r.status.failure["step"] == "roll_service" and r.status.rollback is None
    with pytest.raises(DeployFailed, match="deploy failed on ecs: roll_service: the rollout's watcher failed"):
        d.outcome()
