"""Delta I/O through the registry: create, read, append, MERGE, replace a partition, versions.

Every write here is safe to repeat: MERGE on the table's keys, replace exactly the partition a
run owns, or an append whose caller records what it appended (bronze's ingest log).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, DataFrameWriter, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from lakehouse import audit, contracts, storage
from lakehouse.contracts import PHYSICAL, Col
from lakehouse.settings import Settings
from lakehouse.spark import local_frame, session_conf
from lakehouse.tables import Table


def retention_properties(hours: float) -> dict[str, str]:
    """How long Delta keeps old log entries and removed files (time travel reaches back this far)."""
    interval = f"interval {round(hours)} hours"
    return {"delta.logRetentionDuration": interval, "delta.deletedFileRetentionDuration": interval}


#: Delta refuses VACUUM below a week unless its retention check is off; a shorter retention asked for is deliberate.
VACUUM_CHECK_HOURS = 168


def vacuum(spark: SparkSession, location: str, retain_hours: float) -> None:
    """VACUUM the table, keeping the files older versions within `retain_hours` need; logged, so the VACUUM is a commit of its own."""
    with (
        session_conf(spark, "spark.databricks.delta.vacuum.logging.enabled", "true"),
        session_conf(spark, "spark.databricks.delta.retentionDurationCheck.enabled", "false") if retain_hours < VACUUM_CHECK_HOURS else nullcontext(),
    ):
        spark.sql(f"VACUUM delta.`{location}` RETAIN {retain_hours:.3f} HOURS")


def first(df: DataFrame) -> Row:
    """The first row of a frame that always has one (a history, an aggregate)."""
    row = df.first()
    if row is None:
        raise LookupError("expected a row, found none")
    return row


def exists(spark: SparkSession, location: str) -> bool:
    return DeltaTable.isDeltaTable(spark, location)


def ensure_table(spark: SparkSession, settings: Settings, table: Table, location: str | None = None) -> DeltaTable:
    """Create the table from its registry entry (schema, partitioning, properties, constraints) if absent, in one commit.

    An existing table gets the nullable columns its registry entry added since (one ALTER TABLE
    commit; its rows read them as null), the one change every reader and writer survives; any other
    change of a table's definition is an explicit migration.
    """
    location = location or table.location(settings)
    if exists(spark, location):
        existing = DeltaTable.forPath(spark, location)
        stored = existing.toDF().schema
        _check_contract(existing, table, stored)
        have = set(stored.fieldNames())
        added = [f for f in table.schema.fields if f.name not in have and f.nullable]
        if added:
            columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()} COMMENT '{(f.metadata.get('comment') or '').replace(chr(39), '')}'" for f in added)
            spark.sql(f"ALTER TABLE delta.`{location}` ADD COLUMNS ({columns})")
        return existing
    builder = DeltaTable.createIfNotExists(spark).location(location).comment(table.description)
    for field in table.schema.fields:
        builder = builder.addColumn(field.name, field.dataType, nullable=field.nullable, comment=field.metadata.get("comment"))
    if table.partition_by:
        builder = builder.partitionedBy(*table.partition_by)
    for key, value in {**table.table_properties(), **retention_properties(table.retention_hours(settings))}.items():
        builder = builder.property(key, value)
    return builder.execute()


def _check_contract(existing: DeltaTable, table: Table, stored: StructType) -> None:
    """Refuse a contract that drops or retypes a column of the stored table (`lakehouse.contracts`).

    The stored schema is at hand (no Spark job); the table's contract version is read only when a
    column changed, to say whether the contract's version allows it (then the table needs migrating).
    """
    columns = [Col(f.name, PHYSICAL.get(f.dataType.simpleString(), f.dataType.simpleString().upper())) for f in stored.fields]
    changes = contracts.breaking_changes(columns, table.columns)
    if not changes:
        return
    version = existing.detail().select("properties").first()[0].get(contracts.CONTRACT_VERSION, "1.0.0")  # type: ignore[index]
    was = dataclasses.replace(table, columns=tuple(columns), version=version)
    contracts.check_evolution(was, table, "the stored table's contract")
    raise contracts.ContractError(
        f"{table.name} was written under contract {version}; contract {table.version} {'; '.join(changes)}: "
        "migrate the table (rewrite it under the new contract) before a job writes to it"
    )


def read(spark: SparkSession, location: str, version: int | None = None) -> DataFrame:
    """The table as of `version` (latest when None)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(location)


def current(spark: SparkSession, settings: Settings, table: Table, version: int | None = None) -> DataFrame:
    """A table's rows (as of `version`, else the latest), or an empty frame of its schema when it does not exist yet."""
    location = table.location(settings)
    if exists(spark, location):
        return read(spark, location, version)
    return local_frame(spark, [], table.schema)


def key_values(spark: SparkSession, settings: Settings, table: Table, column: str, alias: str, role: str = "transform") -> DataFrame:
    """The distinct non-null values of one column of a small table (a dimension's keys), as a one-column frame `alias`.

    Read with delta-rs into a local relation: no Spark job and no replay of the table's log in the
    JVM, which cost a lookup about a second of fixed cost per table.
    """
    from lakehouse import inspect

    dt = inspect.open_table(settings, table, role)
    values = [] if dt is None else inspect.arrow_dataset(settings, dt, role).to_table(columns=[column]).column(column).drop_null().unique().to_pylist()
    return local_frame(spark, [(v,) for v in sorted(values)], f"{alias} STRING")


def latest_version(spark: SparkSession, location: str) -> int:
    """The table's current Delta version."""
    return int(first(DeltaTable.forPath(spark, location).history(1).select("version"))[0])


def versions_tagged(spark: SparkSession, location: str) -> dict[str, int]:
    """tag -> version of every commit in the table's history that carries a tag (the first, if several do)."""
    rows = DeltaTable.forPath(spark, location).history().where(F.col("userMetadata").isNotNull()).select("userMetadata", "version").collect()
    found = ((audit.decode(r["userMetadata"]).get("tag"), int(r["version"])) for r in rows)
    return {tag: version for tag, version in found if tag is not None}


def last_operation_metrics(spark: SparkSession, location: str) -> tuple[int, Mapping[str, str]]:
    """(version, operationMetrics) of the table's latest commit, which must be this writer's (`audit.check_ours`)."""
    row = first(DeltaTable.forPath(spark, location).history(1).select("version", "operationMetrics", "userMetadata"))
    audit.check_ours(location, int(row["version"]), row["userMetadata"])
    return int(row["version"]), dict(row["operationMetrics"] or {})


def append(df: DataFrame, location: str, tag: str | None = None) -> int:
    """Append rows in one commit; return the version written (checked to be this writer's)."""
    insert(df, location, tag)
    return last_operation_metrics(df.sparkSession, location)[0]


def insert(df: DataFrame, location: str, tag: str | None = None) -> None:
    """Append rows in one commit, without looking up the version written (one Spark job fewer); `tag` marks the commit for `versions_tagged`."""
    _tagged(df.write.format("delta").mode("append"), tag).save(location)


def replace_where(df: DataFrame, location: str, predicate: str, tag: str | None = None) -> None:
    """Atomically replace the rows matching `predicate` (e.g. one quarter) with `df`, in one commit.

    The caller that needs the version written reads it from the log (`lakehouse.inspect.written_version`):
    asking Spark for the table's history is one more job per write.
    """
    _tagged(df.write.format("delta").mode("overwrite").option("replaceWhere", predicate), tag).save(location)


def _tagged(writer: DataFrameWriter, tag: str | None) -> DataFrameWriter:
    """The writer, its commit carrying `tag` beside the session's audit stamp when one is given."""
    return writer if tag is None else writer.option("userMetadata", audit.encode(audit.active(), tag))


def merge_upsert(
    spark: SparkSession,
    source: DataFrame,
    location: str,
    keys: Iterable[str],
    prune: Mapping[str, Iterable[str]] | None = None,
    compare: Iterable[str] | None = None,
    delete_scope: str | None = None,
    tag: str | None = None,
) -> tuple[int, Mapping[str, str]]:
    """MERGE `source` into the table on `keys`: update changed rows, insert new ones, in one commit.

    `prune` adds `target.col IN (...)` to the join so that only the partitions the batch touches are
    read and rewritten; `compare` limits updates to rows whose values differ, so a rerun rewrites
    nothing; `delete_scope` (a condition on `t`) deletes the target rows in scope that the source
    lacks. Those rows are found first (an anti-join within the pruned partitions) and joined to the
    source marked for deletion: Delta rewrites every file of the table for a WHEN NOT MATCHED BY
    SOURCE clause, whatever its condition (a one-row correction rewrote all 3.3M silver flights).
    Returns the version written and Delta's operation metrics.
    """
    keys = list(keys)
    condition = [f"t.`{k}` <=> s.`{k}`" for k in keys]
    partitions = []
    for column, wanted in (prune or {}).items():
        listed = ", ".join("'" + str(v).replace("'", "''") + "'" for v in sorted(set(wanted)))
        partitions.append(f"t.`{column}` IN ({listed})" if listed else "false")
    condition += partitions
    changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in (compare or []))
    columns = list(source.columns)
    if delete_scope:
        scope = " AND ".join([*partitions, f"({delete_scope})"])
        gone = read(spark, location).alias("t").where(F.expr(scope)).select(*columns).join(source.select(*keys), keys, "left_anti")
        source = source.withColumn("_delete", F.lit(False)).unionByName(gone.withColumn("_delete", F.lit(True)))
    merge = DeltaTable.forPath(spark, location).alias("t").merge(source.alias("s"), " AND ".join(condition))
    assignments: dict[str, str | Column] = {c: f"s.`{c}`" for c in columns}
    if delete_scope:
        merge = merge.whenMatchedDelete(condition="s._delete")
        merge = merge.whenMatchedUpdate(condition=f"NOT s._delete AND ({changed})" if changed else "NOT s._delete", set=assignments)
        merge = merge.whenNotMatchedInsert(condition="NOT s._delete", values=assignments)
    else:
        merge = merge.whenMatchedUpdate(condition=changed or None, set=assignments).whenNotMatchedInsert(values=assignments)
    with audit.tagged(spark, tag) if tag is not None else nullcontext():
        merge.execute()
    return last_operation_metrics(spark, location)


# ---------------------------------------------------------------- what commits changed (from the log itself)


def commit_actions(settings: Settings, table: Table, after: int, upto: int, role: str = "transform") -> list[list[dict]] | None:
    """The actions of each commit in versions (after, upto], read from the table's JSON log files.

    None when a commit file is gone (log retention removed it): the caller must then assume that
    anything may have changed.
    """
    s3 = storage.client(settings, role)
    bucket = settings.bucket(table.layer)
    commits = []
    for version in range(after + 1, upto + 1):
        key = f"{table.short_name}/_delta_log/{version:020d}.json"
        try:
            response = s3.get_object(bucket, key)
        except storage.S3Error as error:
            if error.code in storage.NO_SUCH_OBJECT:
                return None
            raise
        try:
            commits.append([json.loads(line) for line in response.read().decode().splitlines() if line.strip()])
        finally:
            response.close()
            response.release_conn()
    return commits


def changed_months(commits: Sequence[Sequence[Mapping]], month_partition: str | None = None, time_column: str | None = None) -> set[str] | None:
    """The months (yyyy-MM) whose rows the commits changed; None when that cannot be told.

    Only actions that change data count (OPTIMIZE's and Z-ordering's rewrites say dataChange=false).
    A partitioned table names the month in `month_partition`; an unpartitioned one bounds each added
    file by the min/max statistics of `time_column`. A removed file of an unpartitioned table tells
    nothing about which of its rows went: a commit that deletes rows (by its operation metrics) or
    only removes files is "cannot be told"; one that rewrites (a MERGE that updates and inserts)
    changed only rows that are in the files it added.
    """
    months: set[str] = set()
    for actions in commits:
        info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        metrics = info.get("operationMetrics") or {}
        deleted = int(metrics.get("numTargetRowsDeleted", 0) or 0) + int(metrics.get("numDeletedRows", 0) or 0)
        adds = [a["add"] for a in actions if "add" in a and a["add"].get("dataChange", True)]
        removes = [a["remove"] for a in actions if "remove" in a and a["remove"].get("dataChange", True)]
        if month_partition is not None:
            for action in (*adds, *removes):
                value = (action.get("partitionValues") or {}).get(month_partition)
                if value is None:
                    return None
                months.add(value)
            continue
        if removes and (not adds or deleted):
            return None  # rows went, and a removed file's log entry does not say from which months
        for action in adds:
            stats = json.loads(action.get("stats") or "{}")
            low, high = (stats.get("minValues") or {}).get(time_column), (stats.get("maxValues") or {}).get(time_column)
            if stats.get("numRecords") == 0:
                continue
            if not low or not high:
                return None
            months |= set(month_span(low[:7], high[:7]))
    return months


def month_span(first: str, last: str) -> list[str]:
    """Every yyyy-MM from `first` to `last`, inclusive."""
    year, month = int(first[:4]), int(first[5:7])
    out = []
    while f"{year:04d}-{month:02d}" <= last:
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out
