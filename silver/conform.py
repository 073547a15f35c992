"""Bronze -> silver, the shared mechanics: incremental input, fates, write-audit-publish.

A silver table module declares a SilverSpec (its pure `prepare` function per bronze source, its
rules section, how conflicts are resolved, its gate) and calls `run_table`:

1. read only the bronze rows not yet processed: the Delta change feed of each bronze table since
   the version recorded in `silver._progress` (or, for `replay`, the quarantined rows);
2. prepare (type, conform, check rules) and give every row a fate (see `lakehouse.rules`);
3. gate `bronze_to_silver.<table>`: every input row has a fate, the quarantine share is in bounds;
4. gate `silver.<table>` on the rows to publish, in memory (a filter of the cached fated rows);
5. publish: MERGE into the table (one commit; a plain append into partitions that hold no rows
   yet), MERGE the quarantined rows into `silver._quarantine` (likewise), record the bronze
   versions read. Each step is idempotent, so a crash
   between them is repaired by running again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lakehouse import delta, faults, inspect, pii, quality
from lakehouse.quarters import object_month
from lakehouse.runs import RunContext
from lakehouse.settings import Settings
from lakehouse.spark import adaptive_for, local_frame
from lakehouse.tables import PII_STORED_AS, PROGRESS, QUARANTINE, REGISTRY, Table
from silver.rules import FATES, assign_fates, mark_superseded

log = logging.getLogger(__name__)

_LINEAGE = ("_ingest_run_id", "_source_object")


@dataclass(frozen=True)
class SilverSpec:
    """How one silver table is conformed from its bronze sources."""

    table: Table
    prepare: Mapping[str, Callable[[DataFrame, Mapping[str, Any]], DataFrame]]
    rule_section: str
    prefer: Callable[[], list[Column]]
    checks: Callable[[Mapping[str, Any], int], list[quality.Check]]
    gate_frame: Callable[[SparkSession, Settings, DataFrame], DataFrame] | None = None
    snapshot: bool = False  # sources deliver whole snapshots: conform the latest one of each
    combine: Callable[[DataFrame, SilverSpec], DataFrame] | None = None  # fold rows sharing a key
    replace_deliveries: bool = False  # a re-delivered object replaces its previous rows

    @property
    def data_columns(self) -> list[str]:
        return [c for c in self.table.column_names if c not in _LINEAGE]


@dataclass
class TableResult:
    table: str
    input_rows: int = 0
    fates: dict[str, int] = field(default_factory=dict)
    quarantined_by_rule: dict[str, int] = field(default_factory=dict)
    merge: dict[str, int] = field(default_factory=dict)
    version: int | None = None
    source_versions: dict[str, int] = field(default_factory=dict)
    gates: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: bool = False

    @property
    def balanced(self) -> bool:
        return self.input_rows == sum(self.fates.values())


def bookkeeping(bronze: DataFrame) -> list[Column]:
    """The columns `prepare` must carry through: lineage, fates' inputs and the raw bronze row."""
    raw = [c for c in bronze.columns if not c.startswith("_") or c in _BRONZE_RAW]
    return [
        *[F.col(c) for c in _LINEAGE],
        F.col("_source_etag"),
        F.col("_ingested_at"),
        F.col("_row_number"),
        F.col("_bronze_table"),
        F.col("_superseded"),
        F.col("_failed_rules"),
        # only a row that breaks a rule is quarantined, and only its raw row is ever kept: the
        # others carry a null through the fates' shuffle instead of a JSON copy of every field
        F.when(F.size("_failed_rules") > 0, F.to_json(F.struct(*[F.col(c) for c in raw]))).alias("_raw_row"),
    ]


_BRONZE_RAW = (
    "_is_malformed", "_malformed_reason", "_raw_line", "_raw_bytes", "_ingest_run_id", "_source_object",
    "_source_etag", "_source_system", "_ingested_at", "_ingest_date", "_row_number",
)  # fmt: skip


# ---------------------------------------------------------------- inputs


def _progress(settings: Settings, consumer: str) -> dict[str, int]:
    """Bronze table -> the last version `consumer` processed (read with delta-rs: no Spark job)."""
    return {source: version for (reader, source), version in inspect.progress(settings).items() if reader == consumer}


def _changes(spark: SparkSession, location: str, after: int, upto: int) -> DataFrame:
    """Rows appended to a bronze table in versions (after, upto], from its change data feed."""
    return (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", after + 1)
        .option("endingVersion", upto)
        .load(location)
        .where(F.col("_change_type") == "insert")
        .drop("_change_type", "_commit_version", "_commit_timestamp")
    )


def latest_etags(logged: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """object key -> etag of its newest ingested delivery, from a feed's ingest log rows.

    Newest by the bronze commit that brought it: versions only grow, where two ingests may log the
    same time.
    """
    newest: dict[str, Mapping[str, Any]] = {}
    for row in logged:
        seen = newest.get(row["object_key"])
        if seen is None or (row["bronze_version"] or -1, row["logged_at"]) > (seen["bronze_version"] or -1, seen["logged_at"]):
            newest[row["object_key"]] = row
    return {key: row["etag"] for key, row in newest.items()}


def latest_deliveries(spark: SparkSession, settings: Settings, bronze: Table) -> DataFrame:
    """`_source_object` -> `_latest_etag`: the newest ingested delivery of each of a feed's objects.

    Built from the ingest log read with delta-rs (a few hundred rows): a local relation, no scan job.
    """
    latest = sorted(latest_etags(inspect.ingested(settings, bronze.name)).items())
    return local_frame(spark, latest, "_source_object STRING, _latest_etag STRING")


def logged_rows(logged: Sequence[Mapping[str, Any]], after: int, upto: int) -> int:
    """Rows that ingest logged as appended to a bronze table in versions (after, upto], from its ingest log rows (no re-read of bronze)."""
    return sum(int(r["rows"] or 0) for r in logged if r["bronze_version"] is not None and after < r["bronze_version"] <= upto)


def new_inputs(spark: SparkSession, settings: Settings, spec: SilverSpec) -> tuple[dict[str, DataFrame], dict[str, int], dict[str, int]]:
    """The unprocessed bronze rows of each source, the bronze version read up to, and the rows expected.

    The expected rows of a change-feed range come from the ingest log, so the accounting gate
    compares what silver read with what ingest wrote, without reading bronze a second time. A
    dimension's unchanged snapshot has no expected count (the caller counts it).
    """
    done = _progress(settings, spec.table.name)
    inputs, versions, expected = {}, {}, {}
    for name in spec.prepare:
        upto = inspect.version(settings, REGISTRY[name])
        if upto is None:
            continue
        after = done.get(name, -1)
        versions[name] = upto
        if upto > after:
            inputs[name] = _changes(spark, REGISTRY[name].location(settings), after, upto)
            expected[name] = logged_rows(inspect.ingested(settings, name), after, upto)
    if spec.snapshot and inputs:
        # a dimension merges the latest snapshot of every source, changed or not
        for name in spec.prepare:
            if name not in inputs and name in versions:
                latest = latest_deliveries(spark, settings, REGISTRY[name])
                bronze = delta.read(spark, REGISTRY[name].location(settings), versions[name])
                inputs[name] = bronze.join(F.broadcast(latest.withColumnRenamed("_latest_etag", "_source_etag")), ["_source_object", "_source_etag"]).select(*bronze.columns)
    return inputs, versions, expected


def replay_inputs(spark: SparkSession, settings: Settings, spec: SilverSpec, rules: Sequence[str] | None = None) -> dict[str, DataFrame]:
    """The unresolved quarantined rows of a table, rebuilt as bronze rows of their bronze tables."""
    quarantined = delta.current(spark, settings, QUARANTINE).where((F.col("table_name") == spec.table.name) & F.col("resolved_at").isNull())
    if rules:
        quarantined = quarantined.where(F.col("rule_id").isin(*rules))
    inputs = {}
    for name in spec.prepare:
        bronze = REGISTRY[name]
        rows = quarantined.where(F.col("bronze_table") == name).select(F.from_json("raw_row", bronze.schema).alias("r")).select("r.*")
        inputs[name] = rows
    return inputs


# ---------------------------------------------------------------- fates


def prepare(spark: SparkSession, settings: Settings, spec: SilverSpec, inputs: Mapping[str, DataFrame], cfg: Mapping[str, Any]) -> DataFrame:
    """Every input row, prepared and checked, with its fate."""
    frames = []
    for name, bronze in inputs.items():
        marked = bronze.withColumn("_bronze_table", F.lit(name))
        marked = mark_superseded(marked, latest_deliveries(spark, settings, REGISTRY[name]))
        prepared = spec.prepare[name](marked, cfg)
        if spec.table.pseudonymised and REGISTRY[name].pii:  # the source delivers personal data: silver keeps pseudonyms
            prepared = prepared.withColumns({c: pii.pseudonym(F.col(c), pii.key(settings)) for c in spec.table.pseudonymised})
        frames.append(prepared)
    union = reduce(lambda a, b: a.unionByName(b), frames)
    prefer = [F.col("_ingested_at").desc(), *spec.prefer()]
    fated = assign_fates(union, spec.table.keys, spec.data_columns, prefer)
    if spec.combine is not None:
        fated = spec.combine(fated, spec)
    return fated


def combine_rows(fated: DataFrame, spec: SilverSpec) -> DataFrame:
    """Fill each kept row's missing values from the other live rows of its key, in preference order."""
    live = F.col("_fate").isin("staged", "duplicate", "conflict")
    window = (
        Window.partitionBy(F.when(live, F.lit(1)), *spec.table.keys)
        .orderBy(F.col("_fate") != "staged", F.col("_ingested_at").desc(), *spec.prefer())
        .rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    )
    filled = fated
    for column in spec.data_columns:
        if column in spec.table.keys:
            continue
        filled = filled.withColumn(column, F.when(F.col("_fate") == "staged", F.first(column, ignorenulls=True).over(window)).otherwise(F.col(column)))
    # the other rows of a key were folded into the kept one
    return filled.withColumn("_fate", F.when(F.col("_fate") == "conflict", F.lit("merged")).otherwise(F.col("_fate")))


# ---------------------------------------------------------------- publish


def quarantine_records(fated: DataFrame, table: Table, ctx: RunContext) -> DataFrame:
    """The quarantined rows as `silver._quarantine` records."""
    return fated.where(F.col("_fate") == "quarantined").select(
        F.sha2(F.concat_ws("|", "_bronze_table", "_source_object", "_source_etag", F.col("_row_number").cast("string")), 256).alias("quarantine_id"),
        F.lit(table.name).alias("table_name"),
        F.try_element_at("_failed_rules", F.lit(1)).alias("rule_id"),
        F.col("_failed_rules").alias("failed_rules"),
        F.lit(ctx.run_id).alias("run_id"),
        F.col("_bronze_table").alias("bronze_table"),
        F.col("_source_object").alias("source_object"),
        F.col("_row_number").alias("row_number"),
        F.col("_raw_row").alias("raw_row"),
        F.lit(ctx.started_at).cast("timestamp").alias("quarantined_at"),
        F.lit(None).cast("timestamp").alias("resolved_at"),
        F.lit(None).cast("string").alias("resolved_run_id"),
    )


def _merge_quarantine(spark: SparkSession, settings: Settings, fated: DataFrame, table: Table, ctx: RunContext) -> None:
    """Upsert the newly quarantined rows; on replay, mark the rows that now pass as resolved."""
    from delta.tables import DeltaTable

    location = QUARANTINE.location(settings)
    delta.ensure_table(spark, settings, QUARANTINE)
    records = quarantine_records(fated, table, ctx)
    if not ctx.replay and inspect.rows_in(settings, QUARANTINE, {"table_name": [table.name]}) == 0:
        delta.insert(records, location)  # nothing of this table is quarantined yet: no MERGE needed
        inspect.written_version(settings, QUARANTINE)
        return
    before = inspect.version(settings, QUARANTINE)
    target = DeltaTable.forPath(spark, location).alias("t")
    (
        target.merge(records.alias("s"), "t.quarantine_id = s.quarantine_id AND t.table_name = s.table_name")
        .whenMatchedUpdate(set={"rule_id": "s.rule_id", "failed_rules": "s.failed_rules", "run_id": "s.run_id"})
        .whenNotMatchedInsertAll()
        .execute()
    )
    before = inspect.check_written_since(settings, QUARANTINE, before)  # each commit checked to be this writer's
    if ctx.replay:
        passed = fated.where(F.col("_fate") != "quarantined").select(
            F.sha2(F.concat_ws("|", "_bronze_table", "_source_object", "_source_etag", F.col("_row_number").cast("string")), 256).alias("quarantine_id")
        )
        (
            DeltaTable.forPath(spark, location).alias("t")
            .merge(passed.alias("s"), f"t.quarantine_id = s.quarantine_id AND t.table_name = '{table.name}'")
            .whenMatchedUpdate(set={"resolved_at": F.lit(ctx.started_at).cast("timestamp"), "resolved_run_id": F.lit(ctx.run_id)})
            .execute()
        )  # fmt: skip
        inspect.check_written_since(settings, QUARANTINE, before)


def _record_progress(spark: SparkSession, settings: Settings, consumer: str, versions: Mapping[str, int], ctx: RunContext) -> None:
    """Append the bronze versions read (readers take the largest): one blind append, where a MERGE took a dozen jobs."""
    rows = [(consumer, source, version, ctx.run_id, ctx.started_at) for source, version in versions.items()]
    if not rows:
        return
    delta.ensure_table(spark, settings, PROGRESS)
    delta.insert(local_frame(spark, rows, PROGRESS.schema), PROGRESS.location(settings))
    inspect.written_version(settings, PROGRESS)  # checked to be this writer's


def _publish(
    spark: SparkSession, settings: Settings, spec: SilverSpec, staged: DataFrame, fated: DataFrame, ctx: RunContext, staged_rows: int
) -> tuple[int | None, dict[str, int]]:
    """MERGE the staged rows into the table (and, for re-deliveries, drop the rows they replace).

    Into partitions that hold no rows yet (a first build, a new month) the MERGE could only insert:
    the rows are appended instead, in one commit, without the MERGE's join and second pass over
    its source. A rerun after a crash finds the rows there and MERGEs, which changes nothing.
    """
    table = spec.table
    location = table.location(settings)
    delta.ensure_table(spark, settings, table)
    replaces = spec.replace_deliveries and not ctx.replay
    delete_scope, months = None, set[str]()
    if replaces:
        objects = [r[0] for r in fated.where(F.col("_fate") != "superseded").select("_source_object").distinct().collect()]
        months = {m for m in (object_month(o) for o in objects) if m}
        listed = ", ".join("'" + o.replace("'", "''") + "'" for o in objects)
        delete_scope = f"t._source_object IN ({listed})" if objects else None
    if staged_rows == 0 and delete_scope is None:
        # nothing to insert, update or delete (a replay whose rows all fail still, a batch of
        # duplicates): no commit, so no version of this writer's to check either, and no partition to look up
        return inspect.version(settings, table), {"numTargetRowsInserted": 0, "numTargetRowsUpdated": 0, "numTargetRowsDeleted": 0}
    prune: dict[str, list[str]] = {}
    for column in table.partition_by:
        prune[column] = [r[0] for r in staged.select(column).distinct().collect()]
        if replaces:
            prune[column] = sorted(set(prune[column]) | months)
    if inspect.rows_in(settings, table, prune if table.partition_by else None) == 0:
        delta.insert(staged, location, tag=ctx.run_id)
        return inspect.written_version(settings, table), {"numTargetRowsInserted": staged_rows, "numTargetRowsUpdated": 0, "numTargetRowsDeleted": 0}
    version, metrics = delta.merge_upsert(spark, staged, location, table.keys, prune=prune, compare=spec.data_columns, delete_scope=delete_scope, tag=ctx.run_id)
    return version, {k: int(metrics.get(k, 0)) for k in ("numTargetRowsInserted", "numTargetRowsUpdated", "numTargetRowsDeleted")}


def bronze_to_silver_checks(spec: SilverSpec, input_rows: int, cfg: Mapping[str, Any], replay: bool = False) -> list[quality.Check]:
    """The bronze-to-silver gate on the fated rows: columns present, no row lost, quarantine share bounded.

    A replay re-checks rows that were all quarantined before, so it has no quarantine share to bound.
    """
    max_share = cfg["gates"]["bronze_to_silver"]["max_quarantine_share"]
    checks = [
        *quality.columns_exist(*spec.table.column_names, "_fate"),
        quality.row_count("accounting:every_input_row_has_a_fate", input_rows),
        quality.Check("fates:known", "ExpectColumnValuesToBeInSet", {"column": "_fate", "value_set": [*FATES, "merged"]}),
    ]
    if not replay:
        checks.append(quality.Check("share:quarantined", "ExpectColumnValuesToNotBeInSet", {"column": "_fate", "value_set": ["quarantined"], "mostly": 1 - max_share}))
    return checks


def pseudonymise_stored(spark: SparkSession, settings: Settings, table: Table) -> bool:
    """Rewrite, once, a silver table written before it stored its personal columns as keyed pseudonyms (before 2026-12-07).

    Its rows are rewritten in one commit with every value that is not yet a pseudonym replaced by
    its pseudonym, then the table is marked (`lakehouse.pii_stored_as`); a table so marked, or not
    created yet, costs one look at its log. Older versions keep the values as they were until
    maintenance's VACUUM removes their files.
    """
    if not table.pseudonymised:
        return False
    dt = inspect.open_table(settings, table)
    if dt is None or dt.metadata().configuration.get(PII_STORED_AS) == pii.SCHEME:
        return False
    secret, location = pii.key(settings), table.location(settings)
    stored = delta.read(spark, location)
    keep = {c: F.when(F.col(c).startswith(pii.PREFIX), F.col(c)).otherwise(pii.pseudonym(F.col(c), secret)) for c in table.pseudonymised}
    stored.withColumns(keep).write.format("delta").mode("overwrite").save(location)
    spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ('{PII_STORED_AS}' = '{pii.SCHEME}')")
    log.warning("%s: its personal columns (%s) were stored as delivered; rewritten as keyed pseudonyms", table.name, ", ".join(table.pseudonymised))
    return True


def run_table(spark: SparkSession, settings: Settings, spec: SilverSpec, ctx: RunContext, rules: Sequence[str] | None = None) -> TableResult:
    """Conform, gate and publish one silver table from its unprocessed bronze rows (or its quarantine)."""
    t0 = time.monotonic()
    result = TableResult(spec.table.name)
    if ctx.replay:
        inputs, versions, expected = replay_inputs(spark, settings, spec, rules), dict[str, int](), dict[str, int]()
    else:
        inputs, versions, expected = new_inputs(spark, settings, spec)
    if not inputs:
        result.skipped, result.seconds = True, time.monotonic() - t0
        return result
    with adaptive_for(spark, settings, None if ctx.replay else _rows_to_read(settings, inputs, expected)):
        _conform(spark, settings, spec, ctx, inputs, versions, expected, result)
    result.seconds = time.monotonic() - t0
    return result


def _rows_to_read(settings: Settings, inputs: Mapping[str, DataFrame], expected: Mapping[str, int]) -> int:
    """How many bronze rows a run reads, before reading them: from the ingest log, else (a dimension's unchanged snapshot) at most its table's rows, from the Delta log."""
    return sum(expected[name] if name in expected else inspect.rows_in(settings, REGISTRY[name]) for name in inputs)


def _conform(
    spark: SparkSession,
    settings: Settings,
    spec: SilverSpec,
    ctx: RunContext,
    inputs: Mapping[str, DataFrame],
    versions: Mapping[str, int],
    expected: Mapping[str, int],
    result: TableResult,
) -> None:
    """Fates, gates and publication of one silver run's inputs (see the module docstring), into `result`."""
    cfg = ctx.config["rules"].get(spec.rule_section, {})
    fated = prepare(spark, settings, spec, inputs, cfg).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        result.input_rows = sum(expected[name] if name in expected else df.count() for name, df in inputs.items())
        if result.input_rows == 0:
            # bronze commits without rows (its OPTIMIZE and VACUUM): read past them, so that the next
            # run does not look at them again (and `silver_pending` sees nothing new)
            if not ctx.replay:
                _record_progress(spark, settings, spec.table.name, versions, ctx)
            result.skipped = True
            return
        # one pass: rows per fate and, for quarantined rows, per first failed rule
        tally = fated.groupBy("_fate", F.try_element_at("_failed_rules", F.lit(1)).alias("rule")).count().collect()
        counts: dict[str, int] = {}
        for r in tally:
            counts[r["_fate"]] = counts.get(r["_fate"], 0) + int(r["count"])
            if r["_fate"] == "quarantined":
                result.quarantined_by_rule[r["rule"]] = int(r["count"])
        result.fates = {fate: counts.get(fate, 0) for fate in (*FATES, "merged") if counts.get(fate, 0) or fate in FATES}
        suite = f"bronze_to_silver.{spec.table.short_name}"
        quality.gate(settings, ctx.run_id, fated, suite, bronze_to_silver_checks(spec, result.input_rows, ctx.config, ctx.replay), ctx.gates, spec.table.pii)
        result.gates.append(suite)

        # audit the rows to publish in memory (a filter of the cached fated rows), then one MERGE
        staged = fated.where(F.col("_fate") == "staged").select(*spec.table.column_names)
        framed = spec.gate_frame(spark, settings, staged) if spec.gate_frame else staged
        suite = f"silver.{spec.table.short_name}"
        quality.gate(settings, ctx.run_id, framed, suite, spec.checks(ctx.config, result.fates["staged"]), ctx.gates, spec.table.pii)
        result.gates.append(suite)
        result.version, result.merge = _publish(spark, settings, spec, staged, fated, ctx, result.fates["staged"])
        if result.fates["quarantined"] or ctx.replay:
            _merge_quarantine(spark, settings, fated, spec.table, ctx)
        faults.checkpoint(settings, "silver.before_progress")  # published, not yet recorded: a rerun must change nothing twice
        if not ctx.replay:
            _record_progress(spark, settings, spec.table.name, versions, ctx)
        result.source_versions = dict(versions)
    finally:
        fated.unpersist()
