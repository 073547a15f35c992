"""A build: silver for the new bronze rows, then gold for each quarter, every step behind its gate.

Silver dimensions go first so that the flights gate checks referential integrity against
published dimensions. Gold replaces exactly the quarter's partition of each gold table, so
rebuilding 2001Q1 leaves 2001Q2 untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from gold import airport_daily, route_daily, training_set
from gold.daily import eligible
from lakehouse import conform, delta, quality, quarters, storage
from lakehouse.conform import RunContext, TableResult
from lakehouse.settings import Settings
from lakehouse.tables import AIRPORT_DAILY, INGEST_LOG, ROUTE_DAILY, SILVER_FLIGHTS, SILVER_WEATHER, TRAINING_SET, Table
from silver import airports, carriers, flights, planes, weather_hourly

#: Silver jobs in dependency order: dimensions before the facts that reference them.
SILVER_JOBS = (airports, carriers, planes, weather_hourly, flights)

#: Monthly flight feeds: a quarter is complete when all three of its months were ingested.
FLIGHT_FEEDS = ("bronze.bts_flights", "bronze.nyc_flights")

LOOKBACK_DAYS = 28


@dataclass
class GoldResult:
    quarter: str
    eligible_rows: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    gates: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class BuildReport:
    run_id: str
    silver: list[TableResult] = field(default_factory=list)
    gold: list[GoldResult] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def ingested_months(spark: SparkSession, settings: Settings) -> list[str]:
    """Months (yyyy-MM) of the flight extracts that bronze holds."""
    log = conform.current(spark, settings, INGEST_LOG).where(
        F.col("feed").isin(*FLIGHT_FEEDS) & F.col("status").isin("committed", "recovered")
    )
    month = F.regexp_extract("object_key", r"(\d{4}-\d{2})\.csv(\.gz)?$", 1)
    return sorted(r[0] for r in log.select(month.alias("m")).where(F.col("m") != "").distinct().collect())


def ready_quarters(spark: SparkSession, settings: Settings) -> list[str]:
    """Quarters all three of whose months have been ingested."""
    return quarters.complete(ingested_months(spark, settings))


def run_silver(spark: SparkSession, settings: Settings, ctx: RunContext, on_table: Callable[[TableResult], None] | None = None) -> list[TableResult]:
    """Every silver table from the bronze rows it has not processed yet."""
    results = []
    for job in SILVER_JOBS:
        result = job.run(spark, settings, ctx)
        results.append(result)
        if on_table is not None:
            on_table(result)
    return results


def _month_range(start, end) -> list[str]:
    months, cursor = [], start.replace(day=1)
    while cursor < end:
        months.append(f"{cursor.year:04d}-{cursor.month:02d}")
        cursor = (cursor.replace(day=28) + timedelta(days=4)).replace(day=1)
    return months


def _stage_gate_publish(
    spark: SparkSession, settings: Settings, ctx: RunContext, table: Table, df: DataFrame, quarter: str, checks: list[quality.Check], result: GoldResult
) -> None:
    """Write-audit-publish one gold table's quarter."""
    staging = table.staging_location(settings, f"{ctx.run_id}/{quarter}")
    delta.overwrite(df, staging)
    staged = delta.read(spark, staging).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        suite = f"gold.{table.short_name}.{quarter}"
        quality.gate(settings, ctx.run_id, staged, suite, checks)
        result.gates.append(suite)
        delta.ensure_table(spark, settings, table)
        result.versions[table.name] = delta.replace_where(staged, table.location(settings), f"quarter = '{quarter}'", user_metadata=ctx.run_id)
        result.rows[table.name] = staged.count()
    finally:
        staged.unpersist()
    storage.remove_prefix(settings, "transform", "quality", f"staging/{table.name}/{ctx.run_id}/{quarter}/")


def run_gold(spark: SparkSession, settings: Settings, quarter: str, ctx: RunContext) -> GoldResult:
    """Build, gate and publish route_daily, airport_daily and the training set of one quarter."""
    t0 = time.monotonic()
    result = GoldResult(quarter)
    start, end = quarters.parse(quarter)
    lookback = start - timedelta(days=LOOKBACK_DAYS)
    silver_flights = conform.current(spark, settings, SILVER_FLIGHTS).where(
        F.col("flight_month").isin(*_month_range(lookback, end)) & (F.col("flight_date") >= F.lit(lookback)) & (F.col("flight_date") < F.lit(end))
    )
    weather = conform.current(spark, settings, SILVER_WEATHER).where(
        (F.col("obs_local_ts") >= F.lit(start)) & (F.col("obs_local_ts") < F.lit(end + timedelta(days=1)))
    )
    in_quarter = (F.col("flight_date") >= F.lit(start)) & (F.col("flight_date") < F.lit(end))
    result.eligible_rows = eligible(silver_flights).where(in_quarter).count()
    routes = route_daily.build_route_daily(silver_flights).persist(StorageLevel.MEMORY_AND_DISK)
    origins = airport_daily.build_airport_daily(silver_flights).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        of_quarter = F.col("quarter") == quarter
        _stage_gate_publish(spark, settings, ctx, ROUTE_DAILY, routes.where(of_quarter), quarter, route_daily.checks(quarter, result.eligible_rows), result)
        _stage_gate_publish(spark, settings, ctx, AIRPORT_DAILY, origins.where(of_quarter), quarter, airport_daily.checks(quarter, result.eligible_rows), result)
        rows = training_set.build_training_set(silver_flights, routes, origins, weather, quarter, start, end)
        _stage_gate_publish(spark, settings, ctx, TRAINING_SET, rows, quarter, training_set.checks(quarter, result.eligible_rows, ctx.config), result)
    finally:
        routes.unpersist()
        origins.unpersist()
    result.seconds = time.monotonic() - t0
    return result


def build(
    spark: SparkSession,
    settings: Settings,
    wanted: list[str],
    ctx: RunContext,
    on_silver: Callable[[TableResult], None] | None = None,
    on_gold: Callable[[GoldResult], None] | None = None,
) -> BuildReport:
    """Silver for the new bronze rows, then gold for each wanted quarter."""
    report = BuildReport(ctx.run_id)
    t0 = time.monotonic()
    report.silver = run_silver(spark, settings, ctx, on_silver)
    report.seconds["silver"] = time.monotonic() - t0
    for quarter in wanted:
        t1 = time.monotonic()
        result = run_gold(spark, settings, quarter, ctx)
        report.gold.append(result)
        report.seconds[f"gold {quarter}"] = time.monotonic() - t1
        if on_gold is not None:
            on_gold(result)
    return report
