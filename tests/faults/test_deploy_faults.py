"""Faults during a deploy on the local target (real image build, containers, HAProxy), with a poller on the
load balancer the whole time.

- The Airflow scheduler (standalone's `airflow scheduler` child) SIGKILLed mid-deploy, then Airflow restarted
  through the supervisor: the run finishes by Airflow's own reset of the orphaned task (the new scheduler
  finds the dead one's heartbeat old and runs the task again), or by a clear when that retry fails or
  stays stuck; the LB keeps serving, one deployment record for the run.
- HAProxy restarted mid-canary with the LB service's own steps (save the revisions' counters, soft stop,
  start, re-attach the live revisions' slots and weights): the canary finishes or rolls back cleanly, the
  split survives, the LB fails requests only while it restarts (connection refused) and until the re-attached
  slots pass their first health checks (503), one deployment record for the run. Measured here: ~2 s of
  restart plus ~2 s of 503s, and the canary step watching at that moment judged its revision unhealthy
  (HAProxy state NOLB/DOWN right after the restart) and handed over to rollback, which restored the old
  version cleanly.

Counts: the poller's non-200 answers and connection errors on /version through the LB (and when they
happened); deployment records in the deploy bucket before and after (exactly one new, for this run's
deployment id, none duplicated); the task tries.
"""

from __future__ import annotations

import time

import pytest

from flightdeck import s3
from flightdeck.deploy import records as rec
from tests.support import faults
from tests.support.model_examples import log_breast_cancer_model

pytestmark = [pytest.mark.faults, pytest.mark.timeout(1200)]

DAG = "deploy"
MODEL = "fault-deploy-model"
FAST = {"bake_seconds": 6, "step_seconds": 4, "healthy_timeout_seconds": 60, "min_requests": 10}


def _deploy(airflow, conf: dict) -> str:
    return airflow.trigger(DAG, conf={"model_name": MODEL, "target": "local", **FAST, **conf})


@pytest.fixture(scope="module")
def store(platform) -> rec.RecordStore:
    return rec.RecordStore(s3.client(), platform.deploy_bucket)


@pytest.fixture(scope="module")
def versions(platform) -> list[str]:
    import mlflow

    mlflow.set_tracking_uri(platform.mlflow_uri)
    return [str(log_breast_cancer_model(MODEL, experiment="fault-tests")[0]) for _ in range(2)]


@pytest.fixture(scope="module")
def live(platform, airflow, versions) -> str:
    """A version serving behind the LB before each fault (deployed here when nothing serves)."""
    if faults.serving_version(platform.lb_url) is None:
        run = _deploy(airflow, {"model": versions[0], "strategy": "blue_green"})
        assert airflow.wait(DAG, run, timeout=900) == "success", airflow.task_states(DAG, run)
    served = faults.serving_version(platform.lb_url)
    assert served is not None
    return served


def _records(store: rec.RecordStore) -> list[str]:
    return [r.deployment_id for r in store.list("local")]


def _wait_task(airflow, run: str, tasks: tuple[str, ...], states: tuple[str, ...], timeout_s: float) -> str:
    """The first of `tasks` seen in one of `states` (polled every 0.25 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = airflow.task_states(DAG, run)
        for task in tasks:
            if now.get(task) in states:
                return task
        assert airflow.run_state(DAG, run) in ("queued", "running"), now
        time.sleep(0.25)
    raise AssertionError(f"none of {tasks} reached {states} in {timeout_s} s: {airflow.task_states(DAG, run)}")


def _try_numbers(airflow, run: str, states: tuple[str, ...]) -> dict[str, int]:
    """task -> try number of the run's task instances in one of `states`."""
    tis = airflow.get(f"/dags/{DAG}/dagRuns/{run}/taskInstances", limit=100)["task_instances"]
    return {ti["task_id"]: ti["try_number"] for ti in tis if ti["state"] in states}


def _tries(airflow, run: str) -> dict[str, int]:
    tis = airflow.get(f"/dags/{DAG}/dagRuns/{run}/taskInstances", limit=100)["task_instances"]
    return {ti["task_id"]: ti["try_number"] for ti in tis if ti["try_number"] > 1}


def test_scheduler_killed_mid_deploy_run_finishes_lb_serves_one_record(platform, airflow, versions, live, store):
    t0 = time.monotonic()
    before = _records(store)
    target = versions[1] if live != versions[1] else versions[0]
    with faults.LbPoller(platform.lb_url) as poller:
        run = _deploy(airflow, {"model": target, "strategy": "blue_green"})
        hit = _wait_task(airflow, run, ("push", "register", "start_new"), ("running",), 600)
        killed = faults.kill_airflow_component("scheduler")
        orphans = _try_numbers(airflow, run, ("running", "queued"))  # what the dead scheduler had in flight
        t_kill = time.monotonic()
        restarted_in = faults.restart("airflow")
        # the new scheduler resets the dead one's task instances (its heartbeat is older than
        # scheduler_health_check_threshold by now) and runs them again; an orphan left stuck is cleared
        cleared: list[str] = []
        deadline = time.monotonic() + 120
        while airflow.run_state(DAG, run) in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(2)
        if airflow.run_state(DAG, run) in ("queued", "running"):
            # stuck: still in flight with the try it had when the scheduler died (never reset nor retried)
            now = _try_numbers(airflow, run, ("running", "queued", "restarting"))
            stuck = [t for t, n in now.items() if orphans.get(t) == n]
            for task in stuck:
                airflow.clear_task(DAG, run, task, include_downstream=True)
            cleared = stuck
        state = airflow.wait(DAG, run, timeout=600)
        retryable = ("resolve", "build", "push", "register", "start_new")
        failed = [t for t, s in airflow.task_states(DAG, run).items() if s == "failed" and t in retryable]
        if state == "failed" and failed:
            # seen once: the restarted API server (SQLite busy) timed out the retry's first call, and the
            # executor failed the task outright; the run rolled back. Clear it, as the DAG's doc says.
            for task in failed:
                airflow.clear_task(DAG, run, task, include_downstream=True)
            cleared += failed
            time.sleep(3)
            state = airflow.wait(DAG, run, timeout=600)
        served_after = faults.serving_version(platform.lb_url)
    after = _records(store)
    new = [d for d in after if d not in before]
    print(
        f"\nscheduler (pid {killed}) killed while {hit} ran; Airflow restarted in {restarted_in:.0f} s; "
        f"run {state} {time.monotonic() - t_kill:.0f} s after the kill; retried tasks {_tries(airflow, run)}; "
        f"cleared {cleared}; LB: {poller.requests} requests, {len(poller.failures)} failed "
        f"{poller.failures[:5]}, versions {dict(poller.versions)}; records {len(before)} -> {len(after)} "
        f"(new {new}); test {time.monotonic() - t0:.0f} s"
    )
    assert state == "success", airflow.task_states(DAG, run)
    assert served_after == target
    assert poller.failures == [], poller.failures[:10]
    assert len(after) == len(set(after)), "a deployment record is listed twice"
    assert new == [rec.deployment_id(run)], new
    record = store.get("local", rec.deployment_id(run))
    assert record is not None and record.outcome is rec.Outcome.SUCCEEDED
    assert record.status.model["version"] == target


def test_haproxy_restarted_mid_canary_finishes_or_rolls_back_lb_serves_one_record(
    platform, airflow, versions, live, store
):
    from flightdeck.deploy.haproxy import HAProxy
    from flightdeck.deploy.local import platform_backend

    t0 = time.monotonic()
    before = _records(store)
    serving_before = faults.serving_version(platform.lb_url)
    assert serving_before is not None
    target = versions[0] if serving_before != versions[0] else versions[1]
    backend = platform_backend()
    proxy = HAProxy(backend.lb)
    conf = {"model": target, "strategy": "canary", "canary_percent": 20, "canary_steps": 3, "step_seconds": 8}
    with faults.LbPoller(platform.lb_url) as poller:
        run = _deploy(airflow, conf)
        deadline = time.monotonic() + 600
        split: dict[str, int] = {}
        while time.monotonic() < deadline:  # mid-canary: two revisions share the traffic
            split = backend.weights()
            if len([w for w in split.values() if w > 0]) == 2:
                break
            assert airflow.run_state(DAG, run) in ("queued", "running"), airflow.task_states(DAG, run)
            time.sleep(0.2)
        assert len([w for w in split.values() if w > 0]) == 2, split
        old_pid = proxy.pid()
        t_restart = time.monotonic()
        backend.save_counters()  # the LB service's restart: lb_service.stop without the containers, then start
        proxy.stop()
        proxy.start()
        backend.resync()
        restart_s = time.monotonic() - t_restart
        split_after = backend.weights()
        state = airflow.wait(DAG, run, timeout=600)
        served_after = faults.serving_version(platform.lb_url)
    after = _records(store)
    new = [d for d in after if d not in before]
    states = airflow.task_states(DAG, run)
    # HAProxy's port is closed between the soft stop and the start; then the re-attached slots leave
    # maintenance DOWN and answer 503 until `rise` health checks pass
    check = backend.lb.check
    settle_s = check.healthy_threshold * check.interval_ms / 1000 + 1.0
    in_window = [f for f in poller.failures if t_restart - 0.5 <= f[0] <= t_restart + restart_s + settle_s]
    offsets = [round(f[0] - t_restart, 2) for f in poller.failures]  # seconds after the restart began
    print(
        f"\nHAProxy (pid {old_pid} -> {proxy.pid()}) restarted in {restart_s:.2f} s at weights {split} "
        f"(after resync {split_after}); run {state}, shifts "
        f"{[states.get(f'shift_{i}') for i in (1, 2, 3)]}, bake {states.get('bake')}, rollback "
        f"{states.get('rollback')}; LB: {poller.requests} requests, {len(poller.failures)} failed "
        f"({len(in_window)} inside the restart window; first/last at {offsets[:1]}/{offsets[-1:]} s after it began, "
        f"outside: {[o for o, f in zip(offsets, poller.failures, strict=True) if f not in in_window][:10]}) "
        f"{sorted({f[1] for f in poller.failures})}, versions "
        f"{dict(poller.versions)}; serving {served_after}; records {len(before)} -> {len(after)} (new {new}); "
        f"test {time.monotonic() - t0:.0f} s"
    )
    assert split_after == split, (split, split_after)  # the canary split survives the restart
    assert proxy.pid() != old_pid
    # outside the restart and the first health checks after it, no request fails
    assert len(poller.failures) == len(in_window), poller.failures
    record = store.get("local", rec.deployment_id(run))
    assert record is not None
    if state == "success":
        assert record.outcome is rec.Outcome.SUCCEEDED and served_after == target
    else:
        assert states["rollback"] == "success" and record.outcome is rec.Outcome.ROLLED_BACK, states
        assert served_after == serving_before
    assert len(after) == len(set(after)), "a deployment record is listed twice"
    assert new == [rec.deployment_id(run)], new
