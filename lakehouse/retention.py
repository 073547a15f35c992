"""Retention of the personal data kept outside silver's pseudonyms: landing objects and quarantined rows.

A landing extract holds its source's values as delivered (tail numbers included), and so does a
quarantined row's `raw_row`. Both are kept until someone decides otherwise, because a re-ingestion
reads landing and a replay reads the quarantine; these settings decide, and `lakehouse maintain`
(and the DAG's maintenance task) applies them:

- `LAKEHOUSE_LANDING_RETENTION_DAYS` (default 0: keep): a landing object, and its manifest, is
  deleted once the ingest log settled it (committed, recovered or rejected) more than this many
  days ago, and only when the object is still the delivery that was settled (same ETag): an
  object not ingested yet, or re-delivered since, stays.
- `LAKEHOUSE_QUARANTINE_RETENTION_DAYS` (default 0: keep): rows quarantined more than this many
  days ago are deleted from `silver._quarantine`, resolved or not (one Delta DELETE). Their files
  go with the table's VACUUM, after its retention (`LAKEHOUSE_RETENTION_DAYS`).

Tables' own history is bounded by `LAKEHOUSE_RETENTION_DAYS` (`lakehouse.maintenance`); an
aircraft is removed from everything at once by `lakehouse erase` (`lakehouse.erasure`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse import inspect, landing, storage
from lakehouse.settings import Settings
from lakehouse.tables import QUARANTINE

log = logging.getLogger(__name__)

#: Ingest-log outcomes after which a landing object is no longer needed to reach bronze.
SETTLED = ("committed", "recovered", "rejected")


@dataclass
class Expired:
    landing_objects: int = 0
    quarantined_rows: int = 0


def _utc(moment: datetime) -> datetime:
    """A time as the lakehouse's clock reads it: UTC without a zone."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def expire_landing(settings: Settings, now: datetime) -> int:
    """Delete the settled landing objects (and manifests) older than the landing retention; return how many."""
    if settings.landing_retention_days <= 0:
        return 0
    cutoff = now - timedelta(days=settings.landing_retention_days)
    logged = inspect.ingest_log(settings, "maintain")
    settled = {(r["object_key"], r["etag"]) for r in logged if r["status"] in SETTLED and r["logged_at"] is not None and _utc(r["logged_at"]) < cutoff}
    if not settled:
        return 0
    s3, bucket = storage.client(settings, "maintain"), settings.bucket("landing")
    deleted = 0
    for obj in list(storage.list_objects(s3, bucket, "")):
        if (obj.key, obj.etag) in settled:
            s3.remove_object(bucket, obj.key)
            s3.remove_object(bucket, landing.manifest_key(obj.key))  # no error when there is none
            deleted += 1
    return deleted


def expire_quarantine(spark: Callable[[], SparkSession], settings: Settings, now: datetime) -> int:
    """Delete the rows quarantined before the quarantine retention; return how many (Spark starts only when there are some)."""
    if settings.quarantine_retention_days <= 0:
        return 0
    dt = inspect.open_table(settings, QUARANTINE)
    if dt is None:
        return 0
    cutoff = now - timedelta(days=settings.quarantine_retention_days)
    times = inspect.arrow_dataset(settings, dt).to_table(columns=["quarantined_at"]).column("quarantined_at")
    bound = cutoff.replace(tzinfo=UTC) if getattr(times.type, "tz", None) else cutoff  # delta-rs reads Delta timestamps as UTC instants
    old = int(pc.sum(pc.less(times, pa.scalar(bound, type=times.type))).as_py() or 0)
    if old:
        from delta.tables import DeltaTable

        DeltaTable.forPath(spark(), QUARANTINE.location(settings)).delete(F.col("quarantined_at") < F.lit(cutoff))
    return old


def expire(spark: Callable[[], SparkSession], settings: Settings, now: datetime) -> Expired:
    """Apply both retentions (see the module's doc)."""
    expired = Expired(expire_landing(settings, now), expire_quarantine(spark, settings, now))
    if expired.landing_objects or expired.quarantined_rows:
        log.warning(
            "retention: deleted %d landing objects settled more than %g days ago and %d rows quarantined more than %g days ago",
            expired.landing_objects, settings.landing_retention_days, expired.quarantined_rows, settings.quarantine_retention_days,
        )  # fmt: skip
    return expired
