"""The `lakehouse` command: services, landing, ingestion, inspection.

Every command builds Settings once, shows progress on long work (on stderr) and ends with a
summary; `--json` variants print machine-readable results on stdout and nothing else there.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from lakehouse import inspect, landing, quarters, services, tables
from lakehouse.errors import UserError
from lakehouse.settings import Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="A batch lakehouse on Delta Lake.")
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _settings() -> Settings:
    return load_settings()


def run_id(kind: str, started: datetime) -> str:
    """A sortable, unique run id such as ingest-20261125T101500Z-3fa2c1."""
    return f"{kind}-{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=err, transient=False,
    )  # fmt: skip


def _summary(title: str, columns: list[str], rows: list[list[object]]) -> None:
    """A closing summary table on stderr; integer columns are right-aligned with separators."""
    table = RichTable(title=title, title_justify="left")
    for i, column in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], int) for r in rows)
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    err.print(table)


# ---------------------------------------------------------------- services


@app.command()
def up(jupyter: Annotated[bool, typer.Option("--jupyter", help="Also start JupyterLab on 127.0.0.1 (token in <home>/jupyter_token).")] = False) -> None:
    """Start the local services (S3 server, MLflow, Airflow) on 127.0.0.1 and create the buckets."""
    settings = _settings()
    if settings.s3_is_local and services.generate_secrets(settings.secrets_file):
        err.print(f"generated local credentials in {settings.secrets_file} (mode 600, git-ignored)")
        settings = _settings()
    t0 = time.monotonic()
    services.up(settings, lambda name, msg: err.print(f"[bold]{name}[/bold]: {msg}"), jupyter=jupyter)
    _print_status(settings)
    if settings.airflow_is_local:
        err.print(f"Airflow UI: {settings.airflow_url} (user admin, password in {services.airflow_password_file(settings)})")
    if jupyter:
        err.print(f"JupyterLab: {services.JUPYTER.url(settings)} (token in {services.jupyter_token_file(settings)})")
    err.print(f"up in {time.monotonic() - t0:.1f} s; data and logs under {settings.home}")


@app.command()
def down() -> None:
    """Stop the local services that `up` started."""
    settings = _settings()
    services.down(settings, lambda name, msg: err.print(f"[bold]{name}[/bold]: {msg}"))


def _print_status(settings: Settings) -> list[services.ServiceStatus]:
    found = services.status(settings)
    _summary(
        "services",
        ["service", "url", "healthy", "pid"],
        [[s.name, s.url, "yes" if s.healthy else "NO", str(s.pid) if s.pid else ("external" if not s.managed else "-")] for s in found],
    )
    return found


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """Show each service, its URL and its health."""
    settings = _settings()
    found = services.status(settings)
    if as_json:
        print(json.dumps({"services": {s.name: {"url": s.url, "healthy": s.healthy, "pid": s.pid} for s in found}}))
    else:
        _print_status(settings)
    if not all(s.healthy for s in found):
        raise typer.Exit(1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def airflow(ctx: typer.Context) -> None:
    """Run the `airflow` CLI against the local Airflow (e.g. `lakehouse airflow dags list`)."""
    import subprocess

    settings = _settings()
    argv = [services._bin("airflow"), *ctx.args]
    raise typer.Exit(subprocess.run(argv, env=services.airflow_env(settings), cwd=services.airflow_home(settings)).returncode)


# ---------------------------------------------------------------- landing and ingestion


def _months(month: list[str] | None, start: str | None, end: str | None) -> set[str] | None:
    if start or end:
        if not (start and end):
            raise typer.BadParameter("--from and --to go together")
        first, last = datetime.strptime(start, "%Y-%m"), datetime.strptime(end, "%Y-%m")
        months, y, m = set(), first.year, first.month
        while (y, m) <= (last.year, last.month):
            months.add(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return months | set(month or [])
    return set(month) if month else None


@app.command()
def land(
    feed: Annotated[Optional[list[str]], typer.Option(help="Feed(s) to land (default: all).")] = None,
    month: Annotated[Optional[list[str]], typer.Option(help="Month(s) yyyy-MM of the monthly feeds.")] = None,
    start: Annotated[Optional[str], typer.Option("--from", help="First month yyyy-MM of a range.")] = None,
    end: Annotated[Optional[str], typer.Option("--to", help="Last month yyyy-MM of a range.")] = None,
    sample_every: Annotated[int, typer.Option(help="Keep every n-th data line (small slices for tests).")] = 1,
) -> None:
    """Export the demo sources into the landing bucket as monthly extracts and snapshots."""
    settings = _settings()
    months = _months(month, start, end)
    results, t0 = [], time.monotonic()
    with _progress() as progress:
        task = progress.add_task("preparing extracts", total=None)
        for extract in landing.extracts(settings, feed, months, sample_every):
            progress.update(task, description=f"landing {extract.key}")
            results.append(landing.upload(settings, extract))
            progress.advance(task)
        progress.update(task, description="landed", total=len(results))
    seconds = time.monotonic() - t0
    _summary(
        f"landing: {sum(r.uploaded for r in results)} uploaded, {sum(not r.uploaded for r in results)} unchanged, {seconds:.1f} s",
        ["object", "rows", "bytes", "uploaded"],
        [[r.key, r.rows, r.size, "yes" if r.uploaded else "unchanged"] for r in results],
    )


@app.command()
def ingest(feed: Annotated[Optional[list[str]], typer.Option(help="Bronze feed(s) (default: all).")] = None) -> None:
    """Ingest new landing objects into bronze, exactly once."""
    from bronze import ingest as bronze_ingest
    from lakehouse.spark import build_session

    settings = _settings()
    started = datetime.now(timezone.utc).replace(microsecond=0)
    rid = run_id("ingest", started)
    t0 = time.monotonic()
    selected = [t for t in tables.BRONZE_TABLES if feed is None or t.short_name in feed or t.name in feed]
    with _progress() as progress:
        task = progress.add_task("starting Spark", total=len(selected))
        spark = build_session(settings, ["ingest"], app_name=f"lakehouse-{rid}")
        spark_s = time.monotonic() - t0
        reports = []

        def on_feed(report: bronze_ingest.FeedReport) -> None:
            reports.append(report)
            progress.advance(task)
            progress.update(task, description=f"ingested {report.table}")

        progress.update(task, description="ingesting")
        bronze_ingest.run(spark, settings, rid, started, feed, on_feed=on_feed)
    _summary(
        f"ingest {rid}: {sum(r.objects for r in reports)} objects, {sum(r.rows for r in reports):,} rows, "
        f"{time.monotonic() - t0:.1f} s (Spark start {spark_s:.1f} s)",
        ["table", "objects", "rows", "malformed", "recovered", "version", "seconds"],
        [
            [r.table, r.objects, r.rows, r.malformed, r.recovered_objects, "-" if r.bronze_version is None else r.bronze_version, f"{r.seconds:.1f}"]
            for r in reports
        ],
    )


# ---------------------------------------------------------------- silver and gold


def _silver_rows(results) -> list[list[object]]:
    rows = []
    for r in results:
        if r.skipped:
            rows.append([r.table, 0, 0, 0, 0, 0, 0, "-", "-", "-", "no new rows", f"{r.seconds:.1f}"])
            continue
        f = r.fates
        rows.append([
            r.table, r.input_rows, f.get("staged", 0), f.get("duplicate", 0), f.get("conflict", 0) + f.get("merged", 0),
            f.get("quarantined", 0), f.get("superseded", 0),
            r.merge.get("numTargetRowsInserted", 0), r.merge.get("numTargetRowsUpdated", 0), r.merge.get("numTargetRowsDeleted", 0),
            f"v{r.version} {'balanced' if r.balanced else 'NOT BALANCED'}", f"{r.seconds:.1f}",
        ])  # fmt: skip
    return rows


def _print_builds(settings: Settings, report) -> None:
    rows = [
        [g.quarter, g.build_id or f"up to date: {g.skipped_as}", (g.digest or "")[:16], g.mlflow_run_id or "-"]
        for g in report.gold
    ]
    if rows:
        _summary("builds", ["quarter", "build", "digest", "MLflow run"], rows)
        _print_mlflow(settings)


def print_build_summary(report, total_seconds: float) -> None:
    """Rows in and out per layer, quarantine per rule, gates, Delta versions, seconds per step."""
    _summary(
        f"silver (run {report.run_id}): input = staged + duplicate + conflict/merged + quarantined + superseded",
        ["table", "input", "staged", "duplicate", "conflict/merged", "quarantined", "superseded", "inserted", "updated", "deleted", "version", "seconds"],
        _silver_rows(report.silver),
    )
    by_rule = [[r.table, rule, n] for r in report.silver for rule, n in sorted(r.quarantined_by_rule.items())]
    if by_rule:
        _summary("quarantined this run, by rule", ["table", "rule", "rows"], by_rule)
    built = [g for g in report.gold if g.skipped_as is None]
    if built:
        _summary(
            "gold, built in one pass (rows per quarter; training rows = eligible silver flights)",
            ["quarter", "eligible", "training_set", "route_daily", "airport_daily", "versions (ts/route/airport)", "built because"],
            [
                [
                    g.quarter, g.eligible_rows, g.rows.get("gold.training_set", 0), g.rows.get("gold.route_daily", 0), g.rows.get("gold.airport_daily", 0),
                    "/".join(str(g.versions.get(t, "-")) for t in ("gold.training_set", "gold.route_daily", "gold.airport_daily")), g.stale_reason or "-",
                ]
                for g in built
            ],
        )  # fmt: skip
    gates = sum(len(r.gates) for r in report.silver) + sum(len(g.gates) for g in report.gold)
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
    started = "" if "spark start" in report.seconds else "no Spark started (nothing new); "
    err.print(f"{gates} gates passed; {started}{steps}; total {total_seconds:.1f} s")


def _wanted_quarters(settings: Settings, given: list[str] | None, all_quarters: bool) -> list[str]:
    """The quarters named, and with --all every quarter whose three months are ingested (read with delta-rs)."""
    from lakehouse import jobs

    if not given and not all_quarters:
        raise typer.BadParameter("give --quarter (repeatable) or --all")
    wanted = set(given or [])
    for q in wanted:
        try:
            quarters.parse(q)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    if all_quarters:
        months = jobs.months_ingested(settings)
        ready = set(quarters.complete(months))
        partial = sorted({quarters.of_month(m) for m in months} - ready)
        if partial:
            err.print(f"not built (fewer than three months ingested): {', '.join(partial)}")
        wanted |= ready
    if not wanted:
        raise UserError("no quarter has all three months ingested: run `lakehouse land` and `lakehouse ingest` first")
    return sorted(wanted)


@app.command()
def build(
    quarter: Annotated[Optional[list[str]], typer.Option(help="Quarter(s) to build, e.g. 2001Q1.")] = None,
    all_quarters: Annotated[bool, typer.Option("--all", help="Every quarter whose three months are ingested.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild quarters that are up to date.")] = False,
) -> None:
    """Silver for the new bronze rows, then gold for the stale quarter(s) in one pass, each behind its gates; every build is recorded."""
    from lakehouse import build as builder
    from lakehouse import jobs

    settings = _settings()
    wanted = _wanted_quarters(settings, quarter, all_quarters)
    started = datetime.now(timezone.utc).replace(microsecond=0)
    rid = run_id("build", started)
    t0 = time.monotonic()
    with _progress() as progress:
        task = progress.add_task("planning (Delta logs, build manifest)", total=len(builder.SILVER_JOBS) + len(wanted))

        def on_silver(r) -> None:
            progress.advance(task)
            progress.update(task, description=f"silver: {r.table} done")
            err.print(f"silver: {r.table} " + ("no new rows" if r.skipped else f"{r.input_rows:,} rows in {r.seconds:.1f} s"))

        def on_gold(g) -> None:
            progress.advance(task)
            progress.update(task, description=f"gold: {g.quarter} done")

        report = jobs.build_step(wanted, rid, started, force=force, settings=settings, on_silver=on_silver, on_gold=on_gold)
    print_build_summary(report, time.monotonic() - t0)
    _print_builds(settings, report)


@app.command()
def backfill(
    quarter: Annotated[Optional[list[str]], typer.Option(help="Quarter(s) to build, e.g. 2013Q1.")] = None,
    all_quarters: Annotated[bool, typer.Option("--all", help="Every quarter whose three months are ingested.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild quarters that are up to date.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the runs.")] = 7200,
) -> None:
    """Build quarters through Airflow: backfill lakehouse_quarterly_build and wait for its runs."""
    from lakehouse import orchestrate

    settings = _settings()
    wanted = _wanted_quarters(settings, quarter, all_quarters)
    t0 = time.monotonic()
    client = orchestrate.AirflowClient(settings)
    err.print(f"building {', '.join(wanted)} through Airflow: {settings.airflow_url}/dags/{orchestrate.BUILD_DAG}")
    with _progress() as progress:
        task = progress.add_task("waiting for Airflow", total=len(wanted))

        def on_backfill(backfill_id: int, first, last) -> None:
            err.print(f"Airflow backfill {backfill_id}: quarters starting {first} to {last}")

        def on_update(runs) -> None:
            done = [r for r in runs.values() if r.state in orchestrate.TERMINAL]
            progress.update(task, completed=len(done), description="Airflow: " + ", ".join(f"{q} {r.state}" for q, r in sorted(runs.items())))

        def on_task(done) -> None:
            took = "" if done.seconds is None else f" in {done.seconds:.0f} s"
            again = f" (try {done.try_number})" if done.try_number > 1 else ""
            err.print(f"{done.quarter}: task {done.task_id} {done.state}{took}{again}")

        runs = orchestrate.run_quarters(client, wanted, force, timeout, on_update, on_backfill, on_task)
    _summary(
        f"quarterly builds through Airflow: {time.monotonic() - t0:.1f} s",
        ["quarter", "Airflow run", "state", "seconds"],
        [[q, r.run_id, r.state, "-" if r.seconds is None else f"{r.seconds:.0f}"] for q, r in sorted(runs.items())],
    )
    err.print(f"Airflow UI: {settings.airflow_url}/dags/{orchestrate.BUILD_DAG} (user admin, password in {services.airflow_password_file(settings)})")
    failed = {q: orchestrate.failed_tasks(client, r.run_id) for q, r in runs.items() if r.state != "success"}
    if failed:
        raise UserError("Airflow runs failed: " + "; ".join(f"{q}: {', '.join(t) or 'see the UI'}" for q, t in failed.items()))


quarantine_app = typer.Typer(help="Rows that failed a silver rule, and replaying them.")
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.callback(invoke_without_command=True)
def quarantine(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """List the unresolved quarantined rows by table and rule."""
    if ctx.invoked_subcommand is not None:
        return
    found = inspect.quarantine_summary(_settings())
    if as_json:
        print(json.dumps(found))
        return
    _summary("quarantine (unresolved)", ["table", "rule", "rows", "first quarantined", "last run"], [[q["table"], q["rule"], q["rows"], q["first_quarantined_at"], q["last_run_id"]] for q in found])


@quarantine_app.command()
def replay(
    table: Annotated[Optional[list[str]], typer.Option(help="Silver table(s), e.g. silver.flights (default: all).")] = None,
    rule: Annotated[Optional[list[str]], typer.Option(help="Only rows quarantined under these rule ids.")] = None,
) -> None:
    """Re-check quarantined rows against the current rules; publish the ones that now pass."""
    from lakehouse import build as builder
    from lakehouse import conform, quality
    from lakehouse.spark import build_session

    settings = _settings()
    started = datetime.now(timezone.utc).replace(microsecond=0)
    rid = run_id("replay", started)
    t0 = time.monotonic()
    spark = build_session(settings, ["transform"], app_name=f"lakehouse-{rid}")
    ctx = conform.RunContext(rid, started, quality.load_config(settings), replay=True)
    results = [
        conform.run_table(spark, settings, job.SPEC, ctx, rule)
        for job in builder.SILVER_JOBS
        if not table or job.SPEC.table.name in table
    ]
    _summary(
        f"replay {rid}: {time.monotonic() - t0:.1f} s (staged rows were published; quarantined rows stay)",
        ["table", "input", "staged", "duplicate", "conflict/merged", "quarantined", "superseded", "inserted", "updated", "deleted", "version", "seconds"],
        _silver_rows(results),
    )


# ---------------------------------------------------------------- inspection


@app.command(name="tables")
def list_tables(as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """Every registered table that exists, with its Delta version and row count."""
    found = inspect.overview(_settings())
    if as_json:
        print(json.dumps(found))
        return
    _summary("tables", ["name", "layer", "version", "rows", "location"], [[t["name"], t["layer"], t["version"], t["rows"], t["location"]] for t in found])


@app.command()
def history(
    table: Annotated[str, typer.Argument(help="Registered table name, e.g. bronze.bts_flights.")],
    limit: Annotated[int, typer.Option(help="Newest commits to show.")] = 20,
) -> None:
    """A table's Delta history."""
    commits = inspect.history(_settings(), tables.get(table), limit)
    _summary(table, ["version", "timestamp", "operation", "user metadata", "metrics"], [[c["version"], c["timestamp"], c["operation"], c["user_metadata"] or "", c["metrics"][:80]] for c in commits])


@app.command()
def export(
    table: Annotated[Optional[str], typer.Argument(help="Registered table name (or use --quarter for a training set).")] = None,
    to: Annotated[Path, typer.Option("--to", help="Local Parquet file to write.")] = Path("export.parquet"),
    version: Annotated[Optional[int], typer.Option(help="Delta version of TABLE (default: latest).")] = None,
    quarter: Annotated[Optional[str], typer.Option(help="Export the training set of this quarter, as a recorded build wrote it.")] = None,
    build: Annotated[str, typer.Option(help="With --quarter: a build id, or latest.")] = "latest",
) -> None:
    """Write a table (as of a version), or a recorded training set (digest verified), to one local Parquet file."""
    import pyarrow.parquet as pq

    from lakehouse import delivery

    settings = _settings()
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


@app.command(name="builds")
def list_builds(as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """Every recorded build, newest first (read as the ml role)."""
    from lakehouse import delivery

    settings = _settings()
    found = delivery.builds(settings)
    if as_json:
        print(json.dumps(found, default=str))
        return
    _summary(
        "builds (newest first)",
        ["build", "quarter", "status", "training rows", "digest", "training_set version", "code", "ended"],
        [
            [b["build_id"], b["quarter"], b["status"], b["row_counts"].get("gold.training_set", 0), (b["digest"] or "-")[:16],
             b["tables_written"].get("gold.training_set", "-"), b["code_version"][:12], str(b["ended_at"])[:19]]
            for b in found
        ],
    )  # fmt: skip
    _print_mlflow(settings)


def _print_mlflow(settings: Settings) -> None:
    from lakehouse.tracking import EXPERIMENT

    err.print(f"MLflow UI: {settings.mlflow_uri}/#/experiments (experiment {EXPERIMENT}: one run per build, its Delta inputs under Datasets)")


@app.command()
def maintain() -> None:
    """OPTIMIZE and VACUUM every table, keeping every file a recorded build still needs."""
    from lakehouse import maintenance
    from lakehouse.spark import build_session

    settings = _settings()
    t0 = time.monotonic()
    spark = build_session(settings, maintenance.ROLES, app_name="lakehouse-maintain")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with _progress() as progress:
        task = progress.add_task("maintaining", total=None)
        reports = maintenance.run(spark, settings, now, on_table=lambda r: progress.update(task, description=f"maintained {r.table}"))
    _summary(
        f"maintain: {time.monotonic() - t0:.1f} s, retention {settings.retention_days:g} days",
        ["table", "files before", "bytes before", "files after", "bytes after", "retained hours", "kept for build", "seconds"],
        [
            [r.table, r.files_before, r.bytes_before, r.files_after, r.bytes_after, f"{r.retain_hours:.0f}", ", ".join(r.kept_for) or "-",
             "unchanged since last run" if r.skipped else f"{r.seconds:.1f}"]
            for r in reports
        ],
    )  # fmt: skip
    change = sum(r.bytes_after - r.bytes_before for r in reports)
    err.print(
        f"bytes {sum(r.bytes_before for r in reports):,} -> {sum(r.bytes_after for r in reports):,} ({change:+,}); "
        f"files {sum(r.files_before for r in reports):,} -> {sum(r.files_after for r in reports):,}; "
        "compaction adds files that VACUUM removes once the retention has passed"
    )


def main() -> None:
    """Console entry point: readable one-line errors for the failures a user can fix."""
    try:
        app()
    except (UserError, LookupError) as error:
        err.print(f"[bold red]error:[/bold red] {error}")
        sys.exit(2)


if __name__ == "__main__":
    main()
