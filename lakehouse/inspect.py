"""Inspection without Spark: table versions, row counts, history and exports through delta-rs.

These commands start no JVM: they read the Delta log directly (row counts come from the file
statistics in the log) and stream data with pyarrow, batch by batch.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from lakehouse import audit, storage
from lakehouse.settings import Settings
from lakehouse.tables import ALL_TABLES, Table


def delta_rs_uri(settings: Settings, table: Table) -> str:
    """The table's location as delta-rs spells it (s3:// rather than s3a://)."""
    return "s3://" + table.location(settings).removeprefix("s3a://")


def open_table(settings: Settings, table: Table, role: str = "transform", version: int | None = None) -> DeltaTable | None:
    """The Delta table (as of `version`), or None when it does not exist yet."""
    try:
        return DeltaTable(
            delta_rs_uri(settings, table),
            version=version,
            storage_options=storage.delta_rs_storage_options(settings, role),
        )
    except TableNotFoundError:
        return None


def version(settings: Settings, table: Table, role: str = "transform") -> int | None:
    """The table's latest Delta version, or None when it does not exist yet (read from the log, no JVM)."""
    dt = open_table(settings, table, role)
    return None if dt is None else int(dt.version())


def written_version(settings: Settings, table: Table, role: str = "transform") -> int:
    """The version a write just committed (one writer at a time: the latest), read from the log without a Spark job.

    The commit at that version must carry this writer's stamp (`audit.check_ours`).
    """
    dt = open_table(settings, table, role)
    if dt is None:
        raise LookupError(f"{table.name} has no Delta log at {table.location(settings)} after a write")
    written = int(dt.version())
    if audit.active() is not None:
        [commit] = dt.history(1)
        audit.check_ours(table.name, written, commit.get("userMetadata"))
    return written


def check_written_since(settings: Settings, table: Table, before: int | None, role: str = "transform") -> int | None:
    """Check that every commit after version `before` (None: every commit) carries this writer's stamp; return the latest version.

    For a step of several commits on one table (maintenance, erasure) and for a write that may
    commit nothing (a MERGE with no row to change may or may not commit): an unchanged version
    has nothing to check.
    """
    dt = open_table(settings, table, role)
    if dt is None:
        return None
    latest = int(dt.version())
    since = -1 if before is None else before
    if audit.active() is not None and latest > since:
        for commit in dt.history(latest - since):
            audit.check_ours(table.name, int(commit["version"]), commit.get("userMetadata"))
    return latest


def progress(settings: Settings, role: str = "transform") -> dict[tuple[str, str], int]:
    """(silver table, bronze table) -> the last bronze version that silver table processed (no JVM).

    `silver._progress` is appended to, a row per bronze table read per run: the latest is the largest.
    """
    from lakehouse.tables import PROGRESS

    dt = open_table(settings, PROGRESS, role)
    if dt is None:
        return {}
    done: dict[tuple[str, str], int] = {}
    for r in arrow_dataset(settings, dt, role).to_table(columns=["consumer", "source_table", "last_version"]).to_pylist():
        key = (r["consumer"], r["source_table"])
        done[key] = max(done.get(key, -1), int(r["last_version"]))
    return done


def ingest_log(settings: Settings, role: str = "transform") -> list[dict[str, Any]]:
    """Every row of the ingest log: feed, object key, ETag, size, status, run id, rows, bronze version, reason (no JVM).

    A log written before a column was added (`reason`) reads that column as null.
    """
    from lakehouse.tables import INGEST_LOG

    dt = open_table(settings, INGEST_LOG, role)
    if dt is None:
        return []
    columns = ["feed", "object_key", "etag", "size", "status", "run_id", "rows", "bronze_version", "logged_at", "reason"]
    present = {f.name for f in dt.schema().fields}
    rows = arrow_dataset(settings, dt, role).to_table(columns=[c for c in columns if c in present]).to_pylist()
    for row in rows:
        for column in columns:
            row.setdefault(column, None)
    return rows


def ingested(settings: Settings, feed: str | None = None, role: str = "transform") -> list[dict[str, Any]]:
    """The ingest log's rows of objects that reached bronze (committed or recovered), of one feed or all (no JVM)."""
    return [r for r in ingest_log(settings, role) if r["status"] in ("committed", "recovered") and (feed is None or r["feed"] == feed)]


def arrow_dataset(settings: Settings, dt: DeltaTable, role: str = "transform") -> ds.Dataset:
    """The snapshot's data files as a pyarrow dataset read through pyarrow's native S3 client.

    Every pyarrow read of a lake table goes through here. delta-rs's default hands pyarrow a
    filesystem written in Python, so Arrow's I/O threads call back into Python; one still winding
    down when the interpreter exits aborts the process after its work is done ("terminate called
    without an active exception", apache/arrow#39862; 63 of 100 short reader processes here). The
    native client never calls into Python.
    """
    from pyarrow.fs import SubTreeFileSystem

    uri = urlparse(dt.table_uri)
    root = SubTreeFileSystem(f"{uri.netloc}{uri.path}".rstrip("/"), storage.arrow_filesystem(settings, role))
    return dt.to_pyarrow_dataset(filesystem=root)


def row_count(dt: DeltaTable) -> int:
    """Rows in the current snapshot, from the per-file statistics in the log."""
    return row_count_of(pa.table(dt.get_add_actions(flatten=True)))


def row_count_of(actions: pa.Table) -> int:
    """Rows in the files of a snapshot's add actions (flattened), from their statistics."""
    return int(pc.sum(actions.column("num_records")).as_py() or 0) if actions.num_rows else 0


def rows_in(settings: Settings, table: Table, partitions: Mapping[str, Iterable[str]] | None = None, role: str = "transform") -> int:
    """Rows of the current snapshot in the partitions named (column -> values; all rows when None), from the log's statistics.

    A writer asks this before a MERGE: into partitions that hold no rows, a plain append writes
    the same rows at a fraction of the cost (no join, no source materialised twice).
    """
    dt = open_table(settings, table, role)
    if dt is None:
        return 0
    if not partitions:
        return row_count(dt)
    actions = pa.table(dt.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return 0
    wanted = [pc.is_in(actions.column(f"partition.{column}"), pa.array(sorted({str(v) for v in values}), pa.string())) for column, values in partitions.items()]
    return row_count_of(actions.filter(functools.reduce(pc.and_, wanted)))


def overview(settings: Settings, role: str = "transform") -> list[dict[str, Any]]:
    """Every registered table that exists: name, layer, version, rows, location."""
    found = []
    for table in ALL_TABLES:
        dt = open_table(settings, table, role)
        if dt is None:
            continue
        found.append({"name": table.name, "layer": table.layer, "version": dt.version(), "rows": row_count(dt), "location": table.location(settings)})
    return found


def history(settings: Settings, table: Table, limit: int | None = None, run: str | None = None) -> list[dict[str, Any]]:
    """The table's commits, newest first, each with its audit stamp (run, role, step, writer; `lakehouse.audit`); only `run`'s when given."""
    dt = open_table(settings, table)
    if dt is None:
        raise LookupError(f"{table.name} does not exist yet at {table.location(settings)}")
    return _commits(table, dt, limit, run)


def _commits(table: Table, dt: DeltaTable, limit: int | None, run: str | None) -> list[dict[str, Any]]:
    commits = []
    for c in dt.history(None if run else limit):
        stamp = audit.decode(c.get("userMetadata"))
        written_by = audit.run_of(stamp)
        if run and written_by != run:
            continue
        metrics = c.get("operationMetrics") or {}
        commits.append(
            {
                "table": table.name,
                "version": c.get("version"),
                "timestamp": _iso(c.get("timestamp")),
                "operation": c.get("operation"),
                "run": written_by,
                "role": stamp.get("role"),
                "step": stamp.get("step"),
                "writer": stamp.get("writer"),
                "metrics": json.dumps(metrics, sort_keys=True) if metrics else "",
            }
        )
    return commits[:limit] if limit is not None else commits


def history_all(settings: Settings, limit: int | None = None, run: str | None = None) -> list[dict[str, Any]]:
    """The commits of every existing table, newest first (only `run`'s when given): the lakehouse's audit trail."""
    opened = [(table, open_table(settings, table)) for table in ALL_TABLES]
    found = [c for table, dt in opened if dt is not None for c in _commits(table, dt, limit, run)]
    found.sort(key=lambda c: (c["timestamp"] or "", c["table"], c["version"]), reverse=True)
    return found[:limit] if limit is not None else found


def _iso(millis: int | None) -> str | None:
    """A commit time (epoch milliseconds in the Delta log) as ISO 8601 UTC."""
    if millis is None:
        return None
    return datetime.fromtimestamp(millis / 1000, tz=UTC).isoformat(timespec="seconds")


def export(settings: Settings, table: Table, target: Path, version: int | None = None, role: str = "transform") -> int:
    """Stream the table (as of `version`) into one local Parquet file; return the rows written."""
    dt = open_table(settings, table, role, version)
    if dt is None:
        raise LookupError(f"{table.name} does not exist yet at {table.location(settings)}")
    dataset = arrow_dataset(settings, dt, role)
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with pq.ParquetWriter(target, dataset.schema) as writer:
        for batch in dataset.to_batches():
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def quarantine_summary(settings: Settings, role: str = "transform") -> list[dict[str, Any]]:
    """Unresolved quarantined rows per table and rule."""
    from lakehouse.tables import QUARANTINE

    dt = open_table(settings, QUARANTINE, role)
    if dt is None:
        return []
    rows = arrow_dataset(settings, dt, role).to_table(columns=["table_name", "rule_id", "quarantined_at", "run_id"], filter=ds.field("resolved_at").is_null())
    if rows.num_rows == 0:
        return []
    grouped = rows.group_by(["table_name", "rule_id"]).aggregate([("rule_id", "count"), ("quarantined_at", "min"), ("run_id", "max")])
    out = [
        {
            "table": r["table_name"],
            "rule": r["rule_id"],
            "rows": r["rule_id_count"],
            "first_quarantined_at": str(r["quarantined_at_min"]),
            "last_run_id": r["run_id_max"],
        }
        for r in grouped.to_pylist()
    ]
    return sorted(out, key=lambda q: (q["table"], -q["rows"]))
