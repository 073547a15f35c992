"""`lakehouse maintain`: compaction and VACUUM that never destroy a recorded training set.

- Retention is deliberate: every table carries `delta.logRetentionDuration` and
  `delta.deletedFileRetentionDuration` (default 200 days, two quarters plus a margin;
  LAKEHOUSE_RETENTION_DAYS).
- OPTIMIZE compacts small files; silver.flights is also Z-ordered by the columns the gold builds
  filter on within a month (flight_date, origin), in only the months that hold more than one file:
  Z-ordering rewrites every file it is given, so a second run rewrites nothing.
- VACUUM keeps every file that a succeeded build in `gold._builds` still needs: for each table a
  build wrote, the retention is stretched to reach back to the oldest such build's version plus
  another full retention window (the log retention with it, so the version stays reconstructable
  until the next run extends it again), and the report names the build that forced it. Silver and
  bronze versions that builds read are lineage: they stay readable for the retention window.
  Run maintenance at least once per retention window (the quarterly DAG runs it every quarter).

A table whose last commit is the previous run's (logged) VACUUM, less than a day old, is skipped:
maintenance follows the writes, so running it after every build costs little.

Run it with no writer active: Delta on S3 allows one writer per table at a time.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse import delivery, delta, inspect, storage
from lakehouse.settings import Settings
from lakehouse.spark import bucket_roles
from lakehouse.tables import ALL_TABLES, BUILDS, Table

ZORDER = {"silver.flights": ("flight_date", "origin")}

#: Maintenance rewrites every layer: bronze as its owner (ingest), silver and gold as transform.
ROLES = ("ingest", "transform")

#: Delta refuses VACUUM below a week unless this check is off; a shorter configured retention is deliberate.
_SAFETY_HOURS = 168
_MARGIN_HOURS = 1.0
_FRESH = timedelta(hours=24)


@dataclass
class TableMaintenance:
    table: str
    files_before: int = 0
    bytes_before: int = 0
    files_after: int = 0
    bytes_after: int = 0
    retain_hours: float = 0.0
    kept_for: list[str] = field(default_factory=list)
    skipped: bool = False  # nothing written since its last maintenance
    seconds: float = 0.0


def usage(settings: Settings, table: Table) -> tuple[int, int]:
    """Data files and their bytes under a table's location (the Delta log excluded)."""
    bucket, _, prefix = table.location(settings).removeprefix("s3a://").partition("/")
    s3 = storage.client(settings, bucket_roles(ROLES)[table.layer])
    files = [o for o in storage.list_objects(s3, bucket, prefix + "/") if "/_delta_log/" not in o.key]
    return len(files), sum(o.size for o in files)


def fragmented(settings: Settings, table: Table) -> list[dict[str, str]]:
    """Partition values of the partitions that hold more than one data file (from the Delta log)."""
    dt = inspect.open_table(settings, table, bucket_roles(ROLES)[table.layer])
    if dt is None or not table.partition_by:
        return []
    actions = pa.table(dt.get_add_actions(flatten=True)).select([f"partition.{c}" for c in table.partition_by]).to_pylist()
    counts = Counter(tuple(str(a[f"partition.{c}"]) for c in table.partition_by) for a in actions)
    return [dict(zip(table.partition_by, values)) for values, n in sorted(counts.items()) if n > 1]


def optimize_statement(location: str, zorder: tuple[str, ...] | None, partitions: list[dict[str, str]] | None) -> str | None:
    """OPTIMIZE, Z-ordered over only the fragmented partitions (Z-ordering rewrites every file it is given).

    None when a Z-ordered table has no fragmented partition: a partition of one file is compact already.
    """
    if not zorder:
        return f"OPTIMIZE delta.`{location}`"
    if not partitions:
        return None
    where = " OR ".join("(" + " AND ".join(f"`{k}` = '{v}'" for k, v in p.items()) + ")" for p in partitions)
    return f"OPTIMIZE delta.`{location}` WHERE {where} ZORDER BY ({', '.join(zorder)})"


def pinned(settings: Settings) -> dict[str, tuple[int, str]]:
    """table -> (oldest version any succeeded build wrote, that build's id)."""
    found: dict[str, tuple[int, str]] = {}
    for row in delivery.builds(settings, bucket_roles(ROLES)[BUILDS.layer]):
        if row["status"] != "SUCCEEDED":
            continue
        for name, version in row["tables_written"].items():
            if name not in found or version < found[name][0]:
                found[name] = (int(version), row["build_id"])
    return found


def hours_to_keep(spark: SparkSession, location: str, version: int, now: datetime, window_hours: float) -> float:
    """Retention that keeps every file and log entry of `version` for another `window_hours` from now.

    The files of `version` are removed from the table by the commit after it, so retention must
    reach back to that commit; the extra window keeps them safe until the next maintenance run
    (which extends it again). 0 when `version` is current: nothing of it has been removed yet.
    """
    history = DeltaTable.forPath(spark, location).history().where(F.col("version") == version + 1).select("timestamp").collect()
    if not history:
        return 0.0
    return max((now - history[0]["timestamp"]).total_seconds() / 3600, 0.0) + window_hours + _MARGIN_HOURS


def _set_retention(spark: SparkSession, location: str, hours: float) -> bool:
    """Set the log and deleted-file retention, committing only when it changes; True when it did."""
    wanted = delta.retention_properties(hours)
    current = delta.first(DeltaTable.forPath(spark, location).detail().select("properties"))["properties"] or {}
    if all(current.get(k) == v for k, v in wanted.items()):
        return False
    listed = ", ".join(f"'{k}' = '{v}'" for k, v in wanted.items())
    spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ({listed})")
    return True


def maintained_since_last_write(spark: SparkSession, location: str, now: datetime) -> bool:
    """The table's last commit is a VACUUM of ours, from less than a day ago: nothing to compact or remove."""
    last = delta.first(DeltaTable.forPath(spark, location).history(1).select("operation", "timestamp"))
    return last["operation"] == "VACUUM END" and now - last["timestamp"] < _FRESH


def maintain_table(spark: SparkSession, settings: Settings, table: Table, pins: dict[str, tuple[int, str]], now: datetime) -> TableMaintenance:
    """OPTIMIZE one table, then VACUUM it with a retention that spares every pinned version."""
    t0 = time.monotonic()
    report = TableMaintenance(table.name)
    location = table.location(settings)
    report.files_before, report.bytes_before = usage(settings, table)
    configured = settings.retention_days * 24
    report.retain_hours = configured
    if table.name in pins:
        version, build_id = pins[table.name]
        needed = hours_to_keep(spark, location, version, now, configured)
        if needed > configured:
            report.retain_hours = needed
            report.kept_for.append(f"{build_id} ({table.name} v{version})")
    if not _set_retention(spark, location, report.retain_hours) and maintained_since_last_write(spark, location, now):
        report.skipped = True
        report.files_after, report.bytes_after = report.files_before, report.bytes_before
        report.seconds = time.monotonic() - t0
        return report
    zorder = ZORDER.get(table.name)
    statement = optimize_statement(location, zorder, fragmented(settings, table) if zorder else None)
    if statement is not None:
        spark.sql(statement)
    check = "spark.databricks.delta.retentionDurationCheck.enabled"
    previous = spark.conf.get(check, "true") or "true"
    try:
        if report.retain_hours < _SAFETY_HOURS:
            spark.conf.set(check, "false")
        # logged VACUUMs are commits: the next run sees that nothing was written since
        spark.conf.set("spark.databricks.delta.vacuum.logging.enabled", "true")
        spark.sql(f"VACUUM delta.`{location}` RETAIN {report.retain_hours:.3f} HOURS")
    finally:
        spark.conf.set(check, previous)
    report.files_after, report.bytes_after = usage(settings, table)
    report.seconds = time.monotonic() - t0
    return report


def run(
    spark: SparkSession,
    settings: Settings,
    now: datetime,
    tables: Iterable[Table] = ALL_TABLES,
    on_table: Callable[[TableMaintenance], None] | None = None,
) -> list[TableMaintenance]:
    """Optimize and vacuum every existing table, keeping what recorded builds need."""
    pins = pinned(settings)
    reports = []
    for table in tables:
        if not delta.exists(spark, table.location(settings)):
            continue
        report = maintain_table(spark, settings, table, pins, now)
        reports.append(report)
        if on_table is not None:
            on_table(report)
    return reports
