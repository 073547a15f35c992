"""The pipeline steps both front ends call: ingest, build (silver, gold, record), replay, maintain.

The CLI loops them, each Airflow task calls one (keyed on its data interval). Each step builds its
own SparkSession only when it has work (an Airflow task is a process of its own), is safe to
repeat (the layer jobs' writes are idempotent), and returns a report; the `*_task` wrappers turn
it into the small JSON-able summary a DAG passes through XCom. Nothing here knows about Airflow or
the terminal: the DAG files in `orchestration/` and the CLI in `cli/` only wire these calls.

The lakehouse run id of an orchestrated run is derived from the orchestrator's run id, so every
retry of a task of one run stages, records and names its build the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from lakehouse import audit, faults, inspect, quality, quarters, storage
from lakehouse.lease import writer_lease
from lakehouse.runs import RunContext
from lakehouse.settings import Settings, held_secrets, load_settings
from lakehouse.tables import BRONZE_TABLES

if TYPE_CHECKING:
    from bronze.ingest import FeedReport, IngestReport
    from gold.quarter_build import GoldResult
    from lakehouse.erasure import Erased
    from lakehouse.maintenance import TableMaintenance
    from pipeline.build import BuildReport
    from silver.conform import TableResult

log = logging.getLogger(__name__)

#: Monthly flight feeds: a quarter is complete when all three of its months were ingested.
FLIGHT_FEEDS = ("bronze.bts_flights", "bronze.nyc_flights")


def new_run_id(kind: str, started: datetime) -> str:
    """A sortable, unique run id for a run started here, such as ingest-20261125T101500Z-3fa2c1."""
    return f"{kind}-{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run_id_for(kind: str, orchestrator_run_id: str) -> str:
    """A lakehouse run id from an orchestrator's (`scheduled__2013-04-01T00:00:00+00:00` -> `build-scheduled-2013-04-01T00-00-00-00-00`)."""
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9]+", "-", orchestrator_run_id).strip("-")


def month_of(interval_start: date) -> str:
    """The yyyy-MM of a month-long data interval."""
    return f"{interval_start.year:04d}-{interval_start.month:02d}"


def _naive_utc(moment: datetime | None) -> datetime:
    """UTC without a zone (the lakehouse's clock); now when None: a step's start is its only clock."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0) if moment.tzinfo else moment.replace(microsecond=0)


def task_settings(task: str) -> Settings:
    """The settings of an Airflow task of kind `task`: only its kind's keys where Airflow runs it (`settings.TASK_KEYS`), said in its log."""
    settings = load_settings(task=task)
    log.info("%s task: holds %s", task, held_secrets(settings))
    return settings


# ---------------------------------------------------------------- readiness (no Spark)


def extracts_landed(month: str, settings: Settings | None = None) -> list[str]:
    """The monthly extracts of `month` in the landing bucket (what a sensor waits for)."""
    settings = settings or task_settings("ingest")
    s3 = storage.client(settings, "ingest")
    found = []
    for table in BRONZE_TABLES:
        feed = table.feed
        if feed is None:
            continue
        found += [o.key for o in storage.list_objects(s3, settings.bucket("landing"), feed.prefix) if quarters.object_month(o.key) == month]
    return sorted(found)


def months_ingested(settings: Settings | None = None) -> list[str]:
    """Months whose flight extracts bronze holds (read from the ingest log with delta-rs, no JVM)."""
    done = {quarters.object_month(r["object_key"]) for r in inspect.ingested(settings or load_settings()) if r["feed"] in FLIGHT_FEEDS}
    return sorted(m for m in done if m)


def quarter_ingested(quarter: str, settings: Settings | None = None) -> bool:
    """True when all three months of `quarter` have been ingested."""
    return quarter in quarters.complete(months_ingested(settings or task_settings("build")))


# ---------------------------------------------------------------- steps (Spark)


def ingest(
    run_id: str,
    started_at: datetime | None = None,
    feeds: list[str] | None = None,
    months: list[str] | None = None,
    settings: Settings | None = None,
    on_feed: Callable[[FeedReport], None] | None = None,
    on_spark: Callable[[float], None] | None = None,
) -> IngestReport:
    """Ingest new landing objects (of `feeds`, of `months` and any new snapshots when given) into bronze, exactly once."""
    from bronze import ingest as bronze_ingest
    from lakehouse.spark import build_session

    settings = settings or load_settings()
    with writer_lease(settings, f"ingest {run_id}", role="ingest"):
        if not bronze_ingest.has_work(settings, feeds, months):
            log.info("nothing new to ingest: Spark not started")
            return bronze_ingest.IngestReport(run_id, [bronze_ingest.FeedReport(t.name) for t in bronze_ingest.selected(feeds)])
        t0 = time.monotonic()
        spark = build_session(settings, ["ingest"], app_name=f"lakehouse-{run_id}")
        if on_spark is not None:
            on_spark(time.monotonic() - t0)
        with audit.stamped(spark, run_id, "ingest", "ingest"):
            report = bronze_ingest.run(spark, settings, run_id, _naive_utc(started_at), feeds, on_feed=on_feed, months=months)
        log.info("ingested %s: %d objects, %d rows", ", ".join(months or ["every month"]), report.objects, report.rows)
        return report


def ingest_task(month: str, run_id: str, started_at: datetime | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """The monthly DAG's ingest task: `ingest` of the month's extracts; a JSON summary."""
    report = ingest(run_id, started_at, months=[month], settings=settings or task_settings("ingest"))
    return {"run_id": run_id, "month": month, "objects": report.objects, "rows": report.rows, "feeds": [dataclasses.asdict(f) for f in report.feeds]}


#: Libraries a build imports after Spark has started: GX for the gates, MLflow (through tracking, which configures it) for the record.
_BUILD_IMPORTS = ("great_expectations", "great_expectations.expectations", "lakehouse.tracking")


def _import_while_spark_starts() -> None:
    """Import the build's heavy libraries on a thread while the JVM starts (seconds each, otherwise paid after it).

    An import the build then makes waits on Python's import lock until this one is done, so it is
    safe at any moment; a failure here is left for that import to raise.
    """

    def load() -> None:
        quality.quiet_gx_logging()  # before GX's import, which logs, and after it, which sets a logger to INFO
        with contextlib.suppress(Exception):  # the build's own import reports it
            for name in _BUILD_IMPORTS:
                importlib.import_module(name)
        quality.quiet_gx_logging()

    threading.Thread(target=load, name="preload-imports", daemon=True).start()


def _context(settings: Settings, run_id: str, started_at: datetime | None, replay: bool = False) -> RunContext:
    return RunContext(run_id, _naive_utc(started_at), quality.load_config(settings), replay=replay)


def quarters_to_build(quarter: str, settings: Settings | None = None) -> list[str]:
    """The quarters a run for `quarter` considers: it and every earlier quarter whose three months are ingested.

    Only the stale ones are built (a late correction to an old month is picked up by the next run);
    the others are skipped as up to date without starting Spark.
    """
    settings = settings or load_settings()
    return [q for q in quarters.complete(months_ingested(settings)) if q <= quarter] or [quarter]


def build_step(
    wanted: list[str],
    run_id: str,
    started_at: datetime | None = None,
    force: bool | list[str] = False,
    settings: Settings | None = None,
    on_silver: Callable[[TableResult], None] | None = None,
    on_gold: Callable[[GoldResult], None] | None = None,
    own: list[str] | None = None,
    record_errors: bool = True,
) -> BuildReport:
    """Silver for the new bronze rows, then gold for the stale wanted quarters in one pass, each build recorded.

    The one build step: `lakehouse build` calls it once for the quarters asked for, the DAG's build
    task once per run. When no bronze row is new and every wanted quarter is up to date (decided
    from the Delta logs and the manifest with delta-rs), it returns without starting Spark.
    `own` and `record_errors` are `pipeline.build.build`'s: which quarters' failures fail the step,
    and whether errors other than a gate's are recorded here or by the caller. Returns the
    BuildReport (`dataclasses.asdict` makes it JSON for XCom).
    """
    from lakehouse.spark import build_session
    from pipeline import staleness
    from pipeline.build import BuildReport, build
    from silver.conform import TableResult
    from silver.layer import SILVER_JOBS

    settings = settings or load_settings()
    with writer_lease(settings, f"build {run_id}"):
        faults.checkpoint(settings, "silver.start")
        ctx = _context(settings, run_id, started_at)
        code = staleness.code_version(settings)
        forced = list(wanted) if force is True else list(force or [])
        pending = staleness.silver_pending(settings)
        _, stale, skipped = staleness.plan_gold(settings, wanted, code, ctx.config, forced)
        if not pending and not stale:
            log.info("nothing to build: no new bronze rows, %s up to date", ", ".join(f"{q} ({r.skipped_as})" for q, r in sorted(skipped.items())))
            report = BuildReport(run_id, silver=[TableResult(job.SPEC.table.name, skipped=True) for job in SILVER_JOBS], gold=[skipped[q] for q in sorted(skipped)])
            for table_result in report.silver:
                if on_silver is not None:
                    on_silver(table_result)
            for gold_result in report.gold:
                if on_gold is not None:
                    on_gold(gold_result)
            return report
        t0 = time.monotonic()
        rows = staleness.rows_to_read(settings, list(stale))
        _import_while_spark_starts()
        spark = build_session(settings, ["transform"], app_name=f"lakehouse-{run_id}", rows=rows)
        spark_s = time.monotonic() - t0
        with audit.stamped(spark, run_id, "transform", "build"):
            report = build(spark, settings, wanted, ctx, code, on_silver, on_gold, force=forced, own=own, record_errors=record_errors)
        report.seconds = {"spark start": spark_s, **report.seconds}
        for r in report.silver:
            log.info("%s: %s", r.table, "no new rows" if r.skipped else f"{r.input_rows} in, fates {r.fates}, v{r.version}")
        for g in report.gold:
            log.info("gold %s: %s", g.quarter, f"up to date (build {g.skipped_as})" if g.skipped_as else f"build {g.build_id} ({g.stale_reason}), digest {g.digest}")
        return report


def build_task(quarter: str, run_id: str, force: bool = False, settings: Settings | None = None) -> dict[str, Any]:
    """The DAG's build task: `build_step` for the run's quarter and the earlier stale ones; a JSON summary."""
    settings = settings or task_settings("build")
    # the run answers for its own quarter: an earlier quarter blocked by its gates is recorded as a
    # FAILED build and reported, but does not fail this run; a crash is left to the retries, and the
    # failure callback records the final one
    report = build_step(quarters_to_build(quarter, settings), run_id, force=[quarter] if force else [], settings=settings, own=[quarter], record_errors=False)
    return {
        "run_id": report.run_id, "seconds": report.seconds,
        "silver": [{"table": r.table, "input_rows": r.input_rows, "fates": r.fates, "version": r.version, "skipped": r.skipped} for r in report.silver],
        "gold": [
            {"quarter": g.quarter, "build_id": g.build_id, "skipped_as": g.skipped_as, "stale_reason": g.stale_reason, "digest": g.digest, "error": g.error}
            for g in report.gold
        ],
    }  # fmt: skip


def record_failure(quarter: str, run_id: str, step: str, error: BaseException | None, started_at: datetime | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Record a build that failed in `step`: a FAILED manifest row and MLflow run, with the failing gate's report."""
    from lakehouse.spark import build_session
    from pipeline import staleness
    from pipeline.record import record

    settings = settings or task_settings("build")
    with writer_lease(settings, f"record the failure of {run_id}"):
        error = error if error is not None else RuntimeError(f"{step} failed")
        gates = quality.gate_refs([error.result]) if isinstance(error, quality.GateFailed) else []
        _import_while_spark_starts()
        spark = build_session(settings, ["transform"], app_name=f"lakehouse-{run_id}-failure")
        ctx = _context(settings, run_id, started_at)
        wrapped = RuntimeError(f"step {step}: {type(error).__name__}: {error}")
        with audit.stamped(spark, run_id, "transform", f"record the failure of {step}"):
            row = record(spark, settings, ctx, quarter, staleness.code_version(settings), _naive_utc(None), [], None, gates, wrapped)
        log.error("build %s of %s FAILED in %s: %s (MLflow run %s)", row["build_id"], quarter, step, error, row["mlflow_run_id"])
        return {"build_id": row["build_id"], "mlflow_run_id": row["mlflow_run_id"]}


def replay(
    run_id: str,
    started_at: datetime | None = None,
    tables: list[str] | None = None,
    rules: list[str] | None = None,
    settings: Settings | None = None,
) -> list[TableResult]:
    """Re-check the quarantined rows of `tables` (all when None) against the current rules; publish the ones that now pass."""
    from lakehouse.spark import build_session
    from silver.conform import run_table
    from silver.layer import SILVER_JOBS

    settings = settings or load_settings()
    with writer_lease(settings, f"quarantine replay {run_id}"):
        _import_while_spark_starts()
        spark = build_session(settings, ["transform"], app_name=f"lakehouse-{run_id}")
        ctx = _context(settings, run_id, started_at, replay=True)
        with audit.stamped(spark, run_id, "transform", "quarantine replay"):
            return [run_table(spark, settings, job.SPEC, ctx, rules) for job in SILVER_JOBS if not tables or job.SPEC.table.name in tables]


def erase(column: str, value: str, run_id: str, apply: bool = False, settings: Settings | None = None) -> list[Erased]:
    """Find one personal value (e.g. an aircraft's registration) in every table; with `apply`, erase it and vacuum (`lakehouse.erasure`)."""
    from lakehouse import erasure
    from lakehouse.spark import build_session

    settings = settings or load_settings()
    with writer_lease(settings, f"erase {run_id}", role="maintain"):
        spark = build_session(settings, ["maintain"], app_name=f"lakehouse-{run_id}")
        with audit.stamped(spark, run_id, "maintain", "erase"):
            return erasure.run(spark, settings, column, value, apply)


def maintain(settings: Settings | None = None, on_table: Callable[[TableMaintenance], None] | None = None, run_id: str | None = None) -> list[TableMaintenance]:
    """OPTIMIZE and VACUUM the tables written since their last maintenance, keeping what recorded builds need; then the retention of landing objects and quarantined rows."""
    from lakehouse import maintenance, retention
    from lakehouse.spark import build_session

    resolved = settings or load_settings()
    run_id = run_id or new_run_id("maintain", datetime.now(UTC))
    with writer_lease(resolved, f"maintain {run_id}", role="maintain"), contextlib.ExitStack() as stamps:
        # started for the first table that needs it: not at all when nothing was written since the last run
        spark = functools.cache(
            lambda: stamps.enter_context(audit.stamped(build_session(resolved, maintenance.ROLES, app_name=f"lakehouse-{run_id}"), run_id, "+".join(maintenance.ROLES), "maintain"))
        )
        reports = maintenance.run(spark, resolved, _naive_utc(None), on_table=on_table)
        log.info("maintained %d tables, %d bytes saved", len(reports), sum(r.bytes_before - r.bytes_after for r in reports))
        retention.expire(spark, resolved, _naive_utc(None))
        return reports


def maintain_task(run_type: str | None = None, settings: Settings | None = None, run_id: str | None = None) -> dict[str, Any]:
    """The build DAG's maintenance task: `maintain`, except in a backfill's runs; a JSON summary.

    A backfill's runs skip it (`run_type` "backfill"): one maintenance per quarter of a backfill
    would compact the same tables again and again; `lakehouse maintain` or the next scheduled run
    does it once.
    """
    if run_type == "backfill":
        log.info("backfill run: maintenance left to `lakehouse maintain` or the next scheduled run")
        return {"tables": 0, "bytes_saved": 0, "kept_for": [], "skipped": "backfill"}
    reports = maintain(settings or task_settings("maintain"), run_id=run_id)
    saved = sum(r.bytes_before - r.bytes_after for r in reports)
    return {"tables": len(reports), "bytes_saved": saved, "kept_for": sorted({k for r in reports for k in r.kept_for})}
