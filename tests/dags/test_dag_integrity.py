"""Every DAG loads without import errors and follows the house rules (tags, retries, catchup, no import-time work)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_every_dag_file_defines_a_dag(dagbag):
    assert DAG_FILES, "no DAG files found"
    files_with_dags = {Path(dag.fileloc).name for dag in dagbag.dags.values()}
    assert {p.name for p in DAG_FILES} <= files_with_dags


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.stem)
def test_house_rules(dagbag, dag_file):
    dags = [d for d in dagbag.dags.values() if Path(d.fileloc) == dag_file]
    for dag in dags:
        assert dag.tags and "flightdeck" in dag.tags, f"{dag.dag_id}: needs the 'flightdeck' tag"
        assert dag.catchup is False, f"{dag.dag_id}: catchup must be off"
        assert dag.doc_md, f"{dag.dag_id}: needs doc_md (the module docstring)"
        assert dag.default_args.get("retries", 0) >= 2, f"{dag.dag_id}: default_args retries must be >= 2"
        callback = dag.default_args.get("on_failure_callback")
        assert type(callback).__name__ == "FlightdeckFailureNotifier", f"{dag.dag_id}: failures must notify"
        for t in dag.tasks:
            # A task may fail fast (e.g. a deploy health check hands over to rollback at once) only if it
            # says so and why in its doc_md, which the UI shows next to the task.
            fails_fast = (t.doc_md or "").startswith("Fail fast:")
            assert t.retries >= 2 or fails_fast, f"{dag.dag_id}.{t.task_id}: retries={t.retries}, need >= 2"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.stem)
def test_no_top_level_work(dag_file):
    """Module level holds only imports, constants, definitions and the DAG call: no I/O at parse time."""
    tree = ast.parse(dag_file.read_text())
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign, ast.Expr)
    for node in tree.body:
        assert isinstance(node, allowed), f"{dag_file.name}:{node.lineno}: top-level {type(node).__name__}"
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            # the only call allowed at top level is instantiating a @dag-decorated function of this file
            name = getattr(node.value.func, "id", None)
            defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            assert name in defined, f"{dag_file.name}:{node.lineno}: top-level call to {name}"
