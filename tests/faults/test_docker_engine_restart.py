"""The Docker engine restarted while the deploy DAG's `build` step builds the serving image: the build task
fails, its retry builds again and the run finishes; the registry holds one image per digest for the version.

The engine is restarted through the supervisor's own `dockerd` Service (process.stop, then
EmbeddedPlatform.engine_up), so only an engine this platform started (`make up` on a machine without one)
is restarted; an engine started by anyone else is shared and left alone: the test skips.

Without dockerd's `--live-restore` (or `"live-restore": true` in /etc/docker/daemon.json) a restart stops
every container, the live model's too: the LB then has nothing to serve until a revision is started again
(the containers have no restart policy). The platform's dockerd runs with `--live-restore`: the serving
containers keep running (same ids) across the restart, but Docker's userland proxy, which publishes their
ports on 127.0.0.1, goes down with the engine, so the LB fails for the restart and until its health checks
see the slots again (measured: ~70 requests of ~1,400 over a few seconds). With live-restore the failures are
asserted to lie inside that window, none after; without it they are only counted and printed.

Counts: the build task's tries (>= 2); the registry's tags for the new version (exactly one) and their
manifest digests (one per image: the tag's digest is the one the deployment record pins); deployment
records (one new, for this run); LB failures.
"""

from __future__ import annotations

import time

import pytest
import requests

from flightdeck import s3
from flightdeck.deploy import records as rec
from flightdeck.supervisor import process
from tests.support import faults
from tests.support.model_examples import log_breast_cancer_model

pytestmark = [pytest.mark.faults, pytest.mark.timeout(1200)]

DAG = "deploy"
MODEL = "fault-deploy-model"
FAST = {"bake_seconds": 6, "step_seconds": 4, "healthy_timeout_seconds": 60, "min_requests": 10}
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def _records(store: rec.RecordStore) -> list[str]:
    return [r.deployment_id for r in store.list("local")]


def _tries(airflow, run: str) -> dict[str, int]:
    tis = airflow.get(f"/dags/{DAG}/dagRuns/{run}/taskInstances", limit=100)["task_instances"]
    return {ti["task_id"]: ti["try_number"] for ti in tis if ti["try_number"] > 1}


def _wait_running(airflow, run: str, task: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while airflow.task_states(DAG, run).get(task) != "running":
        assert time.monotonic() < deadline, airflow.task_states(DAG, run)
        assert airflow.run_state(DAG, run) in ("queued", "running"), airflow.task_states(DAG, run)
        time.sleep(0.25)


def _engine_ours() -> bool:
    return process.running_pid(faults.instance().services["dockerd"]) is not None


def _live_restore() -> bool:
    import docker

    return bool(docker.from_env().info().get("LiveRestoreEnabled"))


def _serving_containers() -> list[str]:
    """Ids of the running containers of the local deploy target (the live revision's)."""
    import docker

    client = docker.from_env()
    try:
        return [c.id for c in client.containers.list(filters={"label": "org.flightdeck.target=local"})]
    finally:
        client.close()


def _tag_digests(registry: str, repository: str) -> dict[str, str]:
    """tag -> manifest digest of every tag of `repository` in the registry (API v2)."""
    tags = requests.get(f"http://{registry}/v2/{repository}/tags/list", timeout=10).json().get("tags") or []
    out = {}
    for tag in tags:
        r = requests.head(
            f"http://{registry}/v2/{repository}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES}, timeout=10
        )
        r.raise_for_status()
        out[tag] = r.headers["Docker-Content-Digest"]
    return out


@pytest.mark.skipif("not _engine_ours()", reason="the Docker engine was not started by this platform: shared")
def test_engine_restart_during_build_is_retried_one_image_per_digest(platform, airflow):
    import mlflow

    t0 = time.monotonic()
    mlflow.set_tracking_uri(platform.mlflow_uri)
    store = rec.RecordStore(s3.client(), platform.deploy_bucket)
    if faults.serving_version(platform.lb_url) is None:  # something live, so the LB's side of the fault is seen
        base = str(log_breast_cancer_model(MODEL, experiment="fault-tests")[0])
        run = airflow.trigger(DAG, {"model_name": MODEL, "target": "local", "model": base, **FAST})
        assert airflow.wait(DAG, run, timeout=900) == "success", airflow.task_states(DAG, run)
    version = str(log_breast_cancer_model(MODEL, experiment="fault-tests")[0])  # new: a real build, no reuse
    before = _records(store)
    live_restore = _live_restore()
    platform_ = faults.instance()
    dockerd = platform_.services["dockerd"]
    from flightdeck.deploy.local import platform_backend

    check = platform_backend().lb.check
    settle_s = check.healthy_threshold * check.interval_ms / 1000 + 2.0  # rise checks, once ports are back
    serving = _serving_containers()
    with faults.LbPoller(platform.lb_url) as poller:
        run = airflow.trigger(
            DAG, {"model_name": MODEL, "target": "local", "model": version, "strategy": "blue_green", **FAST}
        )
        _wait_running(airflow, run, "build", 600)
        time.sleep(3)  # the build is under way (the model is downloaded first)
        faults.service_pid("dockerd")  # asserts the engine is this platform's (its FLIGHTDECK_STATE_DIR)
        t_restart = time.monotonic()
        process.stop(dockerd)
        platform_.engine_up()
        restart_s = time.monotonic() - t_restart
        still_serving = _serving_containers()
        state = airflow.wait(DAG, run, timeout=900)
        served_after = faults.serving_version(platform.lb_url)
    tries = _tries(airflow, run)
    record = store.get("local", rec.deployment_id(run))
    after = _records(store)
    new = [d for d in after if d not in before]
    repository = MODEL
    digests = _tag_digests(platform.registry, repository)
    ours = {t: d for t, d in digests.items() if t.startswith(f"v{version}-")}
    print(
        f"\nengine restarted in {restart_s:.1f} s during build (live-restore {live_restore}); run {state}; "
        f"retried tasks {tries}; registry tags of v{version}: {ours}; all tags {len(digests)}, distinct digests "
        f"{len(set(digests.values()))}; LB: {poller.requests} requests, {len(poller.failures)} failed "
        f"{[f[1] for f in poller.failures[:5]]}; records {len(before)} -> {len(after)} (new {new}); "
        f"test {time.monotonic() - t0:.0f} s"
    )
    assert state == "success", airflow.task_states(DAG, run)
    assert tries.get("build", 1) >= 2, f"build ran once: the restart did not hit it ({tries})"
    assert record is not None and record.outcome is rec.Outcome.SUCCEEDED
    assert len(ours) == 1, ours  # one tag for the version, one image
    assert list(ours.values()) == [record.status.image["digest"]]
    assert served_after == version
    assert new == [rec.deployment_id(run)] and len(after) == len(set(after)), new
    if live_restore:
        assert serving and set(serving) <= set(still_serving), (serving, still_serving)  # kept running
        late = [f for f in poller.failures if f[0] > t_restart + restart_s + settle_s]
        assert late == [], f"LB failures after the restart window ({restart_s + settle_s:.1f} s): {late[:10]}"
