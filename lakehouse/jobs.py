"""The steps an orchestrator runs: one call per Airflow task, keyed on the data interval.

Each step builds its own Settings and SparkSession (an Airflow task is a process of its own), is
safe to repeat (the library's writes are idempotent), and returns a small JSON-able summary that
the next step receives through XCom. Nothing here knows about Airflow: the DAG files in
`orchestration/` only wire these calls, and the same steps run from a shell.

The lakehouse run id of an orchestrated run is derived from the orchestrator's run id, so every
retry of a task of one run stages, records and names its build the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from datetime import date, datetime, timezone
from typing import Any

from lakehouse import faults, quarters, storage
from lakehouse.settings import Settings, load_settings
from lakehouse.tables import BRONZE_TABLES, INGEST_LOG

log = logging.getLogger(__name__)

#: Monthly flight feeds: a quarter is complete when all three of its months were ingested.
FLIGHT_FEEDS = ("bronze.bts_flights", "bronze.nyc_flights")

#: The Airflow pool that serialises every writer: Delta on S3 allows one writer per table at a time.
WRITERS_POOL = "lakehouse_writers"


def run_id_for(kind: str, orchestrator_run_id: str) -> str:
    """A lakehouse run id from an orchestrator's (`scheduled__2013-04-01T00:00:00+00:00` -> `build-scheduled-2013-04-01T00-00-00-00-00`)."""
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9]+", "-", orchestrator_run_id).strip("-")


def month_of(interval_start: date) -> str:
    """The yyyy-MM of a month-long data interval."""
    return f"{interval_start.year:04d}-{interval_start.month:02d}"


def _naive_utc(moment: datetime | None) -> datetime:
    """UTC without a zone (the lakehouse's clock); now when None: a step's start is its only clock."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0) if moment.tzinfo else moment.replace(microsecond=0)


# ---------------------------------------------------------------- readiness (no Spark)


def extracts_landed(month: str, settings: Settings | None = None) -> list[str]:
    """The monthly extracts of `month` in the landing bucket (what a sensor waits for)."""
    settings = settings or load_settings()
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
    from lakehouse import inspect

    settings = settings or load_settings()
    dt = inspect.open_table(settings, INGEST_LOG, "transform")
    if dt is None:
        return []
    rows = inspect.arrow_dataset(settings, dt, "transform").to_table(columns=["feed", "object_key", "status"]).to_pylist()
    done = {quarters.object_month(r["object_key"]) for r in rows if r["feed"] in FLIGHT_FEEDS and r["status"] in ("committed", "recovered")}
    return sorted(m for m in done if m)


def quarter_ingested(quarter: str, settings: Settings | None = None) -> bool:
    """True when all three months of `quarter` have been ingested."""
    return quarter in quarters.complete(months_ingested(settings))


# ---------------------------------------------------------------- steps (Spark)


def ingest_month(month: str, run_id: str, started_at: datetime | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Ingest the month's extracts and any new snapshots into bronze, exactly once."""
    from bronze import ingest
    from lakehouse.spark import build_session

    settings = settings or load_settings()
    spark = build_session(settings, ["ingest"], app_name=f"lakehouse-{run_id}")
    report = ingest.run(spark, settings, run_id, _naive_utc(started_at), months=[month])
    summary = {"run_id": run_id, "month": month, "objects": report.objects, "rows": report.rows, "feeds": [dataclasses.asdict(f) for f in report.feeds]}
    log.info("ingested %s: %d objects, %d rows", month, report.objects, report.rows)
    return summary


def _context(settings: Settings, run_id: str, started_at: datetime | None):
    from lakehouse import quality
    from lakehouse.conform import RunContext

    return RunContext(run_id, _naive_utc(started_at), quality.load_config(settings))


def build_silver(run_id: str, started_at: datetime | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Silver for every bronze row not processed yet, each table behind its gates."""
    from lakehouse import build
    from lakehouse.spark import build_session

    settings = settings or load_settings()
    faults.checkpoint(settings, "silver.start")
    spark = build_session(settings, ["transform"], app_name=f"lakehouse-{run_id}-silver")
    ctx = _context(settings, run_id, started_at)
    results = build.run_silver(spark, settings, ctx)
    for r in results:
        log.info("%s: %s", r.table, "no new rows" if r.skipped else f"{r.input_rows} in, fates {r.fates}, v{r.version}")
    return {"silver": [dataclasses.asdict(r) for r in results], "gates": build.gate_refs(ctx.gates)}


def build_gold(quarter: str, run_id: str, started_at: datetime | None = None, force: bool = False, settings: Settings | None = None) -> dict[str, Any]:
    """Gold for the quarter behind its gates, unless an up-to-date build of it exists."""
    from lakehouse import build
    from lakehouse.spark import build_session

    settings = settings or load_settings()
    spark = build_session(settings, ["transform"], app_name=f"lakehouse-{run_id}-gold")
    ctx = _context(settings, run_id, started_at)
    began = _naive_utc(None)
    result = build.gold_step(spark, settings, quarter, ctx, build.code_version(settings), force)
    log.info("gold %s: %s", quarter, f"up to date (build {result.skipped_as})" if result.skipped_as else f"rows {result.rows}, digest {result.digest}")
    return {"gold": dataclasses.asdict(result), "gates": build.gate_refs(ctx.gates), "started_at": began.isoformat()}


def record_build(quarter: str, run_id: str, silver: Mapping[str, Any], gold: Mapping[str, Any], started_at: datetime | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Record the quarter's build: its MLflow run and its manifest row (nothing when gold was up to date)."""
    from lakehouse import build
    from lakehouse.conform import TableResult
    from lakehouse.spark import build_session

    result = build.GoldResult(**gold["gold"])
    if result.skipped_as is not None:
        log.info("%s is up to date: build %s", quarter, result.skipped_as)
        return {"build_id": result.skipped_as, "skipped": True}
    settings = settings or load_settings()
    spark = build_session(settings, ["transform"], app_name=f"lakehouse-{run_id}-record")
    ctx = _context(settings, run_id, started_at)
    tables = [TableResult(**r) for r in silver["silver"]]
    gold_started = datetime.fromisoformat(gold["started_at"])
    row = build.record(spark, settings, ctx, quarter, build.code_version(settings), gold_started, tables, result, [*silver["gates"], *gold["gates"]], None)
    log.info("recorded build %s (MLflow run %s, digest %s)", row["build_id"], row["mlflow_run_id"], row["digest"])
    return {"build_id": row["build_id"], "mlflow_run_id": row["mlflow_run_id"], "digest": row["digest"], "skipped": False}


def record_failure(quarter: str, run_id: str, step: str, error: BaseException | None, started_at: datetime | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Record a build that failed in `step`: a FAILED manifest row and MLflow run, with the failing gate's report."""
    from lakehouse import build, quality
    from lakehouse.spark import build_session

    settings = settings or load_settings()
    error = error if error is not None else RuntimeError(f"{step} failed")
    gates = build.gate_refs([error.result]) if isinstance(error, quality.GateFailed) else []
    spark = build_session(settings, ["transform"], app_name=f"lakehouse-{run_id}-failure")
    ctx = _context(settings, run_id, started_at)
    wrapped = RuntimeError(f"step {step}: {type(error).__name__}: {error}")
    row = build.record(spark, settings, ctx, quarter, build.code_version(settings), _naive_utc(None), [], None, gates, wrapped)
    log.error("build %s of %s FAILED in %s: %s (MLflow run %s)", row["build_id"], quarter, step, error, row["mlflow_run_id"])
    return {"build_id": row["build_id"], "mlflow_run_id": row["mlflow_run_id"]}


def maintain(settings: Settings | None = None) -> dict[str, Any]:
    """OPTIMIZE and VACUUM every table, keeping what recorded builds need."""
    from lakehouse import maintenance
    from lakehouse.spark import build_session

    settings = settings or load_settings()
    spark = build_session(settings, maintenance.ROLES, app_name="lakehouse-maintain")
    reports = maintenance.run(spark, settings, _naive_utc(None))
    saved = sum(r.bytes_before - r.bytes_after for r in reports)
    log.info("maintained %d tables, %d bytes saved", len(reports), saved)
    return {"tables": len(reports), "bytes_saved": saved, "kept_for": sorted({k for r in reports for k in r.kept_for})}
