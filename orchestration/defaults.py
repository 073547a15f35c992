"""What every lakehouse DAG shares: retries, timeouts, the writers' pool, the failure record.

Imported by the DAG files; it does nothing at import (no reads, no connections, no secrets).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from lakehouse.settings import WRITERS_POOL

#: Every task is idempotent, so retrying is always safe. The first delay is Airflow's
#: `[core] default_task_retry_delay` (300 s unless configured), doubled on each retry.
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "lakehouse",
    "retries": 3,
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=2),
}

#: Tasks that write a Delta table take the single slot of this pool: one writer at a time.
WRITER: dict[str, Any] = {"pool": WRITERS_POOL}


def log_failure(context: dict[str, Any]) -> None:
    """A failed task (after its retries): say which, for which interval, and why."""
    import logging

    ti = context["ti"]
    logging.getLogger("lakehouse").error(
        "task %s of %s failed for the interval %s - %s after %s tries: %s",
        ti.task_id, ti.dag_id, context.get("data_interval_start"), context.get("data_interval_end"), ti.try_number, context.get("exception"),
    )  # fmt: skip
