"""The bake_ami DAG's shape: its tasks, their order, the builder's cleanup and the Params' defaults.

Loaded the way tests/dags/test_dag_integrity.py loads DAGs (a DagBag), from this one file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.amazon.aws.sensors.ec2 import EC2InstanceStateSensor

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "bake_ami.py"
STEPS = ["launch_builder", "wait_builder_stopped", "create_image", "record_ami"]


@pytest.fixture(scope="module")
def dag():
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["bake_ami"]


def test_tasks_and_their_order(dag):
    assert set(dag.task_ids) == {*STEPS, "terminate_builder", "outcome"}
    for upstream, downstream in zip(STEPS, STEPS[1:], strict=False):
        assert dag.get_task(downstream).upstream_task_ids >= {upstream}, (upstream, downstream)
    assert dag.get_task("launch_builder").upstream_task_ids == set()
    assert dag.schedule is None and dag.max_active_runs == 1


def test_the_builder_is_terminated_whatever_happened(dag):
    terminate = dag.get_task("terminate_builder")
    assert terminate.trigger_rule == "all_done"
    assert terminate.upstream_task_ids == set(STEPS)  # runs after every step, failed or not


def test_a_failed_step_fails_the_run(dag):
    """terminate_builder succeeds after a failed bake too, and a run's state follows its last tasks:
    `outcome` (one_failed, downstream of everything) turns any failure into a failed run."""
    outcome = dag.get_task("outcome")
    assert outcome.trigger_rule == "one_failed"
    assert outcome.upstream_task_ids == {*STEPS, "terminate_builder"}
    assert outcome.downstream_task_ids == set() and dag.get_task("terminate_builder").downstream_task_ids == {"outcome"}
    assert outcome.retries == 0 and outcome.doc_md.startswith("Fail fast:")


def test_the_sensor_waits_for_the_launched_builder_to_stop(dag):
    sensor = dag.get_task("wait_builder_stopped")
    assert isinstance(sensor, EC2InstanceStateSensor)
    assert sensor.target_state == "stopped"
    assert sensor.instance_id == "{{ ti.xcom_pull(task_ids='launch_builder') }}"
    assert sensor.aws_conn_id == "{{ params.aws_conn_id }}"
    # reschedule (not deferrable): frees its slot between polls and honours its timeout
    assert sensor.mode == "reschedule" and not sensor.deferrable and sensor.timeout == 30 * 60


def test_params_and_their_defaults(dag):
    assert {name: dag.params[name] for name in dag.params} == {
        "aws_conn_id": "aws_default",
        "base_ami": "",
        "instance_type": "t3.small",
        "subnet_id": "",
        "security_group_ids": "",
        "instance_profile": "flightdeck-serving",
        "base_image": "",
    }
    for name in dag.params:
        assert dag.params.get_param(name).schema["type"] == "string", name
