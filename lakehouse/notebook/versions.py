"""Time travel: a table's Delta history, the versions builds recorded, and the rows that changed between two versions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from lakehouse import audit, delivery
from lakehouse.notebook.tables import _NULL, _settings, open_dataset, open_table
from lakehouse.settings import Settings
from lakehouse.tables import get

if TYPE_CHECKING:
    pass


def history_frame(name: str, limit: int | None = None, settings: Settings | None = None) -> pd.DataFrame:
    """The table's Delta commits, newest first: version, time, operation, run id and the rows each touched."""
    rows = []
    for commit in open_table(name, settings=settings).history(limit):
        metrics = commit.get("operationMetrics") or {}

        def metric(*keys: str, metrics: dict[str, str] = metrics) -> int | None:
            found = [int(metrics[k]) for k in keys if metrics.get(k) not in (None, "")]
            return found[0] if found else None

        stamp = audit.decode(commit.get("userMetadata"))
        rows.append(
            {
                "version": commit.get("version"),
                "committed_at": pd.to_datetime(commit.get("timestamp"), unit="ms"),
                "operation": commit.get("operation"),
                "run_id": audit.run_of(stamp),
                "role": stamp.get("role"),
                "rows_written": metric("numOutputRows", "num_added_rows"),
                "rows_inserted": metric("numTargetRowsInserted"),
                "rows_updated": metric("numTargetRowsUpdated"),
                "rows_deleted": metric("numTargetRowsDeleted", "numDeletedRows"),
                "files_added": metric("numTargetFilesAdded", "numAddedFiles", "numFiles", "num_added_files"),
                "files_removed": metric("numTargetFilesRemoved", "numRemovedFiles", "num_removed_files"),
            }
        )
    frame = pd.DataFrame(rows)
    return frame.astype({c: "Int64" for c in frame.columns if c.startswith(("rows_", "files_"))})


def recorded_versions(name: str, settings: Settings | None = None) -> list[int]:
    """The versions of a table that recorded builds read or wrote, oldest first."""
    found = set()
    for build in delivery.builds(_settings(settings)):
        for versions in (build["tables_read"], build["tables_written"]):
            if name in versions:
                found.add(int(versions[name]))
    return sorted(found)


def comparison_versions(name: str, settings: Settings | None = None) -> tuple[int, int]:
    """Two versions worth comparing: the oldest and newest a recorded build used, else the previous and the current."""
    recorded = recorded_versions(name, settings)
    if len(recorded) >= 2:
        return recorded[0], recorded[-1]
    current = open_table(name, settings=settings).version()
    return max(current - 1, 0), current


@dataclass(frozen=True)
class VersionDiff:
    """What changed in a table between two versions, by its keys."""

    table: str
    old_version: int
    new_version: int
    keys: tuple[str, ...]
    n_added: int
    n_removed: int
    n_changed: int
    added: pd.DataFrame  # at most `limit` rows
    removed: pd.DataFrame  # at most `limit` rows
    changed: pd.DataFrame  # one row per changed value: the keys, the column, before and after

    def counts(self) -> pd.DataFrame:
        """Rows added, removed and changed, as a small frame."""
        return pd.DataFrame({"change": ["added", "removed", "changed"], "rows": [self.n_added, self.n_removed, self.n_changed]})

    def __str__(self) -> str:
        return f"{self.table} v{self.old_version} -> v{self.new_version}: {self.n_added} added, {self.n_removed} removed, {self.n_changed} changed"


def _changed_files(old_ds: ds.FileSystemDataset, new_ds: ds.FileSystemDataset) -> tuple[pa.Table, pa.Table]:
    """The rows of the files only the old version has, and of the files only the new one has.

    Rows in files that both versions share are identical in both, so only these can differ.
    """
    old_frags, new_frags = list(old_ds.get_fragments()), list(new_ds.get_fragments())
    old_paths, new_paths = {f.path for f in old_frags}, {f.path for f in new_frags}

    def rows(dataset: ds.FileSystemDataset, fragments: list, others: set[str]) -> pa.Table:
        only = [f for f in fragments if f.path not in others]
        return ds.FileSystemDataset(only, dataset.schema, dataset.format, dataset.filesystem).to_table()

    return rows(old_ds, old_frags, new_paths), rows(new_ds, new_frags, old_paths)


def _canonical(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A column as comparable strings, nulls as a marker (nested and binary values as JSON)."""
    t = column.type
    if pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        values = [None if v is None else json.dumps(v, sort_keys=True, default=repr) for v in column.to_pylist()]
        column = pa.chunked_array([pa.array(values, pa.string())])
    return pc.fill_null(pc.cast(column, pa.string()), _NULL)


def _key_strings(rows: pa.Table, keys: tuple[str, ...]) -> pa.ChunkedArray:
    parts = [_canonical(rows.column(k)) for k in keys]
    return parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "\x1f")


def version_diff(name: str, old_version: int, new_version: int, limit: int = 1000, settings: Settings | None = None) -> VersionDiff:
    """The rows added, removed and changed (by the table's keys) between two versions.

    Only the data files that differ between the versions are read; counts are exact, the added
    and removed frames hold at most `limit` rows.
    """
    s, table = _settings(settings), get(name)
    old_rows, new_rows = _changed_files(open_dataset(name, old_version, s), open_dataset(name, new_version, s))
    keys = table.keys or tuple(old_rows.column_names)
    old_keys, new_keys = _key_strings(old_rows, keys), _key_strings(new_rows, keys)
    in_new, in_old = pc.is_in(old_keys, value_set=new_keys.combine_chunks()), pc.is_in(new_keys, value_set=old_keys.combine_chunks())
    removed, added = old_rows.filter(pc.invert(in_new)), new_rows.filter(pc.invert(in_old))
    # rows whose key is in both: rewritten files hold many unchanged rows; compare them value by value
    before = old_rows.filter(in_new).append_column("_key", old_keys.filter(in_new)).sort_by("_key")
    after = new_rows.filter(in_old).append_column("_key", new_keys.filter(in_old)).sort_by("_key")
    if before.num_rows != after.num_rows or not pc.all(pc.equal(before["_key"], after["_key"]), min_count=0).as_py():
        raise ValueError(f"{name} has repeated keys {keys} in v{old_version} or v{new_version}; a diff by key needs unique keys")
    changes = []
    shared = [c for c in before.column_names if c in after.column_names and c not in keys and c != "_key"]
    for column in shared:
        differs = pc.not_equal(_canonical(before[column]), _canonical(after[column])).combine_chunks()
        if not pc.any(differs).as_py():
            continue
        idx = pc.indices_nonzero(differs)
        olds, news = before.take(idx), after.take(idx)
        part = olds.select(list(keys)).to_pandas()
        part["column"], part["before"], part["after"] = column, olds[column].to_pylist(), news[column].to_pylist()
        changes.append(part)
    changed = pd.concat(changes, ignore_index=True) if changes else pd.DataFrame(columns=[*keys, "column", "before", "after"])
    n_changed = int(changed[list(keys)].drop_duplicates().shape[0]) if len(changed) else 0
    return VersionDiff(
        table=name,
        old_version=old_version,
        new_version=new_version,
        keys=tuple(keys),
        n_added=added.num_rows,
        n_removed=removed.num_rows,
        n_changed=n_changed,
        added=added.slice(0, limit).to_pandas(),
        removed=removed.slice(0, limit).to_pandas(),
        changed=changed.sort_values([*keys, "column"], ignore_index=True),
    )
