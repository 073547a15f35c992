"""Erasure of one personal value (an aircraft's registration) from every table that holds it, old versions included.

A table holds a personal column when its registry entry declares it (`Table.pii`): bronze as
delivered, silver as its keyed pseudonym (`Table.pseudonymised`, `lakehouse.pii`), and the
quarantine inside `raw_row`, the bronze row as JSON. Erasing a value:

- a nullable column gets null in the rows that hold the value (a flight stays a flight, without
  its aircraft); a row whose key is the value (an aircraft of `silver.planes`) is deleted;
- `raw_row` of a quarantined row has the value's JSON field replaced by null;
- a bronze table is append-only (`delta.appendOnly`): that property is lifted for the one commit
  and set again;
- every table changed is then VACUUMed with a retention of zero, so no older version's file holds
  the value any more: time travel of those tables before the erasure is gone. Gold holds no
  personal column, so every recorded training set stays deliverable and keeps its digest.

Every commit carries the run's audit stamp (`lakehouse history --run erase-...`). Not reached:
landing objects (the source's delivery), and copies outside the lakehouse.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse import delta, inspect, pii
from lakehouse.settings import Settings
from lakehouse.tables import ALL_TABLES, QUARANTINE, Table

log = logging.getLogger(__name__)


@dataclass
class Erased:
    """What one table held of the value and what erasure did there."""

    table: str
    column: str
    rows: int
    action: str  # "set to null", "deleted", "field set to null", or "none" (it held no such row)
    applied: bool = False


def _holders(column: str) -> list[Table]:
    return [t for t in ALL_TABLES if column in t.pii]


def _raw_field(column: str, value: str) -> tuple[str, str]:
    """The JSON text of `column: value` in a quarantined raw row, and its erased form."""
    return json.dumps({column: value}, separators=(",", ":"))[1:-1], json.dumps({column: None}, separators=(",", ":"))[1:-1]


def run(spark: SparkSession, settings: Settings, column: str, value: str, apply: bool) -> list[Erased]:
    """Find (and with `apply`, erase and vacuum) `value` of the personal column `column` in every table."""
    if not _holders(column):
        raise LookupError(f"no registered table declares {column!r} as personal data; those that do: {sorted({c for t in ALL_TABLES for c in t.pii})}")
    secret = pii.key(settings)
    found: list[Erased] = []
    for table in [*_holders(column), QUARANTINE]:
        location = table.location(settings)
        if not delta.exists(spark, location):
            continue
        if table is QUARANTINE:
            held, erased = _raw_field(column, value)
            matches = F.col("raw_row").contains(held)
            change: dict[str, object] | None = {"raw_row": F.replace(F.col("raw_row"), F.lit(held), F.lit(erased))}
            action, target = "field set to null", "raw_row"
        else:
            stored = pii.pseudonym_of(value, secret) if column in table.pseudonymised else value
            matches = F.col(column) == F.lit(stored)
            nullable = next(c.nullable for c in table.columns if c.name == column)
            change = {column: F.lit(None).cast("string")} if nullable else None
            action, target = ("set to null" if nullable else "deleted"), column
        rows = delta.read(spark, location).where(matches).count()
        result = Erased(table.name, target, rows, action if rows else "none")
        found.append(result)
        if not (apply and rows):
            continue
        before = inspect.version(settings, table, "maintain")
        append_only = table.properties.get("delta.appendOnly") == "true"
        if append_only:
            spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ('delta.appendOnly' = 'false')")
        target_table = DeltaTable.forPath(spark, location)
        if change is None:
            target_table.delete(matches)
        else:
            target_table.update(matches, change)  # type: ignore[arg-type]
        if append_only:
            spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ('delta.appendOnly' = 'true')")
        properties = delta.first(target_table.detail().select("properties"))[0] or {}
        if properties.get("delta.enableDeletionVectors") == "true":  # rows only marked deleted stay in their files until purged
            spark.sql(f"REORG TABLE delta.`{location}` APPLY (PURGE)")
        delta.vacuum(spark, location, 0.0)  # no file that only older versions use survives
        inspect.check_written_since(settings, table, before, "maintain")  # every commit it made is its own
        result.applied = True
        log.warning("erased %s of %s from %s: %d rows, %s, older versions vacuumed", column, "the value", table.name, rows, action)
    return found
