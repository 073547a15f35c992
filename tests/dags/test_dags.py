"""The DAGs: they import with every service down and no I/O, fast, with the schedules, retries and
pools the operations need. Airflow parses them in a subprocess with its own temporary home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lakehouse.settings import PROJECT_ROOT, WRITERS_POOL

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def described(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LAKEHOUSE_"))} | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "orchestration"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'unused.db'}",
        # every service unreachable: a DAG that connected at parse time would fail anyway
        "LAKEHOUSE_S3_ENDPOINT": "http://127.0.0.1:9",
        "LAKEHOUSE_MLFLOW_URI": "http://127.0.0.1:9",
    }
    done = subprocess.run([sys.executable, str(HERE / "describe_dags.py"), str(PROJECT_ROOT / "orchestration")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_dag_folder_imports_without_errors_or_io_and_fast(described):
    assert described["import_errors"] == {}
    assert described["connects"] == []
    assert set(described["dags"]) == {"lakehouse_monthly_ingest", "lakehouse_quarterly_build"}
    dag_files = [(f, s) for f, s in described["stats"] if "lakehouse_" in f]
    assert len(dag_files) == 2 and all(seconds < 3.0 for _, seconds in dag_files), described["stats"]


def test_the_ingest_is_monthly_with_month_long_intervals(described):
    dag = described["dags"]["lakehouse_monthly_ingest"]
    assert (dag["timetable"], dag["cron"]) == ("CronDataIntervalTimetable", "0 0 1 * *")
    assert dag["first_interval"] == ["2001-01-01 00:00:00+00:00", "2001-02-01 00:00:00+00:00"]
    assert dag["tasks"]["ingest"]["outlets"] == ["lakehouse_bronze"]


def test_the_build_is_quarterly_with_quarter_long_intervals_one_run_at_a_time(described):
    dag = described["dags"]["lakehouse_quarterly_build"]
    assert (dag["timetable"], dag["cron"]) == ("CronDataIntervalTimetable", "0 0 1 */3 *")
    assert dag["first_interval"] == ["2001-01-01 00:00:00+00:00", "2001-04-01 00:00:00+00:00"]
    assert dag["interval_before_2013_04_01"] == ["2013-01-01 00:00:00+00:00", "2013-04-01 00:00:00+00:00"]  # a run on Apr 1 builds Q1
    assert dag["max_active_runs"] == 1 and dag["catchup"] is False and dag["params"] == ["force"]
    order = {t: v["downstream"] for t, v in dag["tasks"].items()}
    # one build task (one process, one Spark session) for silver, gold and the record
    assert order == {"wait_for_quarter": ["build"], "build": ["maintain"], "maintain": []}


@pytest.mark.parametrize("dag_id", ["lakehouse_monthly_ingest", "lakehouse_quarterly_build"])
def test_every_task_retries_with_backoff_has_a_timeout_a_doc_and_a_failure_record(described, dag_id):
    dag = described["dags"][dag_id]
    assert dag["doc_md"] and "lakehouse" in dag["tags"]
    for task_id, task in dag["tasks"].items():
        assert task["retries"] >= 2, task_id
        assert task["retry_exponential_backoff"], task_id
        assert task["execution_timeout_s"] and task["execution_timeout_s"] <= 2 * 3600, task_id
        assert task["on_failure_callback"] and task["doc"], task_id
        if task["sensor_mode"] is not None:
            assert task["sensor_mode"] == "reschedule" and task["sensor_timeout_s"] > 0, task_id
        else:  # every step that writes a table takes the single writer slot
            assert task["pool"] == WRITERS_POOL, task_id
