"""Retention of what is kept outside the tables' own history: landing objects, quarantined rows, gate reports, logs.

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
- `LAKEHOUSE_REPORT_RETENTION_DAYS` (default 0: keep): gate reports (`quality/reports/...`, JSON
  and HTML; a failing gate's report holds sample values, PII redacted) written more than this many
  days ago are deleted. A recorded build's manifest and MLflow run keep the report's URI, which
  then points at nothing.
- `LAKEHOUSE_LOG_RETENTION_DAYS` (default 0: keep): log files of this host untouched for longer
  are deleted: the services' logs (`<home>/logs`), Airflow's task logs (`<home>/airflow/logs`)
  and Spark event logs (LAKEHOUSE_SPARK_EVENT_LOG_DIR), except a file a running service holds
  open; folders left empty go too. In compose, Docker rotates the containers' logs (10 MB x 3).

All run as `maintain`, the one role that may delete (`lakehouse.storage.ROLE_GRANTS`).

Tables' own history is bounded by `LAKEHOUSE_RETENTION_DAYS` (`lakehouse.maintenance`); an
aircraft is removed from everything at once by `lakehouse erase` (`lakehouse.erasure`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
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
    gate_reports: int = 0
    log_files: int = 0


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
    dt = inspect.open_table(settings, QUARANTINE, "maintain")
    if dt is None:
        return 0
    cutoff = now - timedelta(days=settings.quarantine_retention_days)
    times = inspect.arrow_dataset(settings, dt, "maintain").to_table(columns=["quarantined_at"]).column("quarantined_at")
    bound = cutoff.replace(tzinfo=UTC) if getattr(times.type, "tz", None) else cutoff  # delta-rs reads Delta timestamps as UTC instants
    old = int(pc.sum(pc.less(times, pa.scalar(bound, type=times.type))).as_py() or 0)
    if old:
        from delta.tables import DeltaTable

        DeltaTable.forPath(spark(), QUARANTINE.location(settings)).delete(F.col("quarantined_at") < F.lit(cutoff))
        inspect.check_written_since(settings, QUARANTINE, int(dt.version()), "maintain")
    return old


def expire_reports(settings: Settings, now: datetime) -> int:
    """Delete the gate reports written before the report retention; return how many."""
    if settings.report_retention_days <= 0:
        return 0
    cutoff = now - timedelta(days=settings.report_retention_days)
    s3, bucket = storage.client(settings, "maintain"), settings.bucket("quality")
    old = [o.object_name for o in s3.list_objects(bucket, prefix="reports/", recursive=True) if o.last_modified is not None and _utc(o.last_modified) < cutoff]
    return storage.remove_objects(s3, bucket, old) if old else 0


def log_folders(settings: Settings) -> list[Path]:
    """The folders of this host's log files: the services', Airflow's task logs, Spark's event logs."""
    from lakehouse.services import airflow_home

    found = [settings.logs_dir, airflow_home(settings) / "logs"]
    if settings.spark_event_log_dir is not None:
        found.append(settings.spark_event_log_dir)
    return [folder for folder in found if folder.is_dir()]


def _held_open(settings: Settings) -> set[Path]:
    """The files that the running services (and their children: Airflow's tasks) hold open."""
    from lakehouse import services

    held: set[Path] = set()
    for service in (*services.SERVICES, services.JUPYTER):
        pid = services.running_pid(settings, service.name)
        if pid is None:
            continue
        try:
            parent = psutil.Process(pid)
            for proc in [parent, *parent.children(recursive=True)]:
                held.update(Path(f.path) for f in proc.open_files())
        except psutil.Error:
            continue
    return held


def expire_logs(settings: Settings, now: datetime) -> int:
    """Delete the log files untouched for longer than the log retention, but none held open; return how many."""
    if settings.log_retention_days <= 0:
        return 0
    cutoff = (now - timedelta(days=settings.log_retention_days)).replace(tzinfo=UTC).timestamp()
    held, deleted, emptied = _held_open(settings), 0, set()
    for folder in log_folders(settings):
        for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):  # files before their folders
            if path.is_symlink():
                if not path.exists():  # a link to a log that went (SeaweedFS's current-log links)
                    path.unlink()
            elif path.is_file():
                if path.stat().st_mtime < cutoff and path.resolve() not in held:
                    path.unlink()
                    deleted += 1
                    emptied.add(path.parent)
            elif path.is_dir() and (path in emptied or path.stat().st_mtime < cutoff) and not any(path.iterdir()):
                path.rmdir()
                emptied.add(path.parent)
    return deleted


def expire(spark: Callable[[], SparkSession], settings: Settings, now: datetime) -> Expired:
    """Apply every retention (see the module's doc)."""
    expired = Expired(expire_landing(settings, now), expire_quarantine(spark, settings, now), expire_reports(settings, now), expire_logs(settings, now))
    if expired != Expired():
        log.warning(
            "retention: deleted %d landing objects settled, %d rows quarantined, %d gate reports written, %d log files untouched, each longer ago than its retention",
            expired.landing_objects, expired.quarantined_rows, expired.gate_reports, expired.log_files,
        )  # fmt: skip
    return expired
