"""lakehouse_quarterly_build: one quarter's training set, from bronze through the gated layers, recorded.

One run per quarter-long data interval (2001-01-01 to 2001-04-01 builds 2001Q1): wait until the
quarter's three months are in bronze; then one build task in one process (one Spark session): silver
for the new bronze rows (each table gated in memory, then published), gold for the run's quarter and
every earlier quarter that is stale (a late correction to an old month reaches its quarters here),
built in one pass (gated, each quarter's three tables published together), and each build recorded
(MLflow run with the Delta versions as dataset inputs, manifest row); then maintenance (skipped in
a backfill's runs). When nothing is new and the quarters are up to date, the build task decides so
from the Delta logs without starting Spark. A failed build is recorded as FAILED with the failing
gate's report. Every step is idempotent, so a retry or a backfill rebuilds exactly the same
tables; trigger with `{"force": true}` to rebuild the run's quarter even when it is up to date.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, PokeReturnValue, task

from orchestration.defaults import DEFAULT_ARGS, WRITER, log_failure


def record_failure(context: dict) -> None:
    """The failure record of a build: the log line, then a FAILED manifest row and MLflow run."""
    from lakehouse import quarters
    from pipeline import steps

    log_failure(context)
    quarter = quarters.of_interval(context["data_interval_start"].date())
    steps.record_failure(quarter, steps.run_id_for("build", context["run_id"]), context["ti"].task_id, context.get("exception"))


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
        from lakehouse import quarters
        from pipeline import steps

        quarter = quarters.of_interval(data_interval_start.date())
        return PokeReturnValue(is_done=steps.quarter_ingested(quarter), xcom_value=quarter)

    @task(**WRITER, execution_timeout=timedelta(hours=2))
    def build(quarter: str, run_id=None, params=None) -> dict:
        """Silver, then gold for the quarter and the earlier stale ones in one pass, every build recorded."""
        from pipeline import steps

        return steps.build_task(quarter, steps.run_id_for("build", run_id), force=bool(params["force"]))

    @task(**WRITER)
    def maintain(dag_run=None, run_id=None) -> dict:
        """OPTIMIZE and VACUUM the tables written, never removing what a recorded build needs (not in backfills)."""
        from pipeline import steps

        return steps.maintain_task(getattr(dag_run.run_type, "value", dag_run.run_type), run_id=steps.run_id_for("maintain", run_id))

    build(wait_for_quarter()) >> maintain()
