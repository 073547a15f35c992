"""Delivery to the ML frontend: any recorded training set, back bit for bit, digest verified.

`load_training_set` looks the build up in the manifest (`gold._builds`), reads the training set by
time travel at the Delta version that build wrote, recomputes the content digest and refuses rows
whose digest differs from the recorded one. Two paths return the same rows: Spark (for large
reads on a cluster) and delta-rs/pyarrow (no JVM: notebooks and model code). Both need only the
`ml` identity, which can read the gold bucket and write nothing.
"""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
import pyarrow.dataset as ds

from lakehouse import digest, inspect
from lakehouse.errors import UserError
from lakehouse.settings import Settings
from lakehouse.tables import BUILDS, TRAINING_SET


class BuildNotFound(UserError):
    """No recorded build matches the request."""


class DigestMismatch(UserError):
    """The rows read back do not have the digest the build recorded."""


def builds(settings: Settings, role: str = "ml") -> list[dict[str, Any]]:
    """Every recorded build, newest first (read with delta-rs)."""
    dt = inspect.open_table(settings, BUILDS, role)
    if dt is None:
        return []
    rows = inspect.arrow_dataset(settings, dt, role).to_table().to_pylist()
    for row in rows:
        for column in ("tables_read", "tables_written", "row_counts", "gate_reports"):
            row[column] = dict(row[column] or [])
    return sorted(rows, key=lambda r: r["ended_at"], reverse=True)


def latest_succeeded(recorded: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The latest succeeded build of each quarter, by quarter, from `builds()` rows (newest first)."""
    latest: dict[str, dict[str, Any]] = {}
    for b in recorded:
        if b["status"] == "SUCCEEDED":
            latest.setdefault(b["quarter"], b)
    return latest


def resolve(settings: Settings, quarter: str, build: str = "latest", role: str = "ml", succeeded_only: bool = True) -> dict[str, Any]:
    """The manifest row of a build: the latest succeeded build of the quarter, or the one named.

    With `succeeded_only` False, the latest build of any status (or the one named, even failed).
    """
    recorded = builds(settings, role)
    if build == "latest":
        found = latest_succeeded(recorded).get(quarter) if succeeded_only else next((b for b in recorded if b["quarter"] == quarter), None)
        if found is None:
            raise BuildNotFound(f"no {'succeeded ' if succeeded_only else ''}build of {quarter} is recorded; run `lakehouse build --quarter {quarter}`")
        return found
    for b in recorded:
        if b["build_id"] == build:
            if b["quarter"] != quarter:
                raise BuildNotFound(f"build {build} is of {b['quarter']}, not {quarter}")
            if succeeded_only and b["status"] != "SUCCEEDED":
                raise BuildNotFound(f"build {build} {b['status']}: {b['error']}")
            return b
    raise BuildNotFound(f"no build {build!r} is recorded; `lakehouse builds` lists them")


def _check(found: str, record: dict[str, Any]) -> None:
    if found != record["digest"]:
        raise DigestMismatch(
            f"training set of build {record['build_id']} has digest {found[:16]}..., the manifest recorded "
            f"{record['digest'][:16]}...: the data at {TRAINING_SET.name} v{record['tables_written'][TRAINING_SET.name]} changed"
        )


def read_arrow(settings: Settings, record: dict[str, Any], role: str = "ml") -> pa.Table:
    """A build's training rows through delta-rs and pyarrow (no Spark), digest verified."""
    version = record["tables_written"][TRAINING_SET.name]
    dt = inspect.open_table(settings, TRAINING_SET, role, version)
    if dt is None:
        raise BuildNotFound(f"{TRAINING_SET.name} does not exist at {TRAINING_SET.location(settings)}")
    table = inspect.arrow_dataset(settings, dt, role).to_table(filter=ds.field("quarter") == record["quarter"])
    table = table.select(TRAINING_SET.column_names)
    _check(digest.arrow_digest(table), record)
    return table


def read_spark(spark, settings: Settings, record: dict[str, Any]):
    """A build's training rows as a Spark DataFrame (time travel), digest verified."""
    from pyspark.sql import functions as F

    from lakehouse import delta
    from lakehouse.spark import session_conf

    version = record["tables_written"][TRAINING_SET.name]
    # Delta refuses time travel past the deleted-file retention, as VACUUM may have removed the
    # files; `lakehouse maintain` never removes a recorded build's files, and the digest proves it
    with session_conf(spark, "spark.databricks.delta.vacuum.enforceTimeTravelWithinDeletedFileRetentionDuration", "false"):
        df = delta.read(spark, TRAINING_SET.location(settings), version).where(F.col("quarter") == record["quarter"])
        _check(digest.spark_digest(df), record)
    return df


def load_training_set(
    quarter: str,
    build: str = "latest",
    as_: Literal["spark", "pandas", "arrow"] = "pandas",
    settings: Settings | None = None,
    spark: Any = None,
):
    """The training set of `quarter` as a recorded build wrote it (`build`: "latest" or a build id).

    `as_="spark"` uses the given SparkSession (or starts one as the `ml` role); "pandas" and
    "arrow" read through delta-rs without a JVM. The content digest is always checked.
    """
    if settings is None:
        from lakehouse.settings import load_settings

        settings = load_settings()
    record = resolve(settings, quarter, build)
    if as_ == "spark":
        if spark is None:
            from lakehouse.spark import build_session

            spark = build_session(settings, ["ml"], app_name=f"lakehouse-delivery-{quarter}")
        return read_spark(spark, settings, record)
    table = read_arrow(settings, record)
    if as_ == "arrow":
        return table
    if as_ == "pandas":
        return table.to_pandas()
    raise ValueError(f"as_ must be 'spark', 'pandas' or 'arrow', not {as_!r}")
