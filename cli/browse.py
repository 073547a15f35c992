"""`lakehouse tables`, `history`, `export`, `builds`: reading what the lakehouse holds, without Spark."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.preflight import settings_needing
from cli.render import err, summary
from lakehouse import delivery, inspect, quality, tables
from lakehouse.settings import Settings


def list_tables(as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """Every registered table that exists, with its Delta version and row count."""
    found = inspect.overview(settings_needing("s3"))
    if as_json:
        print(json.dumps(found))
        return
    summary("tables", ["name", "layer", "version", "rows", "location"], [[t["name"], t["layer"], t["version"], t["rows"], t["location"]] for t in found])


def history(
    table: Annotated[Optional[str], typer.Argument(help="Registered table name, e.g. bronze.bts_flights (default: every table).")] = None,
    limit: Annotated[int, typer.Option(help="Newest commits to show.")] = 20,
    run: Annotated[Optional[str], typer.Option("--run", help="Only the commits of this run id (e.g. build-20261207T101500Z-3fa2c1).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Delta history with each commit's run, role and step: one table's, or every table's (the audit trail)."""
    settings = settings_needing("s3")
    commits = inspect.history(settings, tables.get(table), limit, run) if table else inspect.history_all(settings, limit, run)
    if as_json:
        print(json.dumps(commits))
        return
    summary(
        table or "every table, newest first",
        ["table", "version", "timestamp", "operation", "run", "role", "step", "metrics"],
        [[c["table"], c["version"], c["timestamp"], c["operation"], c["run"] or "", c["role"] or "", c["step"] or "", c["metrics"][:60]] for c in commits],
    )


def export(
    table: Annotated[Optional[str], typer.Argument(help="Registered table name (or use --quarter for a training set).")] = None,
    to: Annotated[Path, typer.Option("--to", help="Local Parquet file to write.")] = Path("export.parquet"),
    version: Annotated[Optional[int], typer.Option(help="Delta version of TABLE (default: latest).")] = None,
    quarter: Annotated[Optional[str], typer.Option(help="Export the training set of this quarter, as a recorded build wrote it.")] = None,
    build: Annotated[str, typer.Option(help="With --quarter: a build id, or latest.")] = "latest",
) -> None:
    """Write a table (as of a version), or a recorded training set (digest verified), to one local Parquet file."""
    import pyarrow.parquet as pq

    settings = settings_needing("s3")
    t0 = time.monotonic()
    if quarter:
        record = delivery.resolve(settings, quarter, build)
        rows = delivery.read_arrow(settings, record)
        to.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, to)
        err.print(f"wrote {rows.num_rows:,} rows of {quarter} (build {record['build_id']}, digest {record['digest'][:16]}... verified) to {to} in {time.monotonic() - t0:.1f} s")
        return
    if not table:
        raise typer.BadParameter("give a TABLE or --quarter")
    rows = inspect.export(settings, tables.get(table), to, version)
    err.print(f"wrote {rows:,} rows of {table}{'' if version is None else f' v{version}'} to {to} in {time.monotonic() - t0:.1f} s")


def list_builds(as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """Every recorded build, newest first (read as the ml role)."""
    settings = settings_needing("s3")
    found = delivery.builds(settings)
    if as_json:
        print(json.dumps(found, default=str))
        return
    summary(
        "builds (newest first)",
        ["build", "quarter", "status", "training rows", "digest", "training_set version", "code", "ended"],
        [
            [b["build_id"], b["quarter"], b["status"], b["row_counts"].get("gold.training_set", 0), (b["digest"] or "-")[:16],
             b["tables_written"].get("gold.training_set", "-"), b["code_version"][:12], str(b["ended_at"])[:19]]
            for b in found
        ],
    )  # fmt: skip
    print_mlflow(settings)


def drift(
    quarter: Annotated[str, typer.Argument(help="The quarter, e.g. 2001Q2.")],
    build: Annotated[str, typer.Option(help="A build id of the quarter, or latest (of any status: a blocked build shows why).")] = "latest",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Each feature's drift in a build of QUARTER against the latest build of the quarter before (read as the reader role)."""
    settings = settings_needing("s3")
    record = delivery.resolve(settings, quarter, build, role="reader", succeeded_only=False)
    report = quality.drift_report(settings, record)
    found = {"build_id": record["build_id"], "status": record["status"], **report}
    if as_json:
        print(json.dumps(found))
        return
    ref = report["reference"]
    if ref is None:
        err.print(f"{quarter} (build {record['build_id']}): {report['reason']}")
        return
    warn, block = report["warn_psi"], report["block_psi"] if report["block_psi"] is not None else float("inf")  # None: never blocks
    summary(
        f"drift of {quarter} (build {record['build_id']}, {report['rows']:,} rows) against {ref['quarter']} "
        f"({ref['source']}{' ' + ref['build_id'] if ref['build_id'] else ''}, {ref['rows']:,} rows)",
        ["feature", "kind", "PSI", "null rate", "null rate before", "verdict"],
        [
            [f["feature"], f["kind"], f"{f['psi']:.4f}", _rate(f["null_rate"]), _rate(f["reference_null_rate"]), f["verdict"]]
            for f in report["features"]
        ],
    )  # fmt: skip
    err.print(f"the build's thresholds: PSI above {warn:g} warns, above {block:g} blocks (config/quality.toml, section gates.drift); MLflow run {record['mlflow_run_id']}")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def print_mlflow(settings: Settings) -> None:
    from lakehouse.tracking import EXPERIMENT

    err.print(f"MLflow UI: {settings.mlflow_uri}/#/experiments (experiment {EXPERIMENT}: one run per build, its Delta inputs under Datasets)")
    if settings.mlflow_is_local:
        err.print(f"  log in as reader, jobs or admin: passwords LAKEHOUSE_MLFLOW_<USER>_PASSWORD in {settings.secrets_file}")
