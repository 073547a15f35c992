"""`lakehouse land`, `ingest` and `erase`: demo extracts into the landing bucket, into bronze exactly once, and out of the lakehouse."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cli import render
from cli.preflight import settings_needing
from cli.render import summary
from lakehouse import landing, tables
from pipeline import steps

if TYPE_CHECKING:
    from bronze.ingest import FeedReport


def _month(value: str, option: str) -> datetime:
    """A yyyy-MM month of an option, or a one-line refusal."""
    try:
        if len(value) != 7:
            raise ValueError(value)
        return datetime.strptime(value, "%Y-%m")
    except ValueError:
        raise typer.BadParameter(f"{option} {value!r} is not a month: yyyy-MM, e.g. 2001-03") from None


def _months(month: list[str] | None, start: str | None, end: str | None) -> set[str] | None:
    for value in month or []:
        _month(value, "--month")
    if start or end:
        if not (start and end):
            raise typer.BadParameter("--from and --to go together")
        first, last = _month(start, "--from"), _month(end, "--to")
        if first > last:
            raise typer.BadParameter(f"--from {start} is after --to {end}")
        months, y, m = set(), first.year, first.month
        while (y, m) <= (last.year, last.month):
            months.add(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return months | set(month or [])
    return set(month) if month else None


def land(
    feed: Annotated[Optional[list[str]], typer.Option(help="Feed(s) to land (default: all).")] = None,
    month: Annotated[Optional[list[str]], typer.Option(help="Month(s) yyyy-MM of the monthly feeds.")] = None,
    start: Annotated[Optional[str], typer.Option("--from", help="First month yyyy-MM of a range.")] = None,
    end: Annotated[Optional[str], typer.Option("--to", help="Last month yyyy-MM of a range.")] = None,
    sample_every: Annotated[int, typer.Option(help="Keep every n-th data line (small slices for tests).")] = 1,
) -> None:
    """Export the demo sources into the landing bucket as monthly extracts and snapshots."""
    months = _months(month, start, end)  # refused before anything connects
    settings = settings_needing("s3")
    results, t0 = [], time.monotonic()
    with render.progress() as progress:
        task = progress.add_task("preparing extracts", total=None)
        for extract in landing.extracts(settings, feed, months, sample_every):
            progress.update(task, description=f"landing {extract.key}")
            results.append(landing.upload(settings, extract))
            progress.advance(task)
        progress.update(task, description="landed", total=len(results))
    seconds = time.monotonic() - t0
    summary(
        f"landing: {sum(r.uploaded for r in results)} uploaded, {sum(not r.uploaded for r in results)} unchanged, {seconds:.1f} s",
        ["object", "rows", "bytes", "uploaded"],
        [[r.key, r.rows, r.size, "yes" if r.uploaded else "unchanged"] for r in results],
    )


def ingest(feed: Annotated[Optional[list[str]], typer.Option(help="Bronze feed(s) (default: all).")] = None) -> None:
    """Ingest new landing objects into bronze, exactly once."""
    settings = settings_needing("s3")
    started = datetime.now(UTC).replace(microsecond=0)
    rid = steps.new_run_id("ingest", started)
    t0 = time.monotonic()
    selected = [t for t in tables.BRONZE_TABLES if feed is None or t.short_name in feed or t.name in feed]
    spark_s = 0.0
    with render.progress() as progress:
        task = progress.add_task("looking for new objects", total=len(selected))

        def on_spark(seconds: float) -> None:
            nonlocal spark_s
            spark_s = seconds
            progress.update(task, description="ingesting")

        def on_feed(report: FeedReport) -> None:
            progress.advance(task)
            progress.update(task, description=f"ingested {report.table}")

        report = steps.ingest(rid, started, feed, settings=settings, on_feed=on_feed, on_spark=on_spark)
    summary(
        f"ingest {rid}: {report.objects} objects, {report.rows:,} rows, {time.monotonic() - t0:.1f} s "
        + (f"(Spark start {spark_s:.1f} s)" if spark_s else "(nothing new: Spark not started)"),
        ["table", "objects", "rows", "malformed", "recovered", "rejected", "version", "seconds"],
        [
            [r.table, r.objects, r.rows, r.malformed, r.recovered_objects, len(r.rejected), "-" if r.bronze_version is None else r.bronze_version, f"{r.seconds:.1f}"]
            for r in report.feeds
        ],
    )
    rejected = [(r.table, x["object_key"], x["reason"]) for r in report.feeds for x in r.rejected]
    if rejected:
        summary(f"rejected, not read (in bronze._ingest_log; a re-delivery under a new ETag is ingested): {len(rejected)} objects", ["table", "object", "reason"], rejected)


def erase(
    tailnum: Annotated[str, typer.Option("--tailnum", help="The aircraft registration to erase, as delivered (e.g. N14228).")],
    yes: Annotated[bool, typer.Option("--yes", help="Erase; without it, only show what would be erased.")] = False,
) -> None:
    """Erase one aircraft's registration (personal data) from bronze, silver and the quarantine, old versions included."""
    settings = settings_needing("s3")
    started = datetime.now(UTC).replace(microsecond=0)
    rid = steps.new_run_id("erase", started)
    t0 = time.monotonic()
    with render.progress() as progress:
        progress.add_task("erasing" if yes else "looking (nothing is changed without --yes)", total=None)
        found = steps.erase("tailnum", tailnum, rid, apply=yes, settings=settings)
    done = "erased, older versions vacuumed" if yes else "a dry run: nothing changed; run it again with --yes to erase"
    summary(
        f"erase {rid}: {sum(f.rows for f in found):,} rows in {sum(1 for f in found if f.rows)} tables, {time.monotonic() - t0:.1f} s ({done})",
        ["table", "column", "rows", "action", "done"],
        [[f.table, f.column, f.rows, f.action, "yes" if f.applied else "no"] for f in found],
    )
