"""lakehouse_monthly_ingest: each month's extracts, from the landing bucket into bronze, exactly once.

One run per month-long data interval: wait for the month's extracts, then ingest them (and any new
snapshot) into bronze. Retrying or backfilling a month is safe: an object is ingested once per
(key, ETag), whatever runs it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, PokeReturnValue, task

from orchestration.defaults import DEFAULT_ARGS, WRITER, log_failure

#: Updated by every ingest; the quarterly build waits for its quarter's months in bronze.
BRONZE = Asset(name="lakehouse_bronze", uri="lakehouse://bronze")

with DAG(
    dag_id="lakehouse_monthly_ingest",
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=datetime(2001, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "on_failure_callback": log_failure},
    tags=["lakehouse", "bronze", "monthly"],
    doc_md=__doc__,
) as dag:

    @task.sensor(poke_interval=600, timeout=timedelta(days=3).total_seconds(), mode="reschedule", retries=2)
    def wait_for_extracts(data_interval_start=None) -> PokeReturnValue:
        """Wait until the month's extracts are in the landing bucket; fail after 3 days without them."""
        from pipeline import steps

        month = steps.month_of(data_interval_start)
        found = steps.extracts_landed(month)
        return PokeReturnValue(is_done=bool(found), xcom_value=found)

    @task(outlets=[BRONZE], **WRITER)
    def ingest(data_interval_start=None, run_id=None) -> dict:
        """Ingest the month's extracts (and new snapshots) into bronze."""
        from pipeline import steps

        return steps.ingest_task(steps.month_of(data_interval_start), steps.run_id_for("ingest", run_id))

    wait_for_extracts() >> ingest()
