"""Bronze ingestion: landing objects -> one append-only Delta table per feed, exactly once.

Grain: one row per source data line; key (_source_object, _source_etag, _row_number). Every
source field is kept as a string; a line that cannot be split into the feed's columns is kept
with its raw text and a flag, never dropped. All seven bronze tables share this one module,
because bronze is deliberately schema-agnostic: the registry (`lakehouse.tables`) declares each
feed's landing prefix and columns.

Exactly once: an object counts as ingested when `bronze._ingest_log` holds a committed entry for
its key and ETag. A run first logs all its objects as `pending` (one commit), appends each feed's
rows to its bronze table in one commit tagged with the run id (Delta userMetadata), then logs them
all `committed` (one commit). A run that died
between the two is settled by the next one from the bronze history: if the tagged commit exists
the objects are marked `recovered` (nothing re-read), otherwise `aborted` and ingested again;
each pending entry by an outcome of its own, as retries reuse the run id (`unsettled`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pyspark.sql import DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F

from bronze import screen
from lakehouse import delta, faults, inspect, storage
from lakehouse.quarters import object_month
from lakehouse.settings import Settings
from lakehouse.spark import local_frame
from lakehouse.storage import ObjectInfo
from lakehouse.tables import BRONZE_TABLES, INGEST_LOG, Feed, Table

#: A quoted CSV span: `"..."`; an escaped quote (`""`) splits it into two spans, both removed alike.
_QUOTED = r'"[^"]*"'
#: A data line longer than this is flagged `overlong_line` (kept whole, never parsed).
MAX_LINE_CHARS = 1 << 16

log = logging.getLogger(__name__)

DONE = ("committed", "recovered")
#: Statuses after which an object (key, ETag) is not looked at again: it reached bronze, or it was rejected.
SEEN = (*DONE, "rejected")


# ---------------------------------------------------------------- pure transforms


def number_lines(raw: DataFrame) -> DataFrame:
    """Add `_line_number` (1-based within `_source_object`) and `_header` (the object's first line).

    `raw` holds `value` and `_source_object` in file order, as a text scan produces them. Row
    positions come from the monotonically increasing id (partition index in the upper bits, row
    within the partition below) and a small per-partition aggregate, so no shuffle of the lines.
    """
    lines = raw.withColumn("_mono", F.monotonically_increasing_id()).withColumn("_part", F.shiftright("_mono", 33))
    by_object = Window.partitionBy("_source_object").orderBy("_first")
    bounds = (
        lines.groupBy("_source_object", "_part")
        .agg(F.min("_mono").alias("_first"), F.count(F.lit(1)).alias("_n"), F.min_by("value", "_mono").alias("_first_value"))
        .withColumn("_offset", F.coalesce(F.sum("_n").over(by_object.rowsBetween(Window.unboundedPreceding, -1)), F.lit(0)))
        .withColumn("_header", F.first("_first_value").over(by_object.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)))
        .select("_source_object", "_part", "_first", "_offset", "_header")
    )
    return (
        lines.join(F.broadcast(bounds), ["_source_object", "_part"])
        .withColumn("_line_number", F.col("_offset") + F.col("_mono") - F.col("_first") + 1)
        .drop("_mono", "_part", "_first", "_offset")
    )


def field_count(value: F.Column) -> F.Column:
    """Number of CSV fields in a line (commas inside double quotes do not separate); -1 when its quotes do not pair up.

    Linear in the line: the quoted spans are removed, then the commas left are counted. (A
    lookahead regular expression per comma, as before, took time quadratic in a line's length.)
    """
    commas = F.size(F.split(value, ",", -1))
    quotes = F.size(F.split(value, '"', -1)) - 1
    return F.when(quotes == 0, commas).when(quotes % 2 == 1, F.lit(-1)).otherwise(F.size(F.split(F.regexp_replace(value, _QUOTED, ""), ",", -1)))


def parse_lines(numbered: DataFrame, columns: Sequence[str], orders: Mapping[str, tuple[str, Sequence[str]]] | None = None) -> DataFrame:
    """Split data lines (line > 1) into the feed's string columns; flag the ones that do not fit.

    `orders` maps an object whose header names the feed's columns in another order to (that
    header line, its column order): its lines are read by name. A malformed line keeps its text in
    `_raw_line` (and its bytes in `_raw_bytes` when they are not valid UTF-8); its columns are null
    rather than misaligned.
    """
    value = F.col("value")
    valid = F.is_valid_utf8(value)

    def read(order: Sequence[str]) -> F.Column:
        return F.from_csv(value, F.lit(", ".join(f"`{c}` STRING" for c in order)), {"escape": '"'})

    expected, parsed = F.lit(",".join(columns)), read(columns)
    for key, (header, order) in (orders or {}).items():
        mine = F.col("_source_object") == F.lit(key)
        expected = F.when(mine, F.lit(header)).otherwise(expected)
        by_name = read(order)
        parsed = F.when(mine, F.struct(*[by_name.getField(c).alias(c) for c in columns])).otherwise(parsed)
    reason = (
        F.when(F.col("_header") != expected, F.lit("header_mismatch"))
        .when(~valid, F.lit("undecodable_bytes"))
        .when(F.length(value) > MAX_LINE_CHARS, F.lit("overlong_line"))
        .when(field_count(value) != len(columns), F.lit("wrong_column_count"))
    )
    return (
        numbered.where(F.col("_line_number") > 1)
        .withColumn("_malformed_reason", reason)
        .withColumn("_parsed", F.when(F.col("_malformed_reason").isNull(), parsed))
        .select(
            *[F.col("_parsed").getField(c).alias(c) for c in columns],
            F.col("_malformed_reason").isNotNull().alias("_is_malformed"),
            "_malformed_reason",
            F.when(F.col("_malformed_reason").isNotNull(), F.make_valid_utf8(value)).alias("_raw_line"),
            F.when(~valid, value.cast("binary")).alias("_raw_bytes"),
            "_source_object",
            F.col("_line_number").alias("_row_number"),
        )
    )


def add_metadata(parsed: DataFrame, etags: DataFrame, run_id: str, started_at: datetime, source_system: str) -> DataFrame:
    """Add the lineage columns; `etags` maps `_source_object` to `_source_etag`."""
    return parsed.join(F.broadcast(etags), "_source_object").select(
        *[c for c in parsed.columns if c not in {"_source_object", "_row_number"}],
        F.lit(run_id).alias("_ingest_run_id"),
        "_source_object",
        "_source_etag",
        F.lit(source_system).alias("_source_system"),
        F.lit(started_at).cast("timestamp").alias("_ingested_at"),
        F.lit(started_at.date()).alias("_ingest_date"),
        "_row_number",
    )


def to_bronze(raw: DataFrame, etags: DataFrame, feed: Feed, run_id: str, started_at: datetime, orders: Mapping[str, tuple[str, Sequence[str]]] | None = None) -> DataFrame:
    """Raw lines of a feed's new objects -> bronze rows (`orders`: see `parse_lines`)."""
    return add_metadata(parse_lines(number_lines(raw), feed.columns, orders), etags, run_id, started_at, feed.source_system)


def new_objects(listed: Iterable[ObjectInfo], done: set[tuple[str, str]]) -> list[ObjectInfo]:
    """Objects whose (key, ETag) has no committed log entry, in key order."""
    return sorted((o for o in listed if (o.key, o.etag) not in done), key=lambda o: o.key)


def of_months(objects: Iterable[ObjectInfo], months: Iterable[str] | None) -> list[ObjectInfo]:
    """The monthly extracts of `months` and every snapshot (all objects when `months` is None)."""
    if months is None:
        return list(objects)
    wanted = set(months)
    return [o for o in objects if object_month(o.key) in wanted or object_month(o.key) is None]


def unsettled(log_rows: Iterable[dict]) -> dict[str, list[dict]]:
    """Pending log entries with no outcome of their own, grouped by run id.

    Every attempt of a run logs one `pending` entry per object before it writes, and one outcome
    after (`committed`; or `recovered` / `aborted`, from the next attempt that settles it). An
    orchestrator's retries reuse the run id, so one (run id, key, ETag) can hold several attempts'
    entries: a pending entry is settled by an outcome of its own, counted, not by any outcome of
    its run (an `aborted` outcome of a first attempt must not settle the pending entry of a second
    that wrote bronze and died before logging: that object would be ingested twice).
    """
    balance: dict[tuple[str, str, str], list[dict]] = {}
    outcomes: dict[tuple[str, str, str], int] = {}
    for r in log_rows:
        key = (r["run_id"], r["object_key"], r["etag"])
        if r["status"] == "pending":
            balance.setdefault(key, []).append(r)
        else:
            outcomes[key] = outcomes.get(key, 0) + 1
    pending: dict[str, list[dict]] = {}
    for key, entries in balance.items():
        for entry in entries[outcomes.get(key, 0) :]:
            pending.setdefault(key[0], []).append(entry)
    return pending


# ---------------------------------------------------------------- the job


def selected(feeds: Iterable[str] | None) -> list[Table]:
    """The bronze tables of `feeds` (`nyc_flights` or `bronze.nyc_flights`; every feed when None)."""
    wanted = None if feeds is None else {f if f.startswith("bronze.") else f"bronze.{f}" for f in feeds}
    return [t for t in BRONZE_TABLES if wanted is None or t.name in wanted]


def has_work(settings: Settings, feeds: Iterable[str] | None = None, months: Iterable[str] | None = None) -> bool:
    """Whether a run would do anything: a new landing object to ingest or a crashed run's entries to settle.

    Read from the ingest log with delta-rs and from a listing of the landing bucket, without a JVM:
    a run that finds nothing new (a retry, a rerun of a month) costs seconds.
    """
    log_rows = inspect.ingest_log(settings, role="ingest")
    s3 = storage.client(settings, "ingest")
    for table in selected(feeds):
        assert table.feed is not None, f"{table.name} has no feed"
        mine = [r for r in log_rows if r["feed"] == table.name]
        if unsettled(mine):
            return True
        done = {(r["object_key"], r["etag"]) for r in mine if r["status"] in SEEN}
        if of_months(new_objects(storage.list_objects(s3, settings.bucket("landing"), table.feed.prefix), done), months):
            return True
    return False


@dataclass
class FeedReport:
    table: str
    objects: int = 0
    rows: int = 0
    malformed: int = 0
    recovered_objects: int = 0
    aborted_objects: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)  # {"object_key", "reason"} of each object screened out
    bronze_version: int | None = None
    seconds: float = 0.0


@dataclass
class IngestReport:
    run_id: str
    feeds: list[FeedReport] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.feeds)

    @property
    def objects(self) -> int:
        return sum(f.objects for f in self.feeds)


def _log(spark: SparkSession, settings: Settings, entries: list[dict]) -> None:
    """Append entries to the ingest log in one commit, checked to be this writer's (`inspect.written_version`)."""
    delta.insert(_log_rows(spark, entries), INGEST_LOG.location(settings))
    inspect.written_version(settings, INGEST_LOG, role="ingest")


def _log_rows(spark: SparkSession, entries: list[dict]) -> DataFrame:
    return local_frame(spark, entries, INGEST_LOG.schema)


def _counts(spark: SparkSession, location: str, version: int, run_id: str) -> dict[str, tuple[int, int]]:
    """Rows and malformed rows per object that `run_id` appended, read back from bronze."""
    rows = (
        delta.read(spark, location, version)
        .where(F.col("_ingest_run_id") == run_id)
        .groupBy("_source_object")
        .agg(F.count(F.lit(1)).alias("rows"), F.sum(F.col("_is_malformed").cast("long")).alias("malformed"))
        .collect()
    )
    return {r["_source_object"]: (int(r["rows"]), int(r["malformed"] or 0)) for r in rows}


def counted_per_object(rows: DataFrame, keys: Sequence[str]) -> tuple[DataFrame, Callable[[], dict[str, tuple[int, int]]]]:
    """`rows` observed while they are written: rows and malformed rows per object, without reading bronze back.

    Returns the frame to write and a function that gives {object key: (rows, malformed)} once an
    action on that frame has run (Spark's observed metrics, one aggregate per object: a run ingests
    a handful of objects per feed).
    """
    observation = Observation()  # a name of its own: one per write
    metrics = []
    for i, key in enumerate(keys):
        mine = F.col("_source_object") == F.lit(key)
        metrics += [F.count_if(mine).alias(f"rows_{i}"), F.count_if(mine & F.col("_is_malformed")).alias(f"malformed_{i}")]
    observed = rows.observe(observation, *metrics) if metrics else rows

    def counts() -> dict[str, tuple[int, int]]:
        values = observation.get if metrics else {}
        return {key: (int(values[f"rows_{i}"]), int(values[f"malformed_{i}"])) for i, key in enumerate(keys)}

    return observed, counts


def _entry(
    table: Table, obj: dict | ObjectInfo, run_id: str, status: str, now: datetime, counts: tuple[int, int] | None = None, version: int | None = None, reason: str | None = None
) -> dict:
    key, etag, size = (obj.key, obj.etag, obj.size) if isinstance(obj, ObjectInfo) else (obj["object_key"], obj["etag"], obj["size"])
    rows, malformed = counts if counts is not None else (None, None)
    return {
        "feed": table.name, "object_key": key, "etag": etag, "size": size, "run_id": run_id, "status": status,
        "rows": rows, "malformed_rows": malformed, "bronze_version": version, "logged_at": now, "reason": reason,
    }  # fmt: skip


def settle(spark: SparkSession, settings: Settings, table: Table, pending: dict[str, list[dict]], now: datetime, report: FeedReport) -> None:
    """Resolve the pending entries a crashed run left: recovered if its bronze commit exists, else aborted."""
    location = table.location(settings)
    # the whole history: a crashed run may be settled long after it, many commits later
    committed = delta.versions_tagged(spark, location) if delta.exists(spark, location) else {}
    entries = []
    for run_id, objects in pending.items():
        version = committed.get(run_id)
        counts = _counts(spark, location, version, run_id) if version is not None else {}
        for obj in objects:
            status = "recovered" if version is not None else "aborted"
            entries.append(_entry(table, obj, run_id, status, now, counts.get(obj["object_key"], (0, 0)) if version is not None else None, version))
            if version is not None:
                report.recovered_objects += 1
            else:
                report.aborted_objects += 1
    if entries:
        _log(spark, settings, entries)


@dataclass
class FeedPlan:
    """What a run will do for one feed: the screened objects to append to bronze, and the report so far."""

    table: Table
    report: FeedReport
    todo: list[ObjectInfo] = field(default_factory=list)
    orders: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # object key -> its header, when its columns come in another order (`parse_lines`)


def plan_feed(
    spark: SparkSession,
    settings: Settings,
    table: Table,
    log_rows: list[dict],
    run_id: str,
    started_at: datetime,
    months: Iterable[str] | None = None,
) -> tuple[FeedPlan, list[dict]]:
    """Settle a crashed run's entries of one feed, then find and screen its new landing objects (of `months` and snapshots, or all).

    Returns the plan and the log entries to append before any bronze write: each rejected object
    with its reason, and each object to read as `pending`. Nothing here writes, but settling.
    """
    t0 = time.monotonic()
    plan = FeedPlan(table, FeedReport(table.name))
    feed = table.feed
    assert feed is not None, f"{table.name} has no feed"
    mine = [r for r in log_rows if r["feed"] == table.name]
    pending = unsettled(mine)
    if pending:
        settle(spark, settings, table, pending, started_at, plan.report)
        mine = [r for r in inspect.ingest_log(settings, role="ingest") if r["feed"] == table.name]
    done = {(r["object_key"], r["etag"]) for r in mine if r["status"] in SEEN}
    s3 = storage.client(settings, "ingest")
    todo = of_months(new_objects(storage.list_objects(s3, settings.bucket("landing"), feed.prefix), done), months)
    # screened before Spark reads anything: a bad object is rejected with a reason, the others go on
    verdicts = {o.key: screen.screen(s3, o, feed) for o in todo}
    problems = {key: v.reason for key, v in verdicts.items() if v.reason}
    plan.orders = {key: v.reordered for key, v in verdicts.items() if v.reordered}
    rejected = [o for o in todo if o.key in problems]
    plan.todo = [o for o in todo if o.key not in problems]
    plan.report.rejected = [{"object_key": o.key, "reason": problems[o.key]} for o in rejected]
    for o in rejected:
        log.warning("%s: rejected %s (ETag %s), not read: %s", table.name, o.key, o.etag, problems[o.key])
    entries = [_entry(table, o, run_id, "rejected", started_at, reason=problems[o.key]) for o in rejected]
    plan.report.seconds = time.monotonic() - t0
    return plan, [*entries, *[_entry(table, o, run_id, "pending", started_at) for o in plan.todo]]


def write_feed(spark: SparkSession, settings: Settings, plan: FeedPlan, run_id: str, started_at: datetime) -> list[dict]:
    """Append the plan's objects to its bronze table in one commit tagged with the run id; return their `committed` log entries."""
    table, todo, report = plan.table, plan.todo, plan.report
    assert table.feed is not None, f"{table.name} has no feed"
    location = table.location(settings)
    delta.ensure_table(spark, settings, table)
    faults.checkpoint(settings, "ingest.before_bronze_write")
    paths = [storage.s3a_url(settings, "landing", o.key) for o in todo]
    raw = spark.read.text(paths).select("value", F.regexp_replace(F.url_decode(F.col("_metadata.file_path")), r"^s3a://[^/]+/", "").alias("_source_object"))
    etags = local_frame(spark, [(o.key, o.etag) for o in todo], "_source_object string, _source_etag string")
    rows = to_bronze(raw, etags, table.feed, run_id, started_at, plan.orders).select(*table.column_names)
    observed, counted = counted_per_object(rows, [o.key for o in todo])
    delta.insert(observed, location, tag=run_id)
    version = inspect.written_version(settings, table, role="ingest")
    faults.checkpoint(settings, "ingest.after_bronze_write")
    counts = counted()
    report.objects = len(todo)
    report.rows = sum(c[0] for c in counts.values())
    report.malformed = sum(c[1] for c in counts.values())
    report.bronze_version = version
    return [_entry(table, o, run_id, "committed", started_at, counts.get(o.key, (0, 0)), version) for o in todo]


def run(
    spark: SparkSession,
    settings: Settings,
    run_id: str,
    started_at: datetime,
    feeds: Iterable[str] | None = None,
    on_feed: Callable[[FeedReport], None] | None = None,
    months: Iterable[str] | None = None,
) -> IngestReport:
    """Ingest every selected feed (all when None), only the extracts of `months` (and snapshots) when given.

    The ingest log takes two commits per run, whatever the number of feeds: every object of the
    run `pending` (and each rejected one with its reason) before the first bronze write, and every
    outcome after the last (a commit costs about a second: two per feed took 12 of a test lake's
    37 s of ingest). A run that dies in between leaves its feeds' pending entries to the next run,
    which settles each from its bronze table's history (`settle`), as before.
    """
    delta.ensure_table(spark, settings, INGEST_LOG)
    log_rows = inspect.ingest_log(settings, role="ingest")  # read with delta-rs: no Spark job
    report = IngestReport(run_id)
    plans, before = [], []
    for table in selected(feeds):
        plan, entries = plan_feed(spark, settings, table, log_rows, run_id, started_at, months)
        plans.append(plan)
        before += entries
    if before:
        _log(spark, settings, before)
    after = []
    for plan in plans:
        if plan.todo:
            t0 = time.monotonic()
            after += write_feed(spark, settings, plan, run_id, started_at)
            plan.report.seconds += time.monotonic() - t0
        report.feeds.append(plan.report)
        if on_feed is not None:
            on_feed(plan.report)
    if after:
        _log(spark, settings, after)
    return report
