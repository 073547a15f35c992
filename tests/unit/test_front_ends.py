"""The house: the CLI and the Airflow DAGs are front ends of one pipeline, and dependencies point down."""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import pytest

from cli import build as cli_build
from cli import data as cli_data
from lakehouse.settings import PROJECT_ROOT
from pipeline import steps


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
    assert "build_step" in _called(_source_of(cli_build.build))
    assert "build_task" in _called(_dag_task("orchestration/lakehouse_quarterly_build.py", "build"))
    assert "build_step" in _called(_source_of(steps.build_task))
    # and the build step is the only way either reaches silver and gold
    for front in (_source_of(cli_build.build), _dag_task("orchestration/lakehouse_quarterly_build.py", "build")):
        assert not _called(front) & {"run_silver", "run_gold", "record", "build_session"}


def test_lakehouse_ingest_and_maintain_and_the_dags_tasks_call_the_same_steps():
    assert "ingest" in _called(_source_of(cli_data.ingest))
    assert "ingest_task" in _called(_dag_task("orchestration/lakehouse_monthly_ingest.py", "ingest"))
    assert "ingest" in _called(_source_of(steps.ingest_task))
    assert "maintain" in _called(_source_of(cli_build.maintain))
    assert "maintain_task" in _called(_dag_task("orchestration/lakehouse_quarterly_build.py", "maintain"))
    assert "maintain" in _called(_source_of(steps.maintain_task))
    for front in (cli_data.ingest, cli_build.maintain, cli_build.replay):
        assert not _called(_source_of(front)) & {"build_session", "run", "run_table"}


#: What each floor may import from the project's packages (front ends > pipeline > layer jobs > library).
_MAY_IMPORT = {
    "lakehouse": {"lakehouse"},
    "bronze": {"lakehouse", "bronze"},
    "silver": {"lakehouse", "silver"},
    "gold": {"lakehouse", "gold"},
    "pipeline": {"lakehouse", "bronze", "silver", "gold", "pipeline"},
    "cli": {"lakehouse", "bronze", "silver", "gold", "pipeline", "cli"},
    "orchestration": {"lakehouse", "pipeline", "orchestration"},
}


def _project_imports(path: Path) -> set[str]:
    """The project packages a module imports (at the top or inside a function, typing-only included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(_MAY_IMPORT)


@pytest.mark.parametrize("package", sorted(_MAY_IMPORT))
def test_dependencies_point_down(package):
    wrong = {str(path.relative_to(PROJECT_ROOT)): sorted(_project_imports(path) - _MAY_IMPORT[package]) for path in sorted((PROJECT_ROOT / package).rglob("*.py"))}
    assert {path: up for path, up in wrong.items() if up} == {}
