"""A build: silver for the new bronze rows, then gold for each quarter, every step behind its gate.

Silver dimensions go first so that the flights gate checks referential integrity against
published dimensions. Gold replaces exactly the quarter's partition of each gold table, so
rebuilding 2001Q1 leaves 2001Q2 untouched.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from gold import airport_daily, route_daily, training_set
from gold.daily import eligible
from lakehouse import conform, delta, digest, faults, quality, quarters, storage
from lakehouse.conform import RunContext, TableResult
from lakehouse.settings import Settings
from lakehouse.spark import job_description
from lakehouse.tables import REGISTRY, AIRPORT_DAILY, BUILDS, INGEST_LOG, PROGRESS, ROUTE_DAILY, SILVER_FLIGHTS, SILVER_WEATHER, TRAINING_SET, Table
from silver import airports, carriers, flights, planes, weather_hourly

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
    seconds: float = 0.0


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


def _stage_and_gate(
    spark: SparkSession, settings: Settings, ctx: RunContext, table: Table, df: DataFrame, quarter: str, checks: list[quality.Check], result: GoldResult
) -> DataFrame:
    """Write one gold table's quarter where no reader looks, and audit it; return the staged rows (cached)."""
    staging = table.staging_location(settings, f"{ctx.run_id}/{quarter}")
    delta.overwrite(df, staging)
    staged = delta.read(spark, staging).persist(StorageLevel.MEMORY_AND_DISK)
    suite = f"gold.{table.short_name}.{quarter}"
    try:
        quality.gate(settings, ctx.run_id, staged, suite, checks, ctx.gates)
    except Exception:
        staged.unpersist()
        raise
    result.gates.append(suite)
    return staged


def _publish_quarter(spark: SparkSession, settings: Settings, ctx: RunContext, staged: dict[str, DataFrame], quarter: str, result: GoldResult) -> None:
    """Replace the quarter's partition of each gold table with its audited staged rows."""
    for name, rows in staged.items():
        table = REGISTRY[name]
        delta.ensure_table(spark, settings, table)
        result.versions[name] = delta.replace_where(rows, table.location(settings), f"quarter = '{quarter}'", user_metadata=ctx.run_id)
        result.rows[name] = rows.count()


def run_gold(spark: SparkSession, settings: Settings, quarter: str, ctx: RunContext, reads: Mapping[str, int] | None = None) -> GoldResult:
    """Build route_daily, airport_daily and the training set of one quarter; publish all three only when all gates pass.

    `reads` are the table versions to record as read, when the caller has just looked them up.
    """
    t0 = time.monotonic()
    result = GoldResult(quarter)
    start, end = quarters.parse(quarter)
    lookback = start - timedelta(days=LOOKBACK_DAYS)
    # the latest versions, recorded as read: one writer at a time, so nothing commits in between (a
    # versionAsOf read of them would be refused once their commit is older than the file retention)
    result.read_versions = dict(reads) if reads is not None else read_versions(spark, settings)
    silver_flights = delta.read(spark, SILVER_FLIGHTS.location(settings)).where(
        F.col("flight_month").isin(*_month_range(lookback, end)) & (F.col("flight_date") >= F.lit(lookback)) & (F.col("flight_date") < F.lit(end))
    )
    weather = conform.current(spark, settings, SILVER_WEATHER).where(
        (F.col("obs_local_ts") >= F.lit(start)) & (F.col("obs_local_ts") < F.lit(end + timedelta(days=1)))
    )
    in_quarter = (F.col("flight_date") >= F.lit(start)) & (F.col("flight_date") < F.lit(end))
    result.eligible_rows = eligible(silver_flights).where(in_quarter).count()
    routes = route_daily.build_route_daily(silver_flights).persist(StorageLevel.MEMORY_AND_DISK)
    origins = airport_daily.build_airport_daily(silver_flights).persist(StorageLevel.MEMORY_AND_DISK)
    staged: dict[str, DataFrame] = {}
    try:
        of_quarter = F.col("quarter") == quarter
        staged[ROUTE_DAILY.name] = _stage_and_gate(
            spark, settings, ctx, ROUTE_DAILY, routes.where(of_quarter), quarter, route_daily.checks(quarter, result.eligible_rows), result
        )
        staged[AIRPORT_DAILY.name] = _stage_and_gate(
            spark, settings, ctx, AIRPORT_DAILY, origins.where(of_quarter), quarter, airport_daily.checks(quarter, result.eligible_rows), result
        )
        rows = training_set.build_training_set(silver_flights, routes, origins, weather, quarter, start, end)
        staged[TRAINING_SET.name] = _stage_and_gate(
            spark, settings, ctx, TRAINING_SET, rows, quarter, training_set.checks(quarter, result.eligible_rows, ctx.config), result
        )
        _publish_quarter(spark, settings, ctx, staged, quarter, result)
        faults.checkpoint(settings, "gold.after_publish")
    finally:
        for frame in (routes, origins, *staged.values()):
            frame.unpersist()
        for table in (ROUTE_DAILY, AIRPORT_DAILY, TRAINING_SET):
            storage.remove_prefix(settings, "transform", "quality", f"staging/{table.name}/{ctx.run_id}/{quarter}/")
    published = delta.read(spark, TRAINING_SET.location(settings), result.versions[TRAINING_SET.name]).where(F.col("quarter") == quarter)
    result.digest = digest.spark_digest(published)
    result.seconds = time.monotonic() - t0
    return result


def read_versions(spark: SparkSession, settings: Settings) -> dict[str, int]:
    """The versions a gold build reads (silver flights and weather) and the bronze versions behind them."""
    versions = {t.name: delta.latest_version(spark, t.location(settings)) for t in (SILVER_FLIGHTS, SILVER_WEATHER) if delta.exists(spark, t.location(settings))}
    progress = conform.current(spark, settings, PROGRESS).where(F.col("consumer").isin(SILVER_FLIGHTS.name, SILVER_WEATHER.name))
    for row in progress.collect():
        versions[row["source_table"]] = int(row["last_version"])
    return versions


def config_digest(config: Mapping[str, Any]) -> str:
    """A short digest of the rule and gate thresholds a build ran with."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def previous_builds(spark: SparkSession, settings: Settings) -> list[dict[str, Any]]:
    """Every recorded build, oldest first."""
    return [r.asDict(recursive=True) for r in conform.current(spark, settings, BUILDS).orderBy("ended_at").collect()]


def up_to_date(previous: list[dict[str, Any]], quarter: str, reads: Mapping[str, int], code_version: str, config: str) -> str | None:
    """The id of a succeeded build of `quarter` from the same inputs, code and configuration, if any."""
    for row in reversed(previous):
        if row["quarter"] == quarter and row["status"] == "SUCCEEDED":
            same = dict(row["tables_read"]) == dict(reads) and row["code_version"] == code_version and row["config_digest"] == config
            return row["build_id"] if same else None
    return None


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
    build_id = _build_id(previous_builds(spark, settings), f"{ctx.run_id}-{quarter}", status, dict(gold.versions) if gold is not None else {})
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


def gold_step(spark: SparkSession, settings: Settings, quarter: str, ctx: RunContext, code_version: str, force: bool = False) -> GoldResult:
    """Gold for one quarter, unless its last succeeded build read the same inputs with the same code and config."""
    reads = read_versions(spark, settings)
    if not force:
        same_as = up_to_date(previous_builds(spark, settings), quarter, reads, code_version, config_digest(ctx.config))
        if same_as is not None:
            return GoldResult(quarter, read_versions=reads, skipped_as=same_as)
    return run_gold(spark, settings, quarter, ctx, reads)


def build(
    spark: SparkSession,
    settings: Settings,
    wanted: list[str],
    ctx: RunContext,
    code_version: str,
    on_silver: Callable[[TableResult], None] | None = None,
    on_gold: Callable[[GoldResult], None] | None = None,
    force: bool = False,
) -> BuildReport:
    """Silver for the new bronze rows, then gold for each wanted quarter; every build is recorded.

    A quarter whose last succeeded build read the same table versions with the same code and
    configuration is skipped (it would produce the same training set), unless `force`.
    Each failure is recorded as a FAILED build (manifest row and MLflow run) and raised.
    """
    report = BuildReport(ctx.run_id)
    t0 = time.monotonic()
    started = ctx.started_at.replace(tzinfo=None)
    try:
        report.silver = run_silver(spark, settings, ctx, on_silver)
    except Exception as error:
        for quarter in wanted:
            record(spark, settings, ctx, quarter, code_version, started, report.silver, None, gate_refs(ctx.gates), error)
        raise
    report.seconds["silver"] = time.monotonic() - t0
    silver_gates = gate_refs(ctx.gates)
    for quarter in wanted:
        t1 = time.monotonic()
        before = len(ctx.gates)
        quarter_started = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
        try:
            with job_description(spark, f"gold {quarter}"):
                result = gold_step(spark, settings, quarter, ctx, code_version, force)
        except Exception as error:
            record(spark, settings, ctx, quarter, code_version, quarter_started, report.silver, None, silver_gates + gate_refs(ctx.gates[before:]), error)
            raise
        if result.skipped_as is None:
            with job_description(spark, f"record {quarter}"):
                row = record(spark, settings, ctx, quarter, code_version, quarter_started, report.silver, result, silver_gates + gate_refs(ctx.gates[before:]), None)
            result.build_id, result.mlflow_run_id = row["build_id"], row["mlflow_run_id"]
        report.gold.append(result)
        report.seconds[f"gold {quarter}"] = time.monotonic() - t1
        if on_gold is not None:
            on_gold(result)
    return report
