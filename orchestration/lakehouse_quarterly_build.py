"""lakehouse_quarterly_build: one quarter's training set, from bronze through the gated layers, recorded.

One run per quarter-long data interval (2001-01-01 to 2001-04-01 builds 2001Q1), one task per step:
wait until the quarter's three months are in bronze; silver for the new bronze rows (each table
staged, gated, published); gold for the quarter (staged, gated, all three tables published
together); record the build (MLflow run with the Delta versions as dataset inputs, manifest row);
maintenance. A failed build is recorded as FAILED with the failing gate's report. Every step is
idempotent, so a retry or a backfill rebuilds exactly the same tables; trigger with
`{"force": true}` to rebuild a quarter that is up to date.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, PokeReturnValue, task

from orchestration.defaults import DEFAULT_ARGS, WRITER, log_failure


def record_failure(context: dict) -> None:
    """The failure record of a build: the log line, then a FAILED manifest row and MLflow run."""
    from lakehouse import jobs, quarters

    log_failure(context)
    quarter = quarters.of_interval(context["data_interval_start"].date())
    jobs.record_failure(quarter, jobs.run_id_for("build", context["run_id"]), context["ti"].task_id, context.get("exception"))


with DAG(
    dag_id="lakehouse_quarterly_build",
    schedule=CronDataIntervalTimetable("0 0 1 */3 *", timezone="UTC"),
    start_date=datetime(2001, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "on_failure_callback": record_failure},
    params={"force": Param(False, type="boolean", description="Rebuild the quarter even when it is up to date.")},
    tags=["lakehouse", "silver", "gold", "quarterly"],
    doc_md=__doc__,
) as dag:

    @task.sensor(poke_interval=900, timeout=timedelta(days=14).total_seconds(), mode="reschedule", retries=2)
    def wait_for_quarter(data_interval_start=None) -> PokeReturnValue:
        """Wait until all three months of the quarter are ingested into bronze."""
        from lakehouse import jobs, quarters

        quarter = quarters.of_interval(data_interval_start.date())
        return PokeReturnValue(is_done=jobs.quarter_ingested(quarter), xcom_value=quarter)

    @task(**WRITER)
    def silver(run_id=None) -> dict:
        """Silver for every bronze row not processed yet, each table behind its gates."""
        from lakehouse import jobs

        return jobs.build_silver(jobs.run_id_for("build", run_id))

    @task(**WRITER)
    def gold(quarter: str, run_id=None, params=None) -> dict:
        """Gold for the quarter behind its gates (skipped when an up-to-date build exists)."""
        from lakehouse import jobs

        return jobs.build_gold(quarter, jobs.run_id_for("build", run_id), force=bool(params["force"]))

    @task(**WRITER, execution_timeout=timedelta(minutes=30))
    def record(quarter: str, silver: dict, gold: dict, run_id=None) -> dict:
        """The build's MLflow run (Delta versions as dataset inputs) and its manifest row."""
        from lakehouse import jobs

        return jobs.record_build(quarter, jobs.run_id_for("build", run_id), silver, gold)

    @task(**WRITER)
    def maintain() -> dict:
        """OPTIMIZE and VACUUM, never removing what a recorded build needs."""
        from lakehouse import jobs

        return jobs.maintain()

    quarter = wait_for_quarter()
    silver_done = silver()
    quarter >> silver_done
    gold_done = gold(quarter)
    silver_done >> gold_done
    record(quarter, silver_done, gold_done) >> maintain()
