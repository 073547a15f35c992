"""A build: silver for the new bronze rows, then gold for each quarter, every step behind its gate.

Silver dimensions go first so that the flights gate checks referential integrity against
published dimensions. Gold replaces exactly the quarter's partition of each gold table, so
rebuilding 2001Q1 leaves 2001Q2 untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import reduce
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from gold import airport_daily, route_daily, training_set
from gold.daily import eligible
from lakehouse import conform, delivery, delta, digest, faults, inspect, quality, quarters
from lakehouse.conform import RunContext, TableResult
from lakehouse.settings import Settings
from lakehouse.spark import job_description
from lakehouse.tables import REGISTRY, AIRPORT_DAILY, BUILDS, PROGRESS, ROUTE_DAILY, SILVER_FLIGHTS, SILVER_WEATHER, TRAINING_SET, Table
from silver import airports, carriers, flights, planes, weather_hourly

log = logging.getLogger(__name__)

#: Silver jobs in dependency order: dimensions before the facts that reference them.
SILVER_JOBS = (airports, carriers, planes, weather_hourly, flights)

LOOKBACK_DAYS = 28


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
    seconds: float = 0.0  # the quarter's share of the pass that built it


@dataclass
class BuildReport:
    run_id: str
    silver: list[TableResult] = field(default_factory=list)
    gold: list[GoldResult] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def run_silver(spark: SparkSession, settings: Settings, ctx: RunContext, on_table: Callable[[TableResult], None] | None = None) -> list[TableResult]:
    """Every silver table from the bronze rows it has not processed yet."""
    results = []
    for job in SILVER_JOBS:
        with job_description(spark, f"silver {job.__name__}"):
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
        result.gate_refs += gate_refs(ctx.gates[before:])
    result.gates.append(suite)


def _any_of(conditions: list[Column]) -> Column:
    return reduce(lambda a, b: a | b, conditions)


def run_gold(
    spark: SparkSession, settings: Settings, wanted: Sequence[str], ctx: RunContext, reads: Mapping[str, int] | None = None
) -> tuple[list[GoldResult], dict[str, quality.GateFailed]]:
    """Build route_daily, airport_daily and the training set of the `wanted` quarters in one pass.

    Silver is read once into a cached projection of the columns gold needs (the quarters and the
    lookback before each); the three outputs of every quarter are computed once and cached; each
    quarter's three gates run on the cached rows; then each gold table is written once, replacing
    the partitions of the quarters whose three gates all passed (a blocked quarter publishes none of
    its tables). The digests come from the same cached rows. Returns the results in quarter order
    and the gate failures by quarter. `reads` are the table versions to record as read, when the
    caller has just looked them up.
    """
    t0 = time.monotonic()
    reads = dict(reads) if reads is not None else read_versions(settings)
    periods = {q: quarters.parse(q) for q in sorted(set(wanted))}
    results = {q: GoldResult(q, read_versions=dict(reads)) for q in periods}
    failures: dict[str, quality.GateFailed] = {}
    lookback = timedelta(days=LOOKBACK_DAYS)
    months = sorted({m for q in periods for m in months_read(q)[SILVER_FLIGHTS.name]})
    # the latest versions, recorded as read: one writer at a time, so nothing commits in between (a
    # versionAsOf read of them would be refused once their commit is older than the file retention)
    silver_flights = (
        delta.read(spark, SILVER_FLIGHTS.location(settings))
        .where(F.col("flight_month").isin(*months))
        .where(_any_of([(F.col("flight_date") >= F.lit(s - lookback)) & (F.col("flight_date") < F.lit(e)) for s, e in periods.values()]))
        .select(*_GOLD_FLIGHT_COLUMNS)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    weather = conform.current(spark, settings, SILVER_WEATHER).where(
        _any_of([(F.col("obs_local_ts") >= F.lit(s)) & (F.col("obs_local_ts") < F.lit(e + timedelta(days=1))) for s, e in periods.values()])
    )
    cached: list[DataFrame] = [silver_flights]
    try:
        eligible_rows = {
            r["quarter"]: int(r["count"])
            for r in eligible(silver_flights).groupBy(quarters.quarter_col(F.col("flight_date")).alias("quarter")).count().collect()
        }
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
                    _gate(settings, ctx, ROUTE_DAILY, routes.where(of_quarter), quarter, route_daily.checks(quarter, result.eligible_rows), result)
                    _gate(settings, ctx, AIRPORT_DAILY, origins.where(of_quarter), quarter, airport_daily.checks(quarter, result.eligible_rows), result)
                    _gate(settings, ctx, TRAINING_SET, rows.where(of_quarter), quarter, training_set.checks(quarter, result.eligible_rows, ctx.config), result)
                passed.append(quarter)
            except quality.GateFailed as failure:
                failures[quarter], result.error = failure, str(failure)
        if passed:
            in_passed = F.col("quarter").isin(*passed)
            predicate = "quarter IN (" + ", ".join(f"'{q}'" for q in passed) + ")"
            with job_description(spark, "gold publish"):
                for name, frame in ((ROUTE_DAILY.name, routes), (AIRPORT_DAILY.name, origins), (TRAINING_SET.name, rows)):
                    table = REGISTRY[name]
                    delta.ensure_table(spark, settings, table)
                    version = delta.replace_where(frame.where(in_passed), table.location(settings), predicate, user_metadata=ctx.run_id)
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


def _progress_versions(settings: Settings) -> dict[tuple[str, str], int]:
    """(silver consumer, bronze table) -> the last bronze version that silver table processed (delta-rs, no JVM)."""
    dt = inspect.open_table(settings, PROGRESS, "transform")
    if dt is None:
        return {}
    rows = inspect.arrow_dataset(settings, dt, "transform").to_table(columns=["consumer", "source_table", "last_version"]).to_pylist()
    return {(r["consumer"], r["source_table"]): int(r["last_version"]) for r in rows}


def _version(settings: Settings, table: Table) -> int | None:
    dt = inspect.open_table(settings, table, "transform")
    return None if dt is None else int(dt.version())


def read_versions(settings: Settings) -> dict[str, int]:
    """The versions a gold build reads (silver flights and weather) and the bronze versions behind them (no JVM)."""
    versions = {t.name: v for t in (SILVER_FLIGHTS, SILVER_WEATHER) if (v := _version(settings, t)) is not None}
    for (consumer, source), version in _progress_versions(settings).items():
        if consumer in (SILVER_FLIGHTS.name, SILVER_WEATHER.name):
            versions[source] = version
    return versions


def silver_pending(settings: Settings) -> list[str]:
    """The silver tables with bronze rows they have not processed yet (no JVM)."""
    done = _progress_versions(settings)
    pending = []
    for job in SILVER_JOBS:
        consumer = job.SPEC.table.name
        for source in job.SPEC.prepare:
            version = _version(settings, REGISTRY[source])
            if version is not None and version > done.get((consumer, source), -1):
                pending.append(consumer)
                break
    return pending


def config_digest(config: Mapping[str, Any]) -> str:
    """A short digest of the rule and gate thresholds a build ran with."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def previous_builds(settings: Settings) -> list[dict[str, Any]]:
    """Every recorded build, oldest first (the manifest, read with delta-rs)."""
    return list(reversed(delivery.builds(settings, "transform")))


def months_read(quarter: str) -> dict[str, list[str]]:
    """The months of each silver table that a quarter's gold build reads (its lookback included)."""
    start, end = quarters.parse(quarter)
    return {
        SILVER_FLIGHTS.name: _month_range(start - timedelta(days=LOOKBACK_DAYS), end),
        # the departure hour of a flight late on the quarter's last day may fall on the next day
        SILVER_WEATHER.name: _month_range(start, end + timedelta(days=1)),
    }


#: How each silver table that gold reads names the month of a changed row: (partition, time column).
_MONTH_OF = {SILVER_FLIGHTS.name: ("flight_month", None), SILVER_WEATHER.name: (None, "obs_local_ts")}


def stale_because(
    settings: Settings, last: Mapping[str, Any] | None, quarter: str, reads: Mapping[str, int], code_version: str, config: str
) -> str | None:
    """Why `quarter` must be built again since its last succeeded build `last`, or None when it is up to date.

    Up to date means: the same code and thresholds, and no commit to silver since that build changed
    a row in a month the quarter reads (its own months and its lookback). The Delta log names the
    partitions (or, for an unpartitioned table, the time range) each commit changed, so a
    correction to one month rebuilds exactly the quarters that read that month.
    """
    if last is None:
        return "never built"
    if last["code_version"] != code_version:
        return f"code changed ({last['code_version']} -> {code_version})"
    if last["config_digest"] != config:
        return "quality thresholds changed"
    recorded = dict(last["tables_read"] or {})
    for table, months in months_read(quarter).items():
        before, now = recorded.get(table), reads.get(table)
        if before == now:
            continue
        if before is None or now is None:
            return f"{table} appeared or vanished"
        if now < before:
            return f"{table} is older (v{now}) than the build read (v{before})"
        partition, time_column = _MONTH_OF[table]
        commits = delta.commit_actions(settings, REGISTRY[table], before, now)
        changed = None if commits is None else delta.changed_months(commits, partition, time_column)
        if changed is None:
            return f"{table} changed since v{before} where the log cannot tell which months"
        touched = sorted(changed & set(months))
        if touched:
            return f"{table} changed in {', '.join(touched)} (v{before} -> v{now})"
    return None


def last_succeeded(previous: list[dict[str, Any]], quarter: str) -> dict[str, Any] | None:
    """The newest succeeded build of `quarter` (`previous` is oldest first)."""
    return next((row for row in reversed(previous) if row["quarter"] == quarter and row["status"] == "SUCCEEDED"), None)


def gate_refs(gates: Sequence[quality.GateResult]) -> list[dict[str, Any]]:
    """What a build record keeps of each gate: its suite, outcome and report."""
    return [{"suite": g.suite, "success": g.success, "report_uri": g.report_uri} for g in gates]


def code_version(settings: Settings) -> str:
    """The git commit of the code (LAKEHOUSE_CODE_VERSION wins; `+dirty` when the code that builds data changed).

    Only the code and its pins count (not docs, tests or benchmark results): an up-to-date build
    is skipped when the code version matches.
    """
    import subprocess

    from lakehouse.settings import PROJECT_ROOT

    if settings.code_version:
        return settings.code_version
    try:
        git = ["git", "-C", str(PROJECT_ROOT)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        code = ["lakehouse", "bronze", "silver", "gold", "orchestration", "config", "pyproject.toml", "requirements/lock.txt"]
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", *code], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git checkout; set LAKEHOUSE_CODE_VERSION)"
    return commit + ("+dirty" if dirty else "")


def _build_id(previous: list[dict[str, Any]], base: str, status: str, written: Mapping[str, int]) -> str | dict[str, Any]:
    """The id of a new build of run `base`, or the row of the very same build when it is recorded already.

    A retried `record` task finds its own row (same status, same versions written); a run that
    builds again (a cleared and re-run Airflow run, a failure then a success) gets `<base>-r2`, ...
    """
    same_run = [r for r in previous if r["build_id"] == base or r["build_id"].startswith(f"{base}-r")]
    for row in same_run:
        if row["status"] == status and dict(row["tables_written"] or {}) == dict(written):
            return row
    return base if not same_run else f"{base}-r{len(same_run) + 1}"


def record(
    spark: SparkSession,
    settings: Settings,
    ctx: RunContext,
    quarter: str,
    code_version: str,
    started: datetime,
    silver: list[TableResult],
    gold: GoldResult | None,
    gates: Sequence[Mapping[str, Any]],
    error: BaseException | None,
) -> dict[str, Any]:
    """Write the manifest row of one quarter's build and its MLflow run; return the row.

    `gates` are the build's gate references (`gate_refs`). Recording the same build again (a
    retried task) returns the row already written.
    """
    from lakehouse import tracking

    status = "FAILED" if error is not None else "SUCCEEDED"
    build_id = _build_id(previous_builds(settings), f"{ctx.run_id}-{quarter}", status, dict(gold.versions) if gold is not None else {})
    if not isinstance(build_id, str):
        return build_id  # recorded already
    rows: dict[str, int] = {}
    metrics: dict[str, float] = {}
    for r in silver:
        for fate, n in r.fates.items():
            rows[f"{r.table}.{fate}"] = n
            metrics[f"rows.{r.table}.{fate}"] = n
        for rule, n in r.quarantined_by_rule.items():
            metrics[f"quarantined.{r.table}.{rule}"] = n
        metrics[f"seconds.{r.table}"] = r.seconds
    written: dict[str, int] = {}
    inputs: list[tuple[str, str, int, str, str]] = []
    if gold is not None:
        rows.update({t: n for t, n in gold.rows.items()})
        rows["eligible_silver_rows"] = gold.eligible_rows
        written = dict(gold.versions)
        metrics.update({f"rows.{t}": n for t, n in gold.rows.items()})
        metrics["seconds.gold"] = gold.seconds
        if TRAINING_SET.name in gold.versions and gold.digest:
            inputs.append((TRAINING_SET.name, TRAINING_SET.location(settings), gold.versions[TRAINING_SET.name], gold.digest, "training"))
        for name, version in sorted(gold.read_versions.items()):
            location = REGISTRY[name].location(settings)
            inputs.append((name, location, version, tracking.identity_digest(location, version), "source"))
    reads = dict(gold.read_versions) if gold is not None else {}
    metrics["gates.passed"] = sum(bool(g["success"]) for g in gates)
    metrics["gates.failed"] = sum(not g["success"] for g in gates)
    record: dict[str, Any] = {
        "build_id": build_id, "quarter": quarter, "status": status, "mlflow_run_id": None, "run_id": ctx.run_id,
        "feature_contract_version": training_set.FEATURE_CONTRACT_VERSION, "code_version": code_version,
        "config_digest": config_digest(ctx.config), "tables_read": reads, "tables_written": written, "digest": gold.digest if gold is not None else None,
        "row_counts": rows, "gate_reports": {g["suite"]: g["report_uri"] for g in gates if g["report_uri"]},
        "error": None if error is None else f"{type(error).__name__}: {error}"[:4000],
        "started_at": started, "ended_at": datetime.now(timezone.utc).replace(tzinfo=None),
    }  # fmt: skip
    params = {
        "quarter": quarter, "feature_contract_version": training_set.FEATURE_CONTRACT_VERSION, "code_version": code_version,
        "spark_version": spark.version, "delta_version": _delta_version(), "build_id": build_id,
        **tracking.flatten_params("gates", ctx.config["gates"]), **tracking.flatten_params("rules", ctx.config["rules"]),
    }  # fmt: skip
    schemas = {t.name: json.loads(t.schema.json()) for t in (TRAINING_SET, ROUTE_DAILY, AIRPORT_DAILY)}
    tracking.log_build(settings, record, params, metrics, inputs, schemas)
    delta.ensure_table(spark, settings, BUILDS)
    delta.append(spark.createDataFrame([record], BUILDS.schema), BUILDS.location(settings))
    return record


def _delta_version() -> str:
    from importlib.metadata import version

    return version("delta-spark")


def plan_gold(
    settings: Settings, wanted: Sequence[str], code_version: str, config: Mapping[str, Any], force: Sequence[str] = ()
) -> tuple[dict[str, int], dict[str, str], dict[str, GoldResult]]:
    """Which wanted quarters are stale: (versions read, {quarter: why it is built}, {quarter: skipped result}).

    The one place that decides what a run builds: a quarter in `force`, never built, built by other
    code or thresholds, or whose silver months changed since its last succeeded build
    (`stale_because`). It reads the Delta logs and the manifest with delta-rs: no JVM.
    """
    reads = read_versions(settings)
    previous = previous_builds(settings)
    digest_of_config = config_digest(config)
    stale: dict[str, str] = {}
    skipped: dict[str, GoldResult] = {}
    for quarter in sorted(set(wanted)):
        last = last_succeeded(previous, quarter)
        reason = "forced" if quarter in force else stale_because(settings, last, quarter, reads, code_version, digest_of_config)
        if reason is None and last is not None:
            skipped[quarter] = GoldResult(quarter, read_versions=dict(reads), skipped_as=last["build_id"])
        else:
            stale[quarter] = reason or "forced"
    return reads, stale, skipped


def build(
    spark: SparkSession,
    settings: Settings,
    wanted: list[str],
    ctx: RunContext,
    code_version: str,
    on_silver: Callable[[TableResult], None] | None = None,
    on_gold: Callable[[GoldResult], None] | None = None,
    force: bool | Sequence[str] = False,
    own: Sequence[str] | None = None,
    record_errors: bool = True,
) -> BuildReport:
    """Silver for the new bronze rows, then gold for the stale wanted quarters in one pass; every build is recorded.

    A quarter is skipped as up to date unless it is stale (`plan_gold`); `force` (True for every
    wanted quarter, or the quarters to force) rebuilds it anyway. A quarter blocked by its gates is
    recorded as a FAILED build (manifest row and MLflow run) and does not stop the others from
    being published and recorded. `own` are the quarters this build answers for (default: all
    wanted): a silver failure is recorded against them, and only their gate failures are raised
    (the others are recorded and reported). Other errors are recorded against the quarters they
    stopped when `record_errors`; an orchestrator that retries passes False and records the
    final failure itself, so a retry that succeeds leaves no FAILED row behind.
    """
    report = BuildReport(ctx.run_id)
    own = list(wanted) if own is None else list(own)
    t0 = time.monotonic()
    started = ctx.started_at.replace(tzinfo=None)
    forced = list(wanted) if force is True else list(force or [])
    try:
        report.silver = run_silver(spark, settings, ctx, on_silver)
    except Exception as error:
        if record_errors or isinstance(error, quality.GateFailed):
            for quarter in own:
                record(spark, settings, ctx, quarter, code_version, started, report.silver, None, gate_refs(ctx.gates), error)
        raise
    report.seconds["silver"] = time.monotonic() - t0
    silver_gates = gate_refs(ctx.gates)
    t1 = time.monotonic()
    gold_started = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    reads, stale, skipped = plan_gold(settings, wanted, code_version, ctx.config, forced)
    for quarter, reason in stale.items():
        log.info("gold %s: to build (%s)", quarter, reason)
    failures: dict[str, quality.GateFailed] = {}
    built: list[GoldResult] = []
    if stale:
        before = len(ctx.gates)
        try:
            built, failures = run_gold(spark, settings, list(stale), ctx, reads)
        except Exception as error:
            if record_errors:
                for quarter in stale:
                    record(spark, settings, ctx, quarter, code_version, gold_started, report.silver, None, silver_gates + gate_refs(ctx.gates[before:]), error)
            raise
    report.seconds["gold"] = time.monotonic() - t1
    for result in built:
        result.stale_reason = stale[result.quarter]
        with job_description(spark, f"record {result.quarter}"):
            failure = failures.get(result.quarter)
            row = record(
                spark, settings, ctx, result.quarter, code_version, gold_started, report.silver, None if failure else result,
                silver_gates + result.gate_refs, failure,
            )  # fmt: skip
        result.build_id, result.mlflow_run_id = row["build_id"], row["mlflow_run_id"]
    report.seconds["record"] = time.monotonic() - t1 - report.seconds["gold"]
    by_quarter = {r.quarter: r for r in [*built, *skipped.values()]}
    for quarter in sorted(by_quarter):
        report.gold.append(by_quarter[quarter])
        if on_gold is not None:
            on_gold(by_quarter[quarter])
    for quarter, failure in failures.items():
        if quarter not in own:
            log.error("gold %s: blocked by its gates (recorded as a FAILED build): %s", quarter, failure)
    mine = [failure for quarter, failure in failures.items() if quarter in own]
    if mine:
        raise mine[0]
    return report
