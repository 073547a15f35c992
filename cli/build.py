"""`lakehouse build`, `backfill`, `quarantine`, `maintain`: the build steps, run here or through Airflow."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Optional

import typer

from cli import render
from cli.browse import print_mlflow
from cli.preflight import settings_needing
from cli.render import err, summary
from gold.quarter_build import GoldResult
from lakehouse import inspect, quarters, services
from lakehouse.errors import UserError
from lakehouse.settings import Settings
from pipeline import steps
from pipeline.build import BuildReport
from silver.conform import TableResult
from silver.layer import SILVER_JOBS


def _silver_rows(results: list[TableResult]) -> list[list[object]]:
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


def _print_builds(settings: Settings, report: BuildReport) -> None:
    rows = [[g.quarter, g.build_id or f"up to date: {g.skipped_as}", (g.digest or "")[:16], g.mlflow_run_id or "-"] for g in report.gold]
    if rows:
        summary("builds", ["quarter", "build", "digest", "MLflow run"], rows)
        print_mlflow(settings)


def print_build_summary(report: BuildReport, total_seconds: float) -> None:
    """Rows in and out per layer, quarantine per rule, gates, Delta versions, seconds per step."""
    summary(
        f"silver (run {report.run_id}): input = staged + duplicate + conflict/merged + quarantined + superseded",
        ["table", "input", "staged", "duplicate", "conflict/merged", "quarantined", "superseded", "inserted", "updated", "deleted", "version", "seconds"],
        _silver_rows(report.silver),
    )
    by_rule = [[r.table, rule, n] for r in report.silver for rule, n in sorted(r.quarantined_by_rule.items())]
    if by_rule:
        summary("quarantined this run, by rule", ["table", "rule", "rows"], by_rule)
    built = [g for g in report.gold if g.skipped_as is None]
    if built:
        summary(
            "gold, built in one pass (rows per quarter; training rows = eligible silver flights)",
            ["quarter", "eligible", "training_set", "route_daily", "airport_daily", "versions (ts/route/airport)", "built because", "drift (max PSI)"],
            [
                [
                    g.quarter, g.eligible_rows, g.rows.get("gold.training_set", 0), g.rows.get("gold.route_daily", 0), g.rows.get("gold.airport_daily", 0),
                    "/".join(str(g.versions.get(t, "-")) for t in ("gold.training_set", "gold.route_daily", "gold.airport_daily")), g.stale_reason or "-",
                    _drift_cell(g),
                ]
                for g in built
            ],
        )  # fmt: skip
    gates = sum(len(r.gates) for r in report.silver) + sum(len(g.gates) for g in report.gold)
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
    started = "" if "spark start" in report.seconds else "no Spark started (nothing new); "
    err.print(f"{gates} gates passed; {started}{timings}; total {total_seconds:.1f} s")


def _drift_cell(g: GoldResult) -> str:
    """A quarter's largest feature drift and its reference, for the summary (`lakehouse drift QUARTER` has each feature)."""
    if g.drift is None:
        return "-"
    if not g.drift["features"]:
        return "no quarter before"
    top = max(g.drift["features"], key=lambda f: f["psi"])
    return f"{top['psi']:.3f} {top['feature']} vs {g.drift['reference']['quarter']}"


def _wanted_quarters(settings: Settings, given: list[str] | None, all_quarters: bool) -> list[str]:
    """The quarters named, and with --all every quarter whose three months are ingested (read with delta-rs)."""
    if not given and not all_quarters:
        raise typer.BadParameter("give --quarter (repeatable) or --all")
    wanted = set(given or [])
    for q in wanted:
        try:
            quarters.parse(q)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    if all_quarters:
        months = steps.months_ingested(settings)
        ready = set(quarters.complete(months))
        partial = sorted({quarters.of_month(m) for m in months} - ready)
        if partial:
            err.print(f"not built (fewer than three months ingested): {', '.join(partial)}")
        wanted |= ready
    if not wanted:
        raise UserError("no quarter has all three months ingested: run `lakehouse land` and `lakehouse ingest` first")
    return sorted(wanted)


def build(
    quarter: Annotated[Optional[list[str]], typer.Option(help="Quarter(s) to build, e.g. 2001Q1.")] = None,
    all_quarters: Annotated[bool, typer.Option("--all", help="Every quarter whose three months are ingested.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild quarters that are up to date.")] = False,
) -> None:
    """Silver for the new bronze rows, then gold for the stale quarter(s) in one pass, each behind its gates; every build is recorded."""
    settings = settings_needing("s3", "mlflow")
    wanted = _wanted_quarters(settings, quarter, all_quarters)
    started = datetime.now(UTC).replace(microsecond=0)
    rid = steps.new_run_id("build", started)
    t0 = time.monotonic()
    with render.progress() as progress:
        task = progress.add_task("planning (Delta logs, build manifest)", total=len(SILVER_JOBS) + len(wanted))

        def on_silver(r: TableResult) -> None:
            progress.advance(task)
            progress.update(task, description=f"silver: {r.table} done")
            err.print(f"silver: {r.table} " + ("no new rows" if r.skipped else f"{r.input_rows:,} rows in {r.seconds:.1f} s"))

        def on_gold(g: GoldResult) -> None:
            progress.advance(task)
            progress.update(task, description=f"gold: {g.quarter} done")

        report = steps.build_step(wanted, rid, started, force=force, settings=settings, on_silver=on_silver, on_gold=on_gold)
    print_build_summary(report, time.monotonic() - t0)
    _print_builds(settings, report)


def backfill(
    quarter: Annotated[Optional[list[str]], typer.Option(help="Quarter(s) to build, e.g. 2013Q1.")] = None,
    all_quarters: Annotated[bool, typer.Option("--all", help="Every quarter whose three months are ingested.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild quarters that are up to date.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the runs.")] = 7200,
) -> None:
    """Build quarters through Airflow: backfill lakehouse_quarterly_build and wait for its runs."""
    from lakehouse import orchestrate

    settings = settings_needing("s3", "airflow-api")
    wanted = _wanted_quarters(settings, quarter, all_quarters)
    t0 = time.monotonic()
    client = orchestrate.AirflowClient(settings)
    err.print(f"building {', '.join(wanted)} through Airflow: {settings.airflow_url}/dags/{orchestrate.BUILD_DAG}")
    heartbeat = render.Heartbeat()
    with render.progress() as progress:
        task = progress.add_task("waiting for Airflow", total=len(wanted))

        def on_backfill(backfill_id: int, first, last) -> None:
            err.print(f"Airflow backfill {backfill_id}: quarters starting {first} to {last}")
            heartbeat.printed()

        def on_update(runs) -> None:
            done = [r for r in runs.values() if r.state in orchestrate.TERMINAL]
            states = ", ".join(f"{q} {r.state}" for q, r in sorted(runs.items()))
            progress.update(task, completed=len(done), description="Airflow: " + states)
            if heartbeat.due():  # a piped log: the progress bar above is not redrawn there
                err.print(f"waiting for Airflow, {time.monotonic() - t0:.0f} s: {states}")

        def on_task(done) -> None:
            took = "" if done.seconds is None else f" in {done.seconds:.0f} s"
            again = f" (try {done.try_number})" if done.try_number > 1 else ""
            err.print(f"{done.quarter}: task {done.task_id} {done.state}{took}{again}")
            heartbeat.printed()

        runs = orchestrate.run_quarters(client, wanted, force, timeout, on_update, on_backfill, on_task)
    summary(
        f"quarterly builds through Airflow: {time.monotonic() - t0:.1f} s",
        ["quarter", "Airflow run", "state", "seconds"],
        [[q, r.run_id, r.state, "-" if r.seconds is None else f"{r.seconds:.0f}"] for q, r in sorted(runs.items())],
    )
    err.print(f"Airflow UI: {settings.airflow_url}/dags/{orchestrate.BUILD_DAG} (user admin, password in {services.airflow_password_file(settings)})")
    failed = {q: orchestrate.failed_tasks(client, r.run_id) for q, r in runs.items() if r.state != "success"}
    if failed:
        raise UserError("Airflow runs failed: " + "; ".join(f"{q}: {', '.join(t) or 'see the UI'}" for q, t in failed.items()))


def quarantine(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """List the unresolved quarantined rows by table and rule."""
    if ctx.invoked_subcommand is not None:
        return
    found = inspect.quarantine_summary(settings_needing("s3"))
    if as_json:
        print(json.dumps(found))
        return
    summary(
        "quarantine (unresolved)",
        ["table", "rule", "rows", "first quarantined", "last run"],
        [[q["table"], q["rule"], q["rows"], q["first_quarantined_at"], q["last_run_id"]] for q in found],
    )


def replay(
    table: Annotated[Optional[list[str]], typer.Option(help="Silver table(s), e.g. silver.flights (default: all).")] = None,
    rule: Annotated[Optional[list[str]], typer.Option(help="Only rows quarantined under these rule ids.")] = None,
) -> None:
    """Re-check quarantined rows against the current rules; publish the ones that now pass."""
    settings = settings_needing("s3")
    started = datetime.now(UTC).replace(microsecond=0)
    rid = steps.new_run_id("replay", started)
    t0 = time.monotonic()
    results = steps.replay(rid, started, table, rule, settings=settings)
    summary(
        f"replay {rid}: {time.monotonic() - t0:.1f} s (staged rows were published; quarantined rows stay)",
        ["table", "input", "staged", "duplicate", "conflict/merged", "quarantined", "superseded", "inserted", "updated", "deleted", "version", "seconds"],
        _silver_rows(results),
    )


def maintain() -> None:
    """OPTIMIZE and VACUUM every table, keeping every file a recorded build still needs."""
    settings = settings_needing("s3")
    t0 = time.monotonic()
    with render.progress() as progress:
        task = progress.add_task("maintaining", total=None)
        reports = steps.maintain(settings, on_table=lambda r: progress.update(task, description=f"maintained {r.table}"))
    summary(
        f"maintain: {time.monotonic() - t0:.1f} s, retention "
        + (f"{settings.retention_days:g} days (LAKEHOUSE_RETENTION_DAYS)" if settings.retention_days is not None else "as each table's contract says"),
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
