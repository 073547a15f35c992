"""Connection arguments of the local Airflow's SQLite database, imported by Airflow itself.

`AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS` names `CONNECT_ARGS` (see `lakehouse/services.py`).
SQLite lets one writer in at a time and Python's driver gives up on a locked database after 5 s:
on two busy cores a task's state update held the lock for 9 s, and the backfill that `lakehouse
backfill` created at that moment failed with a 500 "Database error". A writer now waits up to
30 s. Nothing else is here, so Airflow's processes import nothing more than this.
"""

CONNECT_ARGS: dict[str, object] = {"timeout": 30}
