"""The EC2 target against a moto server: launch template versions, Auto Scaling groups per revision, target
groups behind the weighted listener, target-tracking policies and records are real API calls with real
request/response shapes, through the clients the provider's hooks build.

moto cannot run user data, report a target unhealthy, count ALB requests, or refresh instances (it has no
instance refresh API at all). Those states are INJECTED here, and each test says where: an after-call hook
rewrites DescribeTargetHealth to "unhealthy" for "instances never pass /readyz", ALB metrics are put into
CloudWatch for "the ALB saw 5xx", and tests/support/instance_refresh_sim.py answers the instance refresh
calls the way Auto Scaling does (a successful refresh moves the group to the new launch template version
and replaces its instances in moto; a failed one ends RollbackSuccessful or Failed). moto's Auto Scaling
does register a group's instances in its target groups, and reports them healthy: that part is moto's own.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException

from flightdeck.deploy import ami
from flightdeck.deploy import controller as ctl
from flightdeck.deploy.backend import RevisionSpec, ScalingMetric, ScalingSpec
from flightdeck.deploy.ec2 import SPEC_MARKER, Ec2Backend, Ec2Config, Ec2TargetError, spec_from_user_data, user_data
from tests.support.instance_refresh_sim import InstanceRefreshSim
from tests.support.moto_aws import client, ecr_revision, inject_alb_metrics, moto_server, reset, sandbox

pytestmark = pytest.mark.integration

PORT = 8487
CONN = "moto_ec2"
TH = ctl.Thresholds(healthy_timeout_s=3, poll_s=0.2, min_requests=10, max_5xx_rate=0.05)
FAST = Ec2Config(refresh_poll_s=0, refresh_max_attempts=3, health_check_grace_s=90)


@pytest.fixture(scope="module")
def moto():
    with moto_server(PORT, CONN) as endpoint:
        yield endpoint


def _prerequisites(endpoint: str) -> dict:
    """What the RUNBOOK's prerequisites make (the sandbox's own: VPC, two subnets, the ALB `flightdeck` with a
    listener, the security group and instance profile `flightdeck-serving`), and a baked AMI in SSM."""
    infra = sandbox.prerequisites(endpoint)
    baked = client(endpoint, "ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]  # the bake's AMI
    ami.record_ami(client(endpoint, "ssm"), baked)
    return {**infra, "sg": infra["security_group"], "ami": baked}


@pytest.fixture(scope="module")
def env(moto):
    reset(moto)
    infra = _prerequisites(moto)
    backend = Ec2Backend.from_settings(aws_conn_id=CONN, cfg=FAST)
    return {"infra": infra, "backend": backend}


def _spec(version: str, replicas: int = 1, scaling: ScalingSpec | None = None) -> RevisionSpec:
    env = {"MODEL_VERSION": version, "NOTE": "it's $HOME; `not run`"}  # written by a quoted heredoc: literal
    return ecr_revision(version, replicas, env=env, run_id=f"manual__r{version}", scaling=scaling)


def _listener(moto) -> dict[str, int]:
    """target group name -> weight in the listener's forward."""
    elb = client(moto, "elbv2")
    alb = elb.describe_load_balancers(Names=["flightdeck"])["LoadBalancers"][0]
    listeners = elb.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])
    out = {}
    for tg in listeners["Listeners"][0]["DefaultActions"][0].get("ForwardConfig", {}).get("TargetGroups", []):
        out[tg["TargetGroupArn"].split(":")[-1].split("/")[1]] = tg["Weight"]
    return out


def _group(moto, backend: Ec2Backend, revision: str) -> dict | None:
    name = backend.group_name(revision)
    found = client(moto, "autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return found["AutoScalingGroups"][0] if found["AutoScalingGroups"] else None


def _deploy_ok(backend: Ec2Backend, spec: RevisionSpec) -> ctl.Snapshot:
    snap = ctl.start(backend, spec)
    ctl.wait_healthy(backend, spec.revision, TH)
    ctl.shift(backend, spec.revision, 100, snap, TH)
    ctl.finalize(backend, spec.revision, snap)
    return snap


def _inject_unhealthy(backend: Ec2Backend):
    """INJECTED: the ALB reports the instances it is asked about unhealthy (moto reports every running one
    healthy). Only the new revision's health is polled while it is registered."""

    def unhealthy(parsed, **_):
        for d in parsed["TargetHealthDescriptions"]:
            d["TargetHealth"] = {"State": "unhealthy", "Reason": "Target.ResponseCodeMismatch"}

    backend.elb.meta.events.register("after-call.elastic-load-balancing-v2.DescribeTargetHealth", unhealthy)
    return unhealthy


def test_config_is_found_from_the_load_balancer_by_name(env):
    cfg, infra = env["backend"].cfg, env["infra"]
    assert cfg.listener_arn == infra["listener"] and cfg.vpc_id == infra["vpc"]
    assert set(cfg.subnets) == set(infra["subnets"]) and cfg.security_groups == (infra["sg"],)


def test_missing_load_balancer_is_a_clear_error(moto, env):
    with pytest.raises(Ec2TargetError, match="no load balancer named 'elsewhere'.*RUNBOOK"):
        Ec2Backend.from_settings(aws_conn_id=CONN, cfg=Ec2Config(load_balancer="elsewhere"))


def test_user_data_runs_the_pinned_image_and_carries_the_spec():
    spec = _spec("9")
    text = user_data(spec, Ec2Config(api_keys_secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:keys"))
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    assert f"docker pull {spec.image}" in text and spec.image.split("@")[1] == spec.digest  # by digest
    assert "docker login --username AWS --password-stdin 123456789012.dkr.ecr.us-east-1.amazonaws.com" in text
    assert "-p 8080:8080 -p 8081:8081" in text and "--log-driver awslogs" in text
    assert "NOTE=it's $HOME; `not run`" in text.split("<<'FLIGHTDECK_ENV'")[1]  # quoted heredoc: no expansion
    assert "keys=$(aws secretsmanager get-secret-value" in text and "--region us-east-1" in text
    assert "exit 1; }" in text.split("keys=$(")[1] and text.index("keys=$(") < text.index("docker run")
    assert text.splitlines()[2].startswith(SPEC_MARKER) and spec_from_user_data(text) == spec


def test_first_revision_every_resource_and_call(moto, env):
    b, spec = env["backend"], _spec("1", replicas=2)
    _deploy_ok(b, spec)
    group = _group(moto, b, spec.revision)
    assert group["HealthCheckType"] == "ELB" and group["HealthCheckGracePeriod"] == 90
    assert group["DesiredCapacity"] == 2 and len(group["Instances"]) == 2
    assert (group["MinSize"], group["MaxSize"]) == (2, 4)  # the 2 replicas asked for are the floor
    tg = client(moto, "elbv2").describe_target_groups(Names=[b.listener.tg_name(spec.revision)])["TargetGroups"][0]
    assert group["TargetGroupARNs"] == [tg["TargetGroupArn"]]
    assert tg["HealthCheckPath"] == "/readyz" and tg["HealthCheckPort"] == "8081" and tg["TargetType"] == "instance"
    tags = {t["Key"]: t["Value"] for t in group["Tags"]}
    assert tags["org.flightdeck.revision"] == spec.revision and tags["org.flightdeck.model_version"] == "1"
    assert tags["org.flightdeck.digest"] == spec.digest and tags["org.flightdeck.run_id"] == "manual__r1"
    assert all(t["PropagateAtLaunch"] for t in group["Tags"])  # the instances carry the lineage too
    version = client(moto, "ec2").describe_launch_template_versions(
        LaunchTemplateId=group["LaunchTemplate"]["LaunchTemplateId"], Versions=[group["LaunchTemplate"]["Version"]]
    )["LaunchTemplateVersions"][0]
    data = version["LaunchTemplateData"]
    assert version["VersionDescription"] == spec.revision and data["ImageId"] == env["infra"]["ami"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["IamInstanceProfile"]["Name"] == "flightdeck-serving"
    assert data["SecurityGroupIds"] == [env["infra"]["sg"]]
    assert f"docker pull {spec.image}" in base64.b64decode(data["UserData"]).decode()
    policy = client(moto, "autoscaling").describe_policies(AutoScalingGroupName=group["AutoScalingGroupName"])
    [p] = policy["ScalingPolicies"]
    assert p["PolicyType"] == "TargetTrackingScaling"
    tt = p["TargetTrackingConfiguration"]
    assert tt["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ASGAverageCPUUtilization"
    assert tt["TargetValue"] == 60.0
    assert _listener(moto) == {b.listener.tg_name(spec.revision): 100}
    assert b.weights() == {spec.revision: 100}
    assert b.spec(spec.revision) == spec  # what a rollback would restart it from
    health = b.target_health(spec.revision)
    assert health.total == 2 and health.healthy == 2 and health.all_healthy


def test_scaling_on_requests_per_target_from_the_params(moto, env):
    b = env["backend"]
    spec = _spec("20", scaling=ScalingSpec(2, 6, ScalingMetric.REQUEST_COUNT_PER_TARGET, 500.0))
    snap = ctl.start(b, spec)
    try:
        group = _group(moto, b, spec.revision)
        # min_capacity 2 over 1 replica: the group starts at its floor, as ECS scales a service up to it
        assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (2, 6, 2)
        [p] = client(moto, "autoscaling").describe_policies(AutoScalingGroupName=group["AutoScalingGroupName"])[
            "ScalingPolicies"
        ]
        metric = p["TargetTrackingConfiguration"]["PredefinedMetricSpecification"]
        assert metric["PredefinedMetricType"] == "ALBRequestCountPerTarget"
        tg_arn = b.listener.tg_arn(spec.revision)
        # app/<lb>/<id>/targetgroup/<tg>/<id>: the label AWS needs to find the group's request count
        assert metric["ResourceLabel"] == f"{b.listener.lb_dimension()}/{tg_arn.split(':')[-1]}"
        label = metric["ResourceLabel"]
        assert label.startswith("app/flightdeck/") and "/targetgroup/fd-v20-" in label
        assert p["TargetTrackingConfiguration"]["TargetValue"] == 500.0
    finally:
        ctl.rollback(b, spec.revision, snap, TH)


def test_blue_green_then_canary_shift_listener_weights(moto, env):
    b = env["backend"]
    (old,) = b.weights()
    spec = _spec("2")
    snap = ctl.start(b, spec)
    assert snap.weights == {old: 100} and b.weights() == {old: 100, spec.revision: 0}
    ctl.wait_healthy(b, spec.revision, TH)
    for pct in ctl.plan_steps("canary", 10, 3):
        ctl.shift(b, spec.revision, pct, snap, TH)
        assert _listener(moto)[b.listener.tg_name(spec.revision)] == pct
        if pct < 100:
            assert _listener(moto)[b.listener.tg_name(old)] == 100 - pct
    ctl.finalize(b, spec.revision, snap)
    assert b.weights() == {spec.revision: 100}
    assert _group(moto, b, old) is None  # the old group retired with its instances
    with pytest.raises(client(moto, "elbv2").exceptions.TargetGroupNotFoundException):
        client(moto, "elbv2").describe_target_groups(Names=[b.listener.tg_name(old)])


def test_never_healthy_revision_is_rolled_back(moto, env):
    """INJECTED: the new group's instances never pass the ALB's health check."""
    b = env["backend"]
    live = b.weights()
    spec = _spec("3")
    snap = ctl.start(b, spec)
    hook = _inject_unhealthy(b)
    try:
        with pytest.raises(ctl.DeployError, match="not healthy"):
            ctl.wait_healthy(b, spec.revision, TH)
    finally:
        b.elb.meta.events.unregister("after-call.elastic-load-balancing-v2.DescribeTargetHealth", hook)
    ctl.rollback(b, spec.revision, snap, TH)
    assert b.weights() == live and set(_listener(moto)) == {b.listener.tg_name(r) for r in live}
    assert _group(moto, b, spec.revision) is None


def test_5xx_during_canary_pulls_traffic_back_then_rollback(moto, env):
    """INJECTED: the ALB's CloudWatch metrics report 40 % 5xx for the canary's target group."""
    b = env["backend"]
    live = b.weights()
    spec = _spec("4")
    snap = ctl.start(b, spec)
    ctl.wait_healthy(b, spec.revision, TH)
    ctl.shift(b, spec.revision, 10, snap, TH)
    late = threading.Timer(0.5, inject_alb_metrics, (moto, b.listener, spec.revision), {"requests": 50, "errors": 20})
    late.start()
    with pytest.raises(ctl.DeployError, match="5xx rate"):
        ctl.bake(b, spec.revision, snap, 3, TH)
    late.join()
    assert _listener(moto)[b.listener.tg_name(spec.revision)] == 0  # the guard, before rollback runs
    ctl.rollback(b, spec.revision, snap, TH)
    assert b.weights() == live and _group(moto, b, spec.revision) is None


def test_rollback_restarts_a_retired_previous_revision_from_its_launch_template_version(moto, env):
    b = env["backend"]
    (prev,) = b.weights()
    before = b.spec(prev)
    spec = _spec("5")
    snap = _deploy_ok(b, spec)
    assert prev not in b.weights() and _group(moto, b, prev) is None
    ctl.rollback(b, spec.revision, snap, TH)
    assert b.weights() == {prev: 100}
    group = _group(moto, b, prev)
    assert group is not None and b.spec(prev) == before  # the same image digest, AMI and environment
    versions = client(moto, "ec2").describe_launch_template_versions(LaunchTemplateName="flightdeck-serving")
    assert [v["VersionDescription"] for v in versions["LaunchTemplateVersions"]].count(prev) == 1  # reused


# -- rolling: an instance refresh of the live group, through the deploy steps ---------------------------
@pytest.fixture(scope="module")
def records(moto):
    from flightdeck.deploy import records as rec

    client(moto, "s3").create_bucket(Bucket="flightdeck-deployments")
    return rec.RecordStore(client(moto, "s3"), "flightdeck-deployments")


def _operator(sim: InstanceRefreshSim, refresh: dict, **kw):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
    from flightdeck_deploy_operators import Ec2InstanceRefreshOperator

    op = Ec2InstanceRefreshOperator(
        task_id="refresh_instances", refresh=refresh, aws_conn_id=CONN, waiter_delay=0, waiter_max_attempts=3, **kw
    )
    sim.attach(op.hook.conn)
    return op


def _rolling_run(env, records, sim: InstanceRefreshSim, version: str):
    """The deploy DAG's tasks up to `refresh_instances`, for strategy rolling on ec2."""
    from flightdeck.deploy.steps import Deploy

    digest = "sha256:" + f"{int(version):064x}"
    params = {
        "target": "ec2",
        "strategy": "rolling",
        "model": "none",
        "model_name": "flightdeck-model",
        "image": f"123456789012.dkr.ecr.us-east-1.amazonaws.com/flightdeck-model@{digest}",
        "canary_percent": 25,
        "canary_steps": 3,
        "step_seconds": 30,
        "min_healthy_percent": 90,
        "bake_seconds": 1,
        "healthy_timeout_seconds": 3,
        "aws_conn_id": CONN,
        "env": {"MODEL_VERSION": version},
    }
    backend = Ec2Backend.from_settings(aws_conn_id=CONN, cfg=FAST)  # its own clients: only this sim answers
    sim.attach(backend.autoscaling)
    d = Deploy(f"manual__ec2_roll_{version}", params, store=records, backend=backend)
    for step in ("resolve", "build", "push", "register"):
        getattr(d, step)()
    return d, d.start_new()


def _instances(moto, backend: Ec2Backend, revision: str) -> set[str]:
    return {i["InstanceId"] for i in _group(moto, backend, revision)["Instances"]}


def _group_version(moto, backend: Ec2Backend, revision: str) -> str:
    return str(_group(moto, backend, revision)["LaunchTemplate"]["Version"])


def test_rolling_refreshes_the_live_group_in_place(moto, env, records):
    """INJECTED: the instance refresh API (instance_refresh_sim); it ends Successful."""
    b, sim = env["backend"], InstanceRefreshSim()
    (live,) = b.weights()
    before = _group_version(moto, b, live)
    instances = _instances(moto, b, live)
    d, started = _rolling_run(env, records, sim, "7")
    assert d.rolling_in_place("ec2") and not d.rolling_in_place("ecs") and d.record().status.plan == []
    roll = started["roll"]
    assert roll["group"] == b.group_name(live) and roll["previous_version"] == before
    assert int(roll["version"]) > int(before) and roll["min_healthy_percentage"] == 90
    assert roll["checkpoint_percentages"] == [25, 62, 100] and roll["checkpoint_delay_s"] == 30
    refresh_id = _operator(sim, roll).execute({})
    [request] = sim.started
    assert request["DesiredConfiguration"]["LaunchTemplate"]["Version"] == roll["version"]
    prefs = request["Preferences"]
    assert prefs["AutoRollback"] is True and prefs["MinHealthyPercentage"] == 90 and prefs["SkipMatching"] is True
    assert prefs["MaxHealthyPercentage"] == 190
    assert prefs["CheckpointPercentages"] == [25, 62, 100] and prefs["CheckpointDelay"] == 30
    assert refresh_id == sim.refreshes[roll["group"]][0]["InstanceRefreshId"]
    group = _group(moto, b, live)
    assert str(group["LaunchTemplate"]["Version"]) == roll["version"]
    assert not instances & _instances(moto, b, live)  # every instance replaced
    d.wait_healthy()
    d.bake()
    d.finalize()
    assert d.outcome()["outcome"] == "succeeded"
    assert b.spec(live).env["MODEL_VERSION"] == "7" and b.weights() == {live: 100}  # same group, same listener


def test_failed_refresh_rolled_back_by_auto_scaling_then_the_run_rolls_back(moto, env, records):
    """INJECTED: the refresh fails its health checks and Auto Scaling rolls it back (RollbackSuccessful)."""
    b, sim = env["backend"], InstanceRefreshSim(outcome="Failed")
    (live,) = b.weights()
    before, spec_before = _group_version(moto, b, live), b.spec(live)
    d, started = _rolling_run(env, records, sim, "8")
    with pytest.raises(AirflowException, match="RollbackSuccessful|did not succeed"):
        _operator(sim, started["roll"]).execute({})
    out = d.rollback(failed_tasks=["refresh_instances"])
    assert out["restored"] == {live: 100}
    assert d.record().outcome.value == "rolled_back" and len(sim.started) == 1  # nothing more to undo
    assert _group_version(moto, b, live) == before and b.spec(live) == spec_before


def test_bake_failure_after_a_successful_refresh_refreshes_back(moto, env, records):
    """INJECTED: the refresh succeeds (instance_refresh_sim), then the bake sees 5xx (CloudWatch metrics)."""
    b, sim = env["backend"], InstanceRefreshSim()
    (live,) = b.weights()
    before = _group_version(moto, b, live)
    d, started = _rolling_run(env, records, sim, "9")
    _operator(sim, started["roll"]).execute({})
    rolled = _instances(moto, b, live)
    assert _group_version(moto, b, live) == started["roll"]["version"]
    d.wait_healthy()
    # the errors arrive while the bake watches (its baseline is read first)
    late = threading.Timer(0.5, inject_alb_metrics, (moto, b.listener, live), {"requests": 100, "errors": 60})
    late.start()
    with pytest.raises(ctl.DeployError, match="5xx rate"):
        d.bake()
    late.join()
    d.rollback(failed_tasks=["bake"])
    back = sim.started[-1]
    assert back["DesiredConfiguration"]["LaunchTemplate"]["Version"] == before
    assert back["Preferences"]["SkipMatching"] is True
    assert _group_version(moto, b, live) == before
    assert not rolled & _instances(moto, b, live)  # the new version's instances replaced again
    assert d.record().outcome.value == "rolled_back" and b.spec(live).env["MODEL_VERSION"] == "7"
    d.rollback(failed_tasks=["bake"])  # cleared and run again: idempotent, no second refresh back
    assert sim.started[-1] is back


def test_rollback_during_a_running_refresh_asks_auto_scaling_to_roll_back(moto, env, records):
    """INJECTED: the refresh is still InProgress when the run rolls back (e.g. `refresh_instances` timed out)."""
    b, sim = env["backend"], InstanceRefreshSim(hold=True)
    (live,) = b.weights()
    before = _group_version(moto, b, live)
    d, started = _rolling_run(env, records, sim, "10")
    with pytest.raises(AirflowException):
        _operator(sim, started["roll"]).execute({})  # waiter gives up after 3 polls: still InProgress
    d.rollback(failed_tasks=["refresh_instances"])
    assert sim.rollbacks == [b.group_name(live)]
    assert sim.refreshes[b.group_name(live)][0]["Status"] == "RollbackSuccessful"
    assert _group_version(moto, b, live) == before and d.record().outcome.value == "rolled_back"


def test_status_history_and_the_record_work_for_ec2(moto, env, records):
    from flightdeck import lineage

    st = lineage.status("ec2", records, backend_factory=lambda target: env["backend"])
    assert st["target"] == "ec2" and st["deployment"]
    assert st["traffic"]["weights"] == env["backend"].weights()
    rows = lineage.history(records, "ec2", "http://airflow", 20)
    kinds = [r["event"] for r in rows]
    assert "rolled_back" in kinds and "live" in kinds


def test_a_retried_refresh_task_adopts_the_running_refresh(moto, env, records):
    """INJECTED: the refresh stays InProgress (instance_refresh_sim); the task's retry must not start another."""
    sim = InstanceRefreshSim(hold=True)
    d, started = _rolling_run(env, records, sim, "11")
    first = _operator(sim, started["roll"], wait_for_completion=False).execute({})
    again = _operator(sim, started["roll"], wait_for_completion=False).execute({})
    assert again == first and len(sim.started) == 1
    d.rollback(failed_tasks=["refresh_instances"])
    assert sim.refreshes[started["roll"]["group"]][0]["Status"] == "RollbackSuccessful"


def test_a_restarted_revision_boots_the_version_it_ran_not_a_later_rolls(moto, env):
    """The live group was rolled (and rolled back) several times above: its launch template has newer versions
    for the same revision. Retired by a blue/green deploy and restarted by that deploy's rollback, it must boot
    the version that carries the spec it served with."""
    b = env["backend"]
    (live,) = b.weights()
    serving = b.spec(live)
    version = _group_version(moto, b, live)
    versions = client(moto, "ec2").describe_launch_template_versions(LaunchTemplateName="flightdeck-serving")
    mine = [v["VersionNumber"] for v in versions["LaunchTemplateVersions"] if v["VersionDescription"] == live]
    assert max(mine) > int(version)  # a newer version of the same revision exists (a roll that was undone)
    spec = _spec("12")
    snap = _deploy_ok(b, spec)
    assert _group(moto, b, live) is None
    ctl.rollback(b, spec.revision, snap, TH)
    assert b.weights() == {live: 100}
    assert _group_version(moto, b, live) == version and b.spec(live) == serving
