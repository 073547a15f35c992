"""Literal bronze rows for unit tests: a feed's string columns plus the bronze metadata."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, SparkSession

from lakehouse.spark import local_frame
from lakehouse.tables import get

INGESTED = datetime(2026, 1, 1, 0, 0, 0)


def bronze_rows(spark: SparkSession, table: str, rows: list[dict], obj: str = "x.csv", etag: str = "e1", ingested_at: datetime = INGESTED) -> DataFrame:
    """A bronze frame of `table` (e.g. "bronze.nyc_flights"): unspecified source fields are null."""
    t = get(table)
    records = []
    for i, row in enumerate(rows):
        record = {c: row.get(c) for c in t.feed.columns}
        record.update(
            _is_malformed=row.get("_is_malformed", False), _malformed_reason=None, _raw_line=None, _raw_bytes=None,
            _ingest_run_id="ingest-1", _source_object=row.get("_source_object", obj), _source_etag=row.get("_source_etag", etag),
            _source_system=t.feed.source_system, _ingested_at=row.get("_ingested_at", ingested_at), _ingest_date=ingested_at.date(),
            _row_number=row.get("_row_number", i + 2),
        )  # fmt: skip
        records.append(record)
    return local_frame(spark, records, t.schema)


def prepared(spark: SparkSession, prepare, table: str, rows: list[dict], cfg: dict, obj: str = "x.csv", etag: str = "e1", ingested_at: datetime = INGESTED) -> DataFrame:
    """Run a silver `prepare` on literal bronze rows, with the bookkeeping columns conform adds.

    Each object's latest delivery is a local relation, as conform reads it from the ingest log.
    """
    from pyspark.sql import functions as F

    from silver.conform import latest_etags
    from silver.rules import mark_superseded

    df = bronze_rows(spark, table, rows, obj=obj, etag=etag, ingested_at=ingested_at).withColumn("_bronze_table", F.lit(table))
    logged = [
        {"object_key": r.get("_source_object", obj), "etag": r.get("_source_etag", etag), "logged_at": r.get("_ingested_at", ingested_at), "bronze_version": None} for r in rows
    ]
    latest = local_frame(spark, sorted(latest_etags(logged).items()), "_source_object STRING, _latest_etag STRING")
    return prepare(mark_superseded(df, latest), cfg)
