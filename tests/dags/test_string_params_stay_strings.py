"""String Params reach the code as strings in every DAG, whatever they look like.

A DAG that renders templates as native Python objects turns a namespace of "2026" into the int 2026
and a model name of "None" into None (the default model). These tests trigger-validate each DAG's
Params the way Airflow does, render every task's templated fields through Airflow's own rendering
(`render_template_fields` with the DAG's Jinja environment) and compute the keyword arguments each
task's callable would receive (`determine_kwargs`), with every free-text string Param set to values
that look like something else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.standard.operators.python import context_merge
from airflow.sdk.definitions.param import process_params

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
ODD_STRINGS = ["2026", "None", "True", "1e3", "0x1F", "-7", "[1]"]


class FakeTI:
    """Enough of a task instance for templates that pull XCom: every pulled leaf is an odd string too."""

    def __init__(self, value: str) -> None:
        self.value = value

    def xcom_pull(self, *args: Any, **kwargs: Any) -> Any:
        v = self.value
        return {"roll": {"cluster": v, "service": v, "task_definition": v}, "version": v, "model_name": v}


class FakeDagRun:
    """Enough of a DagRun for templates that read when the run was due (the monitor's window end)."""

    run_after = "2026-12-07T14:00:00+00:00"


def string_params(dag: Any) -> list[str]:
    """The DAG's free-text string Params (type string, no enum)."""
    names = []
    for name in dag.params:
        schema = dag.params.get_param(name).schema
        if schema.get("type") == "string" and "enum" not in schema:
            names.append(name)
    return names


def triggered_params(dag: Any, value: str, task: Any = None, **extra: Any) -> dict[str, Any]:
    """The Params a task of a run triggered with every string Param set to `value` gets: merged with the
    run's conf and validated by Airflow's own `process_params`, as the task runner builds its context."""
    conf = {**{name: value for name in string_params(dag)}, **extra}
    return process_params(dag, task or dag.tasks[0], conf, suppress_exception=False)


def leaves(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, (*path, k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from leaves(v, (*path, i))
    else:
        yield path, value


def at(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


def context_for(dag: Any, task: Any, value: str) -> dict[str, Any]:
    params = triggered_params(dag, value, task)
    return {
        "params": params,
        "dag": dag,
        "task": task,
        "run_id": f"manual__{value}",
        "ti": FakeTI(value),
        "dag_run": FakeDagRun(),
        "conf": None,
        "var": {},
    }


def callable_kwargs(task: Any, context: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments PythonOperator.execute passes to the task's callable (its first two lines)."""
    context_merge(context, task.op_kwargs, templates_dict=task.templates_dict)
    return dict(task.determine_kwargs(context))


@pytest.fixture(params=ODD_STRINGS)
def odd(request) -> tuple[str, DagBag]:
    """A value, and a freshly parsed DagBag (rendering changes the operators in place)."""
    bag = DagBag(dag_folder=str(DAGS_DIR))
    assert bag.import_errors == {}
    return request.param, bag


def test_every_dag_has_string_params_to_check():
    bag = DagBag(dag_folder=str(DAGS_DIR))
    assert {"retrain", "deploy", "platform_check"} <= set(bag.dags)
    assert set(string_params(bag.dags["retrain"])) == {"dataset", "model_name", "namespace"}
    assert {"model", "model_name", "image"} <= set(string_params(bag.dags["deploy"]))


def test_string_params_validate_as_the_same_strings(odd):
    value, bag = odd
    for dag in bag.dags.values():
        params = triggered_params(dag, value)
        for name in string_params(dag):
            assert params[name] == value and isinstance(params[name], str), (dag.dag_id, name, params[name])


def test_templated_strings_render_as_strings_in_every_task(odd):
    """Every templated field that is a string template renders to a string (never 2026, None, True, 1000.0, 31)."""
    value, bag = odd
    checked = 0
    for dag in bag.dags.values():
        for task in dag.tasks:
            if getattr(task, "is_mapped", False):
                continue  # a mapped task renders per expanded instance, from upstream XComs a test run lacks
            templates = {f: getattr(task, f, None) for f in task.template_fields}
            context = context_for(dag, task, value)
            task.render_template_fields(context)
            for field, original in templates.items():
                for path, leaf in leaves(original):
                    if isinstance(leaf, str) and "{{" in leaf:
                        rendered = at(getattr(task, field), path)
                        assert isinstance(rendered, str), (
                            f"{dag.dag_id}.{task.task_id}.{field}{list(path)}: {leaf!r} rendered as "
                            f"{type(rendered).__name__} {rendered!r} for param value {value!r}"
                        )
                        checked += 1
    assert checked >= 6  # retrain's sync_data/train arguments, the deploy DAG's approval and ECS fields


def test_retrain_steps_receive_the_string_params(odd):
    """What sync_data's callable is called with, after Airflow renders its arguments: the strings as typed."""
    value, bag = odd
    dag = bag.dags["retrain"]
    task = dag.get_task("sync_data")
    context = context_for(dag, task, value)
    task.render_template_fields(context)
    kwargs = callable_kwargs(task, context)
    assert {k: kwargs[k] for k in ("dataset", "model_name", "namespace")} == {
        "dataset": value,
        "model_name": value,
        "namespace": value,
    }
    assert all(type(kwargs[k]) is str for k in ("dataset", "model_name", "namespace"))

    train = dag.get_task("train")
    context = context_for(dag, train, value)
    train.render_template_fields(context)
    assert train.op_kwargs["run_id"] == f"manual__{value}" and train.op_kwargs["dag_id"] == "retrain"


def test_retrain_force_reaches_has_changes_as_a_boolean(odd, monkeypatch):
    """`force` is a boolean Param: has_changes gets False/True, never the string "False" (which is truthy)."""
    import flightdeck.retrain as steps

    value, bag = odd
    dag = bag.dags["retrain"]
    task = dag.get_task("has_changes")
    seen: list[Any] = []
    monkeypatch.setattr(steps, "has_changes", lambda synced, force=False: seen.append(force) or True)
    for force in (False, True):
        context = context_for(dag, task, value)
        context["params"] = triggered_params(dag, value, task, force=force)
        kwargs = callable_kwargs(task, context)
        task.python_callable(*[{"dataset": "d"}], **{k: v for k, v in kwargs.items() if k != "synced"})
    assert seen == [False, True]


def test_deploy_steps_receive_the_string_params(odd):
    """The deploy DAG's steps take the run's Params from the context: "None" is a name, not the default."""
    value, bag = odd
    dag = bag.dags["deploy"]
    for task_id in ("resolve", "build", "rollback", "outcome"):
        task = dag.get_task(task_id)
        kwargs = callable_kwargs(task, context_for(dag, task, value))
        for name in ("model", "model_name", "image"):
            assert kwargs["params"][name] == value and type(kwargs["params"][name]) is str, (task_id, name)
