"""Parse the DAG folder the way Airflow's DAG processor does and print what it found, as JSON.

Run in a subprocess by tests/dags/test_dags.py, with every service down: any network connection
attempted while the DAG files import raises, so a DAG file doing I/O at parse time fails the test.
"""

from __future__ import annotations

import json
import socket
import sys

attempts: list[str] = []


def _refuse(self, address):  # noqa: ANN001
    attempts.append(str(address))
    raise OSError(f"network access at DAG parse time: {address}")


socket.socket.connect = _refuse  # type: ignore[method-assign]

import pendulum  # noqa: E402
from airflow.dag_processing.dagbag import DagBag  # noqa: E402
from airflow.serialization.encoders import coerce_to_core_timetable as core  # noqa: E402
from airflow.timetables.base import TimeRestriction  # noqa: E402

bag = DagBag(dag_folder=sys.argv[1])
dags = {}
for dag_id, dag in bag.dags.items():
    timetable = dag.timetable
    dags[dag_id] = {
        "tags": sorted(dag.tags),
        "doc_md": bool(dag.doc_md),
        "max_active_runs": dag.max_active_runs,
        "catchup": dag.catchup,
        "timetable": type(timetable).__name__,
        "cron": core(timetable)._expression,
        "first_interval": [
            str(d) for d in core(timetable).next_dagrun_info(last_automated_data_interval=None, restriction=TimeRestriction(dag.start_date, None, True)).data_interval
        ],
        "interval_before_2013_04_01": [str(d) for d in core(timetable).infer_manual_data_interval(run_after=pendulum.datetime(2013, 4, 1))],
        "params": sorted(dag.params.keys()),
        "tasks": {
            t.task_id: {
                "retries": t.retries,
                "retry_exponential_backoff": bool(t.retry_exponential_backoff),
                "execution_timeout_s": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                "pool": t.pool,
                "on_failure_callback": bool(t.on_failure_callback),
                "doc": bool(t.doc_md or t.doc),
                "sensor_timeout_s": getattr(t, "timeout", None) if t.task_type.endswith("SensorOperator") else None,
                "sensor_mode": getattr(t, "mode", None),
                "outlets": [getattr(o, "name", str(o)) for o in t.outlets],
                "downstream": sorted(t.downstream_task_ids),
            }
            for t in dag.tasks
        },
    }
print(
    json.dumps(
        {
            "import_errors": bag.import_errors,
            "stats": [[s.file, s.duration.total_seconds() if hasattr(s.duration, "total_seconds") else s.duration] for s in bag.dagbag_stats],
            "connects": attempts,
            "dags": dags,
        },
        default=str,
    )
)
