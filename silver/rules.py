"""Row rules as Spark column expressions, and the fate of every row a silver run reads.

Each bronze row a silver run reads ends in exactly one fate:

- `superseded`: its object was delivered again later (same key, newer ingest); the newer wins;
- `quarantined`: it broke at least one rule; it goes to `silver._quarantine` with the rules;
- `duplicate`: an exact copy of a row that is kept (same key, same values);
- `conflict`: same key as a kept row but other values; the table's stated rule picked the other;
- `staged`: written to the silver table.

The fates are columns on one frame, so the accounting is a single aggregate and must balance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lakehouse.quarters import extract_month

FATES = ("staged", "duplicate", "conflict", "quarantined", "superseded")


@dataclass(frozen=True)
class Rule:
    """A named row rule; `fails` is true when the row breaks it (null counts as passing)."""

    id: str
    description: str
    fails: Column


def check(df: DataFrame, rules: Sequence[Rule]) -> DataFrame:
    """Add `_failed_rules`: the ids of the rules a row breaks, in declaration order (empty if none)."""
    flags = F.array(*[F.when(F.coalesce(r.fails, F.lit(False)), F.lit(r.id)) for r in rules])
    return df.withColumn("_failed_rules", F.filter(flags, lambda x: x.isNotNull()))


def blank(c: Column, null_tokens: Sequence[str] = ("NA",)) -> Column:
    """True when a raw string field is missing: null, empty, or a source's null token."""
    trimmed = F.trim(c)
    return c.isNull() | (trimmed == "") | trimmed.isin(*null_tokens)


def clean(c: Column, null_tokens: Sequence[str] = ("NA",)) -> Column:
    """A raw string field with missing values as null."""
    return F.when(~blank(c, null_tokens), F.trim(c))


def number(c: Column) -> Column:
    """A raw string field parsed as a finite double; null when missing or not a finite number.

    Spark reads "NaN", "Infinity" and a value beyond a double's range ("1e400") as doubles that are
    not finite: they count as unparseable (`unparseable`), so the row is quarantined with a rule
    instead of carrying a NaN into silver or overflowing a later cast (a NaN `dep_delay` crashed
    silver.flights under Spark 4's strict casts).
    """
    parsed = clean(c).try_cast("double")
    return F.when(F.abs(parsed) < F.lit(float("inf")), parsed)


def unparseable(raw: Column, parsed: Column) -> Column:
    """The raw field has a value but it did not parse."""
    return ~blank(raw) & parsed.isNull()


def outside_object_month(month: Column) -> Column:
    """`month` (yyyy-MM) is not the month the row's object key names (`_object_month`, added by
    `mark_superseded`); never true for a snapshot, whose key names none."""
    return F.col("_object_month").isNotNull() & (month != F.col("_object_month"))


def mark_superseded(df: DataFrame, latest: DataFrame) -> DataFrame:
    """Add `_superseded`, the row's delivery is older than the latest delivery of its object, and
    `_object_month`, the month its object's key names (`lakehouse.quarters.extract_month`).

    `latest` maps `_source_object` to the `_latest_etag` of its newest delivery. The month is
    computed once per object on that small side of the join, not by a regular expression on every
    row (silver.flights: 3 of its prepare's 15 seconds). A row of an object `latest` lacks, or of a
    snapshot (no month), falls back to the expression on the row.
    """
    per_object = latest.withColumn("_latest_month", extract_month(F.col("_source_object")))
    return (
        df.join(F.broadcast(per_object), "_source_object", "left")
        .withColumn("_superseded", F.coalesce(F.col("_source_etag") != F.col("_latest_etag"), F.lit(False)))
        .withColumn("_object_month", F.coalesce(F.col("_latest_month"), extract_month(F.col("_source_object"))))
        .drop("_latest_etag", "_latest_month")
    )


def latest_deliveries(df: DataFrame) -> DataFrame:
    """The newest delivery (ETag) of each object among the rows of `df`."""
    return df.groupBy("_source_object").agg(F.max_by("_source_etag", "_ingested_at").alias("_latest_etag"))


def assign_fates(df: DataFrame, keys: Sequence[str], data_columns: Sequence[str], prefer: Sequence[Column]) -> DataFrame:
    """Add `_fate` (see the module docstring) to checked rows carrying `_superseded` and `_failed_rules`.

    Among the live, valid rows sharing `keys`, the first by `prefer` is kept; the others are
    `duplicate` when their `data_columns` equal the kept row's, else `conflict`.
    """
    live = F.col("_live")
    fingerprint = F.xxhash64(*[F.col(c) for c in data_columns])
    by_key = Window.partitionBy(F.when(live, F.lit(1)), *keys).orderBy(*prefer)
    # both window functions in one projection over one flag column: one shuffle and sort of the
    # rows (as two projections, Spark saw two partitionings and shuffled every row twice)
    ranked = df.withColumn("_live", ~F.col("_superseded") & (F.size("_failed_rules") == 0)).select(
        "*",
        F.when(live, F.row_number().over(by_key)).alias("_rank"),
        F.when(live, fingerprint == F.first(fingerprint).over(by_key)).alias("_same_as_kept"),
    )
    fate = (
        F.when(F.col("_superseded"), F.lit("superseded"))
        .when(F.size("_failed_rules") > 0, F.lit("quarantined"))
        .when(F.col("_rank") == 1, F.lit("staged"))
        .when(F.col("_same_as_kept"), F.lit("duplicate"))
        .otherwise(F.lit("conflict"))
    )
    return ranked.withColumn("_fate", fate).drop("_rank", "_same_as_kept", "_live")
