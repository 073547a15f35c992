"""Gold's job: the quarters' route_daily, airport_daily and training set, built together in one pass.

Silver is read once into a cached projection of the columns gold needs: the quarters' months and
the lookback their trailing windows read (`LOOKBACK_DAYS`, from `gold.training_set`'s windows).
Each gold table is written once per pass, replacing exactly the partitions of the quarters built, so
rebuilding 2001Q1 leaves 2001Q2 untouched. A quarter blocked by its gates publishes none of its tables;
after its three gates, a quarter's drift against the quarter before is one more gate (`gold.drift`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import reduce
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from gold import airport_daily, drift, route_daily, training_set
from gold.daily import eligible
from gold.training_set import LOOKBACK_DAYS
from lakehouse import delivery, delta, digest, faults, inspect, quality, quarters
from lakehouse.runs import RunContext
from lakehouse.settings import Settings
from lakehouse.spark import adaptive_for, job_description
from lakehouse.tables import AIRPORT_DAILY, REGISTRY, ROUTE_DAILY, SILVER_FLIGHTS, SILVER_WEATHER, TRAINING_SET, Table

log = logging.getLogger(__name__)


@dataclass
class GoldResult:
    quarter: str
    eligible_rows: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # gold tables written
    read_versions: dict[str, int] = field(default_factory=dict)  # silver and bronze tables read
    gates: list[str] = field(default_factory=list)
    digest: str | None = None
    build_id: str | None = None
    mlflow_run_id: str | None = None
    skipped_as: str | None = None  # the up-to-date build this one would repeat
    stale_reason: str | None = None  # why it was built ("never built", "silver.flights changed in 2013-05", "forced")
    gate_refs: list[dict[str, Any]] = field(default_factory=list)  # this quarter's gates (suite, success, report)
    error: str | None = None  # the gate that blocked it
    drift: dict[str, Any] | None = None  # its features' drift against the quarter before (`gold.drift`)
    seconds: float = 0.0  # the quarter's share of the pass that built it


def _month_range(start: date, end: date) -> list[str]:
    months, cursor = [], start.replace(day=1)
    while cursor < end:
        months.append(f"{cursor.year:04d}-{cursor.month:02d}")
        cursor = (cursor.replace(day=28) + timedelta(days=4)).replace(day=1)
    return months


def months_read(quarter: str) -> dict[str, list[str]]:
    """The months of each silver table that a quarter's gold build reads (its lookback included)."""
    start, end = quarters.parse(quarter)
    return {
        SILVER_FLIGHTS.name: _month_range(start - timedelta(days=LOOKBACK_DAYS), end),
        # the departure hour of a flight late on the quarter's last day may fall on the next day
        SILVER_WEATHER.name: _month_range(start, end + timedelta(days=1)),
    }


#: The silver.flights columns gold reads: the one projection of silver that a quarter's build caches.
_GOLD_FLIGHT_COLUMNS = (
    "flight_id", "flight_date", "source_system", "origin", "dest", "distance_mi", "arr_delay_min", "is_cancelled",
    "sched_dep_local_ts", "dep_local_ts",
)  # fmt: skip


def _gate(settings: Settings, ctx: RunContext, table: Table, df: DataFrame, quarter: str, checks: list[quality.Check], result: GoldResult) -> None:
    """Audit one gold table's rows of the quarter, in memory, before anything is written."""
    suite = f"gold.{table.short_name}.{quarter}"
    before = len(ctx.gates)
    try:
        quality.gate(settings, ctx.run_id, df, suite, checks, ctx.gates)
    finally:
        result.gate_refs += quality.gate_refs(ctx.gates[before:])
    result.gates.append(suite)


def _any_of(conditions: list[Column]) -> Column:
    return reduce(lambda a, b: a | b, conditions)


def _drift(
    spark: SparkSession, settings: Settings, ctx: RunContext, rows: DataFrame, passed: list[str], results: Mapping[str, GoldResult], failures: dict[str, quality.GateFailed]
) -> list[str]:
    """Compare each passed quarter's training rows with the latest build of the quarter before; return the quarters still passing.

    The reference is that quarter's rows of this pass when it passed its gates here, else its
    latest succeeded build, read at the version the build wrote. Each quarter's report becomes its
    drift gate (`gold.drift`): a feature above `gates.drift.block_psi` blocks the quarter like any
    failed gate. A quarter that blocks is no reference for the next one: the next is compared again
    with the last succeeded build instead.
    """
    cfg = drift.config(ctx.config)
    block = float(cfg["block_psi"])
    numeric, categorical = drift.compared(exclude=cfg.get("exclude", ()))
    recorded = delivery.latest_succeeded(delivery.builds(settings, "transform"))
    location = TRAINING_SET.location(settings)
    in_pass, reports = set(passed), dict[str, dict[str, Any]]()
    todo = list(passed)
    features = [*numeric, *categorical]
    while todo:
        pairs, recorded_rows = [], []
        for quarter in todo:
            before = drift.previous_quarter(quarter)
            if before in in_pass:
                pairs.append(drift.Pair(quarter, before, before, None))
            elif before in recorded:
                build, key = recorded[before], f"recorded:{before}"
                stored = delta.read(spark, location, build["tables_written"][TRAINING_SET.name]).where(F.col("quarter") == before)
                recorded_rows.append(stored.select(F.lit(key).alias("_key"), *features))
                pairs.append(drift.Pair(quarter, before, key, build["build_id"]))
            else:
                reports[quarter] = drift.no_reference(quarter)
        # the pass's cached rows are read once for every quarter compared, recorded references beside them
        in_rows = sorted({p.quarter for p in pairs} | {p.reference_key for p in pairs if p.reference_build is None})
        keyed = reduce(DataFrame.unionByName, [rows.where(F.col("quarter").isin(*in_rows)).select(F.col("quarter").alias("_key"), *features), *recorded_rows])
        reports.update(drift.reports(keyed, pairs, numeric, categorical))
        blocked = {q for q in todo if (reports[q]["max_psi"] or 0.0) > block}
        in_pass -= blocked
        # a quarter compared with one that has just blocked is compared again, with that quarter's last succeeded build
        todo = [q for q in passed if q in in_pass and drift.previous_quarter(q) in blocked]
    still = []
    for quarter in passed:
        report, result = reports[quarter], results[quarter]
        report.update(warn_psi=float(cfg["warn_psi"]), block_psi=block if math.isfinite(block) else None)  # None: never blocks
        for feature in report["features"]:
            feature["verdict"] = drift.verdict(feature["psi"], ctx.config)
        result.drift = report
        for line in drift.warnings(report, ctx.config):
            log.warning("drift: %s", line)
        suite, gates_before = drift.SUITE.format(quarter=quarter), len(ctx.gates)
        try:
            quality.gate(settings, ctx.run_id, drift.gate_frame(spark, report), suite, drift.checks(report, ctx.config), ctx.gates, extra={"drift": report})
            still.append(quarter)
        except quality.GateFailed as failure:
            failures[quarter], result.error = failure, str(failure)
        finally:
            result.gate_refs += quality.gate_refs(ctx.gates[gates_before:])
            result.gates.append(suite)
    return still


def run_gold(spark: SparkSession, settings: Settings, wanted: Sequence[str], ctx: RunContext, reads: Mapping[str, int]) -> tuple[list[GoldResult], dict[str, quality.GateFailed]]:
    """Build route_daily, airport_daily and the training set of the `wanted` quarters in one pass (see `_build`).

    Adaptive execution follows the size of the pass: the silver rows of the months it reads, from
    the Delta log's statistics (the demo's six quarters use it, a one-quarter correction does not).
    """
    months = sorted({m for q in set(wanted) for m in months_read(q)[SILVER_FLIGHTS.name]})
    with adaptive_for(spark, settings, inspect.rows_in(settings, SILVER_FLIGHTS, {"flight_month": months})):
        return _build(spark, settings, wanted, months, ctx, reads)


def _build(
    spark: SparkSession, settings: Settings, wanted: Sequence[str], months: Sequence[str], ctx: RunContext, reads: Mapping[str, int]
) -> tuple[list[GoldResult], dict[str, quality.GateFailed]]:
    """Build route_daily, airport_daily and the training set of the `wanted` quarters in one pass.

    Silver is read once into a cached projection of the columns gold needs (the quarters and the
    lookback before each); the three outputs of every quarter are computed once and cached; each
    quarter's three gates run on the cached rows, then its drift gate (`_drift`); then each gold table is written once, replacing
    the partitions of the quarters whose three gates all passed (a blocked quarter publishes none of
    its tables). The digests come from the same cached rows. `months` are the silver.flights
    months the quarters read (`months_read`). Returns the results in quarter order
    and the gate failures by quarter. `reads` are the versions of the tables read, to record
    (the latest: one writer at a time, so nothing commits in between).
    """
    t0 = time.monotonic()
    periods = {q: quarters.parse(q) for q in sorted(set(wanted))}
    results = {q: GoldResult(q, read_versions=dict(reads)) for q in periods}
    failures: dict[str, quality.GateFailed] = {}
    lookback = timedelta(days=LOOKBACK_DAYS)
    # the latest versions, recorded as read: one writer at a time, so nothing commits in between (a
    # versionAsOf read of them would be refused once their commit is older than the file retention)
    silver_flights = (
        delta.read(spark, SILVER_FLIGHTS.location(settings))
        .where(F.col("flight_month").isin(*months))
        .where(_any_of([(F.col("flight_date") >= F.lit(s - lookback)) & (F.col("flight_date") < F.lit(e)) for s, e in periods.values()]))
        .select(*_GOLD_FLIGHT_COLUMNS)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    weather = delta.current(spark, settings, SILVER_WEATHER).where(
        _any_of([(F.col("obs_local_ts") >= F.lit(s)) & (F.col("obs_local_ts") < F.lit(e + timedelta(days=1))) for s, e in periods.values()])
    )
    cached: list[DataFrame] = [silver_flights]
    try:
        eligible_rows = {r["quarter"]: int(r["count"]) for r in eligible(silver_flights).groupBy(quarters.quarter_col(F.col("flight_date")).alias("quarter")).count().collect()}
        routes = route_daily.build_route_daily(silver_flights).persist(StorageLevel.MEMORY_AND_DISK)
        origins = airport_daily.build_airport_daily(silver_flights).persist(StorageLevel.MEMORY_AND_DISK)
        rows = training_set.build_training_set(silver_flights, routes, origins, weather, periods).persist(StorageLevel.MEMORY_AND_DISK)
        cached += [routes, origins, rows]
        passed = []
        for quarter, result in results.items():
            result.eligible_rows = eligible_rows.get(quarter, 0)
            of_quarter = F.col("quarter") == quarter
            try:
                with job_description(spark, f"gold {quarter} gates"):
                    _gate(settings, ctx, ROUTE_DAILY, routes.where(of_quarter), quarter, route_daily.checks(quarter, result.eligible_rows, ctx.config), result)
                    _gate(settings, ctx, AIRPORT_DAILY, origins.where(of_quarter), quarter, airport_daily.checks(quarter, result.eligible_rows, ctx.config), result)
                    _gate(settings, ctx, TRAINING_SET, rows.where(of_quarter), quarter, training_set.checks(quarter, result.eligible_rows, ctx.config), result)
                passed.append(quarter)
            except quality.GateFailed as failure:
                failures[quarter], result.error = failure, str(failure)
        with job_description(spark, "gold drift"):
            passed = _drift(spark, settings, ctx, rows, passed, results, failures)
        if passed:
            in_passed = F.col("quarter").isin(*passed)
            predicate = "quarter IN (" + ", ".join(f"'{q}'" for q in passed) + ")"
            with job_description(spark, "gold publish"):
                for name, frame in ((ROUTE_DAILY.name, routes), (AIRPORT_DAILY.name, origins), (TRAINING_SET.name, rows)):
                    table = REGISTRY[name]
                    delta.ensure_table(spark, settings, table)
                    delta.replace_where(frame.where(in_passed), table.location(settings), predicate, tag=ctx.run_id)
                    version = inspect.written_version(settings, table)
                    counts = {r["quarter"]: int(r["count"]) for r in frame.where(in_passed).groupBy("quarter").count().collect()}
                    for quarter in passed:
                        results[quarter].versions[name] = version
                        results[quarter].rows[name] = counts.get(quarter, 0)
            faults.checkpoint(settings, "gold.after_publish")
            with job_description(spark, "gold digests"):
                digests = digest.spark_digests(rows.where(in_passed), "quarter")
            for quarter in passed:
                # a quarter without training rows (its gate allowed that) has the digest of no rows
                results[quarter].digest = digests.get(quarter) or digest.combine([], sorted(rows.columns))
    finally:
        for frame in cached:
            frame.unpersist()
    share = (time.monotonic() - t0) / max(len(results), 1)
    for result in results.values():
        result.seconds = share
    return list(results.values()), failures
