"""The deploy DAG's shape: one task per step, every step feeding rollback, ECS's rolling update and EC2's
instance refresh each as its own deferrable task, and one deploy at a time."""

from __future__ import annotations

DAG_ID = "deploy"  # the `dag` fixture (tests/unit/conftest.py) loads dags/deploy.py


def test_manual_and_one_run_at_a_time(dag):
    assert dag.schedule is None
    assert dag.max_active_runs == 1  # a second deploy queues until the running one ends


def test_steps_in_order_and_every_one_hands_failure_to_rollback(dag):
    chain = ["resolve", "build", "push", "register", "start_new", "wait_healthy", "shift_1"]
    for a, b in zip(chain, chain[1:], strict=False):
        assert b in dag.get_task(a).downstream_task_ids, (a, b)
    rollback = dag.get_task("rollback")
    assert rollback.trigger_rule == "one_failed"
    steps = {
        *chain,
        "roll_service",
        "refresh_instances",
        "shift_2",
        "shift_3",
        "shift_4",
        "approve_canary",
        "bake",
        "finalize",
    }
    assert rollback.upstream_task_ids == steps
    assert dag.get_task("outcome").trigger_rule == "all_done"


def test_ecs_rolling_update_is_a_deferrable_operator_between_start_and_health(dag):
    roll = dag.get_task("roll_service")
    assert type(roll).__name__ == "EcsServiceDeployOperator" and roll.deferrable
    assert roll.upstream_task_ids == {"ecs_rolls_the_service"}
    assert dag.get_task("ecs_rolls_the_service").upstream_task_ids == {"start_new"}
    assert roll.downstream_task_ids >= {"wait_healthy", "rollback"}
    # skipped on every other target/strategy: the health check must still run after it
    assert dag.get_task("wait_healthy").trigger_rule == "none_failed"
    assert "{{ ti.xcom_pull(task_ids='start_new')['roll']['task_definition'] }}" == roll.task_definition


def test_ec2_path_instance_refresh_is_a_deferrable_operator_between_start_and_health(dag):
    assert "ec2" in dag.params.get_param("target").schema["enum"]
    refresh = dag.get_task("refresh_instances")
    assert type(refresh).__name__ == "Ec2InstanceRefreshOperator" and refresh.deferrable
    assert refresh.retries == 0  # a failed refresh hands over to rollback at once
    assert refresh.upstream_task_ids == {"ec2_refreshes_the_group"}
    assert dag.get_task("ec2_refreshes_the_group").upstream_task_ids == {"start_new"}
    assert refresh.downstream_task_ids >= {"wait_healthy", "rollback"}
    # the whole InstanceRefreshSpec start_new recorded, as JSON, on the run's AWS connection
    assert refresh.refresh == "{{ ti.xcom_pull(task_ids='start_new')['roll'] | tojson }}"
    assert refresh.aws_conn_id == "{{ params.aws_conn_id }}"
    assert dag.get_task("roll_service").aws_conn_id == "{{ params.aws_conn_id }}"
    # the blue/green and canary path on ec2 is the same tasks as on every target: shifts, bake, finalize
    assert dag.get_task("shift_1").upstream_task_ids == {"wait_healthy"}


def test_ec2_refresh_operator_takes_the_rendered_json(dag):
    """What the template renders (`tojson` of start_new's roll) is what the operator parses."""
    import json

    from jinja2.sandbox import SandboxedEnvironment

    roll = {
        "group": "flightdeck-serving-v1-aaaa-bbbb",
        "launch_template_id": "lt-0123",
        "previous_version": "1",
        "version": "2",
        "min_healthy_percentage": 100,
        "checkpoint_percentages": [10, 55, 100],
        "checkpoint_delay_s": 10,
    }
    rendered = (
        SandboxedEnvironment()
        .from_string(dag.get_task("refresh_instances").refresh)
        .render(ti=type("TI", (), {"xcom_pull": staticmethod(lambda task_ids: {"roll": roll})}))
    )
    assert json.loads(rendered) == roll
