"""Opening the lake's tables as the notebooks' read-only role, and the tables, layers and quarantine as frames."""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.dataset as ds
from deltalake import DeltaTable

from lakehouse import inspect
from lakehouse.settings import Settings, load_settings
from lakehouse.storage import NOTEBOOK_ROLES, READ, ROLE_GRANTS
from lakehouse.tables import ALL_TABLES, PROGRESS, QUARANTINE, Table, get

if TYPE_CHECKING:
    pass


_NULL = "\\N"


@cache
def settings() -> Settings:
    """The lakehouse settings from the environment, read once per kernel."""
    return load_settings()


def _settings(given: Settings | None) -> Settings:
    return settings() if given is None else given


def reader_role(table: Table) -> str:
    """The notebooks' role that reads the table: `reader` (read-only, every layer), `ml` for gold where it is the only one."""
    roles = [r for r in NOTEBOOK_ROLES if ROLE_GRANTS[r].get(table.layer) == READ]
    if not roles:
        raise LookupError(f"no role of the notebooks ({', '.join(NOTEBOOK_ROLES)}) may read the {table.layer} bucket")
    return roles[0]


def open_table(name: str, version: int | None = None, settings: Settings | None = None) -> DeltaTable:
    """A registered table (as of `version`) through delta-rs; an error when it does not exist yet."""
    s, table = _settings(settings), get(name)
    dt = inspect.open_table(s, table, reader_role(table), version)
    if dt is None:
        raise LookupError(f"{name} does not exist yet at {table.location(s)}")
    return dt


def open_dataset(name: str, version: int | None = None, settings: Settings | None = None) -> ds.Dataset:
    """A registered table (as of `version`) as a pyarrow dataset, read as the notebooks' read-only role."""
    s = _settings(settings)
    return inspect.arrow_dataset(s, open_table(name, version, s), reader_role(get(name)))


def setup_display() -> None:
    """Pandas display options for lake tables: whole 64-character keys, wide and long frames."""
    pd.set_option("display.max_colwidth", 80)
    pd.set_option("display.max_rows", 200)
    pd.set_option("display.max_columns", 40)
    pd.set_option("display.width", 200)


def describe(settings: Settings | None = None) -> pd.DataFrame:
    """Where the notebooks read from (endpoints and buckets; no secrets)."""
    s = _settings(settings)
    rows = [("S3 endpoint", s.s3_endpoint), ("MLflow", s.mlflow_uri), ("home", str(s.home))]
    rows += [(f"bucket {logical}", s.bucket(logical)) for logical in ("bronze", "silver", "gold")]
    return pd.DataFrame(rows, columns=["setting", "value"])


def tables_frame(settings: Settings | None = None) -> pd.DataFrame:
    """Every registered table that exists: name, layer, Delta version, rows (from the log), last commit."""
    s = _settings(settings)
    rows = []
    for table in ALL_TABLES:
        dt = inspect.open_table(s, table, reader_role(table))
        if dt is None:
            continue
        [last] = dt.history(1)
        rows.append(
            {
                "table": table.name,
                "layer": table.layer,
                "version": dt.version(),
                "rows": inspect.row_count(dt),
                "last_operation": last.get("operation"),
                "last_commit": pd.to_datetime(last.get("timestamp"), unit="ms"),
            }
        )
    return pd.DataFrame(rows, columns=["table", "layer", "version", "rows", "last_operation", "last_commit"])


def table_rows(name: str, version: int | None = None, settings: Settings | None = None) -> int:
    """Rows of a table (as of `version`), from the file statistics in the Delta log."""
    return inspect.row_count(open_table(name, version, settings))


def table_frame(name: str, version: int | None = None, columns: list[str] | None = None, limit: int | None = None, settings: Settings | None = None) -> pd.DataFrame:
    """A table (as of `version`) as pandas; `limit` reads only that many rows."""
    dataset = open_dataset(name, version, settings)
    rows = dataset.head(limit, columns=columns) if limit is not None else dataset.to_table(columns=columns)
    return rows.to_pandas()


def layer_counts(settings: Settings | None = None) -> pd.DataFrame:
    """Each silver table beside the bronze versions it has read: rows in, published, quarantined, collapsed."""
    s = _settings(settings)
    columns = ["silver_table", "bronze_read", "bronze_rows", "silver_rows", "quarantined", "collapsed"]
    done = inspect.progress(s, reader_role(PROGRESS))
    if not done:
        return pd.DataFrame(columns=columns)  # no silver run yet
    progress = pd.DataFrame([{"consumer": c, "source_table": t, "last_version": v} for (c, t), v in done.items()])
    per_table: dict[str, int] = {}
    for q in inspect.quarantine_summary(s, reader_role(QUARANTINE)):
        per_table[q["table"]] = per_table.get(q["table"], 0) + q["rows"]
    rows = []
    for consumer, reads in progress.groupby("consumer", sort=True):
        bronze_rows = sum(table_rows(r.source_table, int(r.last_version), s) for r in reads.itertuples())
        silver_rows = table_rows(consumer, settings=s)
        n_quarantined = int(per_table.get(consumer, 0))
        rows.append(
            {
                "silver_table": consumer,
                "bronze_read": ", ".join(f"{r.source_table}@v{int(r.last_version)}" for r in reads.sort_values("source_table").itertuples()),
                "bronze_rows": bronze_rows,
                "silver_rows": silver_rows,
                "quarantined": n_quarantined,
                # duplicates, superseded deliveries, conflicts and rows merged into one key
                "collapsed": bronze_rows - silver_rows - n_quarantined,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _unresolved_quarantine(s: Settings) -> pd.DataFrame:
    dt = inspect.open_table(s, QUARANTINE, reader_role(QUARANTINE))
    if dt is None:
        return pd.DataFrame(columns=QUARANTINE.column_names)
    return inspect.arrow_dataset(s, dt, reader_role(QUARANTINE)).to_table(filter=ds.field("resolved_at").is_null()).to_pandas()


def quarantine_frame(settings: Settings | None = None) -> pd.DataFrame:
    """Unresolved quarantined rows per silver table and rule (the first rule each row failed)."""
    found = inspect.quarantine_summary(_settings(settings), reader_role(QUARANTINE))
    return pd.DataFrame(found, columns=["table", "rule", "rows", "first_quarantined_at", "last_run_id"])


def quarantine_examples(settings: Settings | None = None) -> pd.DataFrame:
    """One unresolved quarantined row per table and rule: where it came from and the raw bronze line."""
    rows = _unresolved_quarantine(_settings(settings))
    columns = ["table_name", "rule_id", "failed_rules", "source_object", "row_number", "raw_row"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    first = rows.sort_values(["table_name", "rule_id", "source_object", "row_number"]).groupby(["table_name", "rule_id"]).head(1)
    first = first.assign(failed_rules=first["failed_rules"].map(lambda r: ", ".join(r)), raw_row=first["raw_row"].map(_source_fields))
    return first[columns].reset_index(drop=True)


def _source_fields(raw_row: str) -> str:
    """The source's own fields of a raw bronze row (its JSON without the bookkeeping columns)."""
    fields = {k: v for k, v in json.loads(raw_row).items() if not k.startswith("_") or k == "_raw_line"}
    return json.dumps(fields, separators=(",", ":"))
