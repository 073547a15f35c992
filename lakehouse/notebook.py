"""Read-only views of the lake for the notebooks: tables, quarantine, time travel, builds, lineage.

Everything here reads through delta-rs, pyarrow and pandas (no JVM), each table as the least
privileged role that can read it (`ml` for gold, `transform` for bronze and silver, see
`storage.ROLE_GRANTS`), and MLflow through its client. Nothing here writes. Settings come from the
environment (LAKEHOUSE_*), so the same notebooks run against the test stack, the native stack
and docker-compose.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable

from lakehouse import delivery, inspect
from lakehouse.settings import Settings, load_settings
from lakehouse.storage import READ, ROLE_GRANTS, WRITE
from lakehouse.tables import ALL_TABLES, PROGRESS, QUARANTINE, TRAINING_SET, Table, get

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow import MlflowClient
    from mlflow.entities import Run

#: Numeric features of the training set (feature contract v1), in the contract's order; `month` is
#: left out, as each quarter holds its own three months.
FEATURES: tuple[str, ...] = tuple(
    c.name for c in TRAINING_SET.columns if c.type in ("INT", "BIGINT", "DOUBLE") and c.name != "month"
)

_NULL = "\\N"


@cache
def settings() -> Settings:
    """The lakehouse settings from the environment, read once per kernel."""
    return load_settings()


def _settings(given: Settings | None) -> Settings:
    return settings() if given is None else given


def reader_role(table: Table) -> str:
    """The least privileged role that can read the table (a read grant before a write grant)."""
    roles = [r for r, grants in ROLE_GRANTS.items() if r != "admin" and grants.get(table.layer) in (READ, WRITE)]
    if not roles:
        raise LookupError(f"no role may read the {table.layer} bucket")
    return min(roles, key=lambda r: ROLE_GRANTS[r][table.layer] != READ)


def open_table(name: str, version: int | None = None, settings: Settings | None = None) -> DeltaTable:
    """A registered table (as of `version`) through delta-rs; an error when it does not exist yet."""
    s, table = _settings(settings), get(name)
    dt = inspect.open_table(s, table, reader_role(table), version)
    if dt is None:
        raise LookupError(f"{name} does not exist yet at {table.location(s)}")
    return dt


def open_dataset(name: str, version: int | None = None, settings: Settings | None = None) -> ds.Dataset:
    """A registered table (as of `version`) as a pyarrow dataset, read with the least privileged role."""
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


# ---------------------------------------------------------------- tables and layers


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


def table_frame(
    name: str, version: int | None = None, columns: list[str] | None = None, limit: int | None = None, settings: Settings | None = None
) -> pd.DataFrame:
    """A table (as of `version`) as pandas; `limit` reads only that many rows."""
    dataset = open_dataset(name, version, settings)
    rows = dataset.head(limit, columns=columns) if limit is not None else dataset.to_table(columns=columns)
    return rows.to_pandas()


def layer_counts(settings: Settings | None = None) -> pd.DataFrame:
    """Each silver table beside the bronze versions it has read: rows in, published, quarantined, collapsed."""
    s = _settings(settings)
    columns = ["silver_table", "bronze_read", "bronze_rows", "silver_rows", "quarantined", "collapsed"]
    dt = inspect.open_table(s, PROGRESS, reader_role(PROGRESS))
    if dt is None:
        return pd.DataFrame(columns=columns)  # no silver run yet
    progress = inspect.arrow_dataset(s, dt, reader_role(PROGRESS)).to_table().to_pandas()
    per_table: dict[str, int] = {}
    for q in inspect.quarantine_summary(s):
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
    found = inspect.quarantine_summary(_settings(settings))
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


# ---------------------------------------------------------------- time travel


def history_frame(name: str, limit: int | None = None, settings: Settings | None = None) -> pd.DataFrame:
    """The table's Delta commits, newest first: version, time, operation, run id and the rows each touched."""
    rows = []
    for commit in open_table(name, settings=settings).history(limit):
        metrics = commit.get("operationMetrics") or {}

        def metric(*keys: str) -> int | None:
            found = [int(metrics[k]) for k in keys if metrics.get(k) not in (None, "")]
            return found[0] if found else None

        rows.append(
            {
                "version": commit.get("version"),
                "committed_at": pd.to_datetime(commit.get("timestamp"), unit="ms"),
                "operation": commit.get("operation"),
                "run_id": commit.get("userMetadata"),
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


# ---------------------------------------------------------------- builds and training sets


def builds_frame(settings: Settings | None = None) -> pd.DataFrame:
    """The build manifest (`gold._builds`), newest first: quarter, status, versions read and written, digest."""
    return _builds_frame(delivery.builds(_settings(settings)))


def _builds_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for b in records:
        rows.append(
            {
                "build_id": b["build_id"],
                "quarter": b["quarter"],
                "status": b["status"],
                "ended_at": b["ended_at"],
                "training_set_version": b["tables_written"].get(TRAINING_SET.name),
                "training_rows": b["row_counts"].get(TRAINING_SET.name),
                "digest": (b["digest"] or "")[:16],
                "tables_read": ", ".join(f"{k}@v{v}" for k, v in sorted(b["tables_read"].items())),
                "code_version": b["code_version"],
                "mlflow_run_id": b["mlflow_run_id"],
            }
        )
    columns = ["build_id", "quarter", "status", "ended_at", "training_set_version", "training_rows", "digest", "tables_read", "code_version", "mlflow_run_id"]
    return pd.DataFrame(rows, columns=columns).astype({"training_set_version": "Int64", "training_rows": "Int64"})


def latest_builds(settings: Settings | None = None) -> pd.DataFrame:
    """The latest succeeded build of each quarter, quarters in order."""
    latest = delivery.latest_succeeded(delivery.builds(_settings(settings)))
    if not latest:
        raise delivery.BuildNotFound("no succeeded build is recorded yet: run `lakehouse build --all` or `lakehouse backfill --all` first")
    return _builds_frame([latest[q] for q in sorted(latest)])


def label_balance(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows, late flights and the late share per quarter of a training-set frame."""
    grouped = frame.groupby("quarter", sort=True)["is_late"]
    out = pd.DataFrame({"rows": grouped.size(), "late": grouped.sum().astype("int64")})
    out["on_time"] = out["rows"] - out["late"]
    out["late_share"] = (out["late"] / out["rows"]).round(4)
    return out.reset_index()


def plot_label_balance(frame: pd.DataFrame) -> Figure:
    """A bar chart of late and on-time flights per quarter (a matplotlib Figure)."""
    import matplotlib.pyplot as plt

    balance = label_balance(frame)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(balance["quarter"], balance["on_time"], label="on time (is_late = false)", color="#4c78a8")
    ax.bar(balance["quarter"], balance["late"], bottom=balance["on_time"], label="late (is_late = true)", color="#e45756")
    for x, (total, share) in enumerate(zip(balance["rows"], balance["late_share"])):
        ax.annotate(f"{share:.1%} late", (x, total), ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("flights")
    ax.set_title("Label balance per quarter")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_feature_distributions(frame: pd.DataFrame, features: tuple[str, ...] = FEATURES, columns: int = 3) -> Figure:
    """One histogram per feature, a line per quarter (shared bins, normalised), as a matplotlib Figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    quarters = sorted(frame["quarter"].unique())
    rows = -(-len(features) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.8 * rows), squeeze=False)
    for ax, feature in zip(axes.flat, features):
        values = frame[feature].astype("float64")
        finite = values[np.isfinite(values)]
        if finite.empty:
            ax.set_title(f"{feature} (all null)", fontsize=9)
            continue
        if pd.api.types.is_integer_dtype(frame[feature]) and finite.max() - finite.min() <= 60:
            bins = np.arange(finite.min() - 0.5, finite.max() + 1.5)  # one bin per value
        else:
            bins = np.histogram_bin_edges(finite, bins=min(30, max(int(finite.nunique()), 1)))
        for quarter in quarters:
            part = values[(frame["quarter"] == quarter) & np.isfinite(values)]
            if len(part):
                ax.hist(part, bins=bins, density=True, histtype="step", linewidth=1.4, label=quarter)
        nulls = values.isna().mean()
        ax.set_title(f"{feature}" + (f" ({nulls:.0%} null)" if nulls else ""), fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(features) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Feature distributions per quarter (density)")
    fig.tight_layout()
    plt.close(fig)
    return fig


# ---------------------------------------------------------------- lineage


def _tracking() -> ModuleType:
    """`lakehouse.tracking` (and MLflow), imported without tqdm's notebook-widget warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        from lakehouse import tracking
    return tracking


def experiment() -> str:
    """The MLflow experiment that holds one run per build."""
    return _tracking().EXPERIMENT


def _mlflow_client(s: Settings) -> MlflowClient:
    _tracking()
    from mlflow import MlflowClient
    from mlflow.entities import Run

    return MlflowClient(tracking_uri=s.mlflow_uri)


def _build_runs(s: Settings) -> list[Run]:
    """The runs of the build experiment, oldest first, with their dataset inputs (one request)."""
    client = _mlflow_client(s)
    found = client.get_experiment_by_name(experiment())
    if found is None:
        return []
    return list(client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"], max_results=5000))


def runs_frame(settings: Settings | None = None) -> pd.DataFrame:
    """The MLflow runs of the build experiment, oldest first: build, quarter, status, rows, gates."""
    columns = ["run_id", "build_id", "quarter", "status", "started_at", "training_rows", "gates_passed", "gates_failed", "code_version"]
    rows = []
    for run in _build_runs(_settings(settings)):
        tags, metrics = run.data.tags, run.data.metrics
        rows.append(
            {
                "run_id": run.info.run_id,
                "build_id": tags.get("build_id"),
                "quarter": tags.get("quarter"),
                "status": run.info.status,
                "started_at": pd.to_datetime(run.info.start_time, unit="ms"),
                "training_rows": metrics.get(f"rows.{TRAINING_SET.name}"),
                "gates_passed": metrics.get("gates.passed"),
                "gates_failed": metrics.get("gates.failed"),
                "code_version": tags.get("code_version"),
            }
        )
    return pd.DataFrame(rows, columns=columns).astype({"training_rows": "Int64", "gates_passed": "Int64", "gates_failed": "Int64"})


def lineage(settings: Settings | None = None) -> pd.DataFrame:
    """Each run's dataset inputs (name, context, Delta version, digest) beside what `gold._builds` recorded.

    `in_manifest` says whether `gold._builds` lists the run's build; `manifest_version` is the
    version its manifest row names for the table (written for the training set, read for the
    sources); `agrees` says whether MLflow and the manifest tell the same story (for the training
    set, the digest too).
    """
    s = _settings(settings)
    manifest = {b["mlflow_run_id"]: b for b in delivery.builds(s) if b["mlflow_run_id"]}
    rows = []
    for order, run in enumerate(_build_runs(s)):
        build = manifest.get(run.info.run_id)
        for item in run.inputs.dataset_inputs:
            tags = {t.key: t.value for t in item.tags}
            source = json.loads(item.dataset.source)
            context = tags.get("mlflow.data.context")
            version = source.get("delta_table_version")
            recorded, digest_ok = None, True
            if build is not None:
                recorded = (build["tables_written"] if context == "training" else build["tables_read"]).get(item.dataset.name)
                if context == "training":
                    digest_ok = (build["digest"] or "").startswith(item.dataset.digest)
            rows.append(
                {
                    "_run": order,
                    "run_id": run.info.run_id,
                    "build_id": run.data.tags.get("build_id"),
                    "quarter": run.data.tags.get("quarter"),
                    "dataset": item.dataset.name,
                    "context": context,
                    "delta_version": version,
                    "digest": item.dataset.digest,
                    "in_manifest": build is not None,
                    "manifest_version": recorded,
                    "agrees": build is not None and recorded == version and digest_ok,
                }
            )
    columns = ["_run", "run_id", "build_id", "quarter", "dataset", "context", "delta_version", "digest", "in_manifest", "manifest_version", "agrees"]
    frame = pd.DataFrame(rows, columns=columns).astype({"delta_version": "Int64", "manifest_version": "Int64"})
    # runs oldest first; within a run the training set first, then its sources by name
    frame["_source"] = frame["context"] != "training"
    return frame.sort_values(["_run", "_source", "dataset"], ignore_index=True).drop(columns=["_run", "_source"])
