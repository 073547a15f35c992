"""The CLI and the Airflow DAG are front ends of one pipeline: both run the same build step."""

from __future__ import annotations

import ast
import inspect
import textwrap

from lakehouse import cli, jobs
from lakehouse.settings import PROJECT_ROOT


def _called(tree: ast.AST) -> set[str]:
    """Names of the functions a piece of code calls (`f(...)` and `x.f(...)`)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


def _source_of(function) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(function)))


def _dag_task(path: str, task_id: str) -> ast.AST:
    tree = ast.parse((PROJECT_ROOT / path).read_text())
    return next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == task_id)


def test_lakehouse_build_and_the_dags_build_task_call_the_same_build_step():
    assert "build_step" in _called(_source_of(cli.build))
    assert "build_quarter" in _called(_dag_task("orchestration/lakehouse_quarterly_build.py", "build"))
    assert "build_step" in _called(_source_of(jobs.build_quarter))
    # and the build step is the only way either reaches silver and gold
    for front in (_source_of(cli.build), _dag_task("orchestration/lakehouse_quarterly_build.py", "build")):
        assert not _called(front) & {"run_silver", "run_gold", "record", "build_session"}
