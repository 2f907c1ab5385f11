"""The deploy DAG's shape: one task per step, every step feeding rollback, ECS's rolling update as
its own deferrable task, and one deploy at a time."""

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
    steps = {*chain, "roll_service", "shift_2", "shift_3", "shift_4", "approve_canary", "bake", "finalize"}
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
