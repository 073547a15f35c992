"""The build step's core: silver for the new bronze rows, then gold for the stale quarters in one pass, each build recorded."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pyspark.sql import SparkSession

from gold.quarter_build import GoldResult, run_gold
from lakehouse import quality
from lakehouse.errors import UserError
from lakehouse.quality import gate_refs
from lakehouse.runs import RunContext
from lakehouse.settings import Settings
from lakehouse.spark import job_description
from lakehouse.tables import SILVER_FLIGHTS
from pipeline.record import record
from pipeline.staleness import plan_gold
from silver.conform import TableResult
from silver.layer import run_silver

log = logging.getLogger(__name__)


class NothingToBuild(UserError):
    """A quarter was asked for before any flight was ingested."""


@dataclass
class BuildReport:
    run_id: str
    silver: list[TableResult] = field(default_factory=list)
    gold: list[GoldResult] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def build(
    spark: SparkSession,
    settings: Settings,
    wanted: list[str],
    ctx: RunContext,
    code_version: str,
    on_silver: Callable[[TableResult], None] | None = None,
    on_gold: Callable[[GoldResult], None] | None = None,
    force: bool | Sequence[str] = False,
    own: Sequence[str] | None = None,
    record_errors: bool = True,
) -> BuildReport:
    """Silver for the new bronze rows, then gold for the stale wanted quarters in one pass; every build is recorded.

    A quarter is skipped as up to date unless it is stale (`plan_gold`); `force` (True for every
    wanted quarter, or the quarters to force) rebuilds it anyway. A quarter blocked by its gates is
    recorded as a FAILED build (manifest row and MLflow run) and does not stop the others from
    being published and recorded. `own` are the quarters this build answers for (default: all
    wanted): a silver failure is recorded against them, and only their gate failures are raised
    (the others are recorded and reported). Other errors are recorded against the quarters they
    stopped when `record_errors`; an orchestrator that retries passes False and records the
    final failure itself, so a retry that succeeds leaves no FAILED row behind.
    """
    report = BuildReport(ctx.run_id)
    own = list(wanted) if own is None else list(own)
    t0 = time.monotonic()
    started = ctx.started_at.replace(tzinfo=None)
    forced = list(wanted) if force is True else list(force or [])
    try:
        report.silver = run_silver(spark, settings, ctx, on_silver)
    except Exception as error:
        if record_errors or isinstance(error, quality.GateFailed):
            for quarter in own:
                record(spark, settings, ctx, quarter, code_version, started, report.silver, None, gate_refs(ctx.gates), error)
        raise
    report.seconds["silver"] = time.monotonic() - t0
    silver_gates = gate_refs(ctx.gates)
    t1 = time.monotonic()
    gold_started = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    reads, stale, skipped = plan_gold(settings, wanted, code_version, ctx.config, forced)
    if stale and SILVER_FLIGHTS.name not in reads:  # its versions hold silver.flights once it exists
        raise NothingToBuild(
            f"nothing to build for {', '.join(stale)}: no flight has reached silver, because none was ingested. "
            "Land and ingest first (`lakehouse land`, `lakehouse ingest`; or `make demo`)"
        )
    for quarter, reason in stale.items():
        log.info("gold %s: to build (%s)", quarter, reason)
    failures: dict[str, quality.GateFailed] = {}
    built: list[GoldResult] = []
    if stale:
        before = len(ctx.gates)
        try:
            built, failures = run_gold(spark, settings, list(stale), ctx, reads)
        except Exception as error:
            if record_errors:
                for quarter in stale:
                    record(spark, settings, ctx, quarter, code_version, gold_started, report.silver, None, silver_gates + gate_refs(ctx.gates[before:]), error)
            raise
    report.seconds["gold"] = time.monotonic() - t1
    for result in built:
        result.stale_reason = stale[result.quarter]
        with job_description(spark, f"record {result.quarter}"):
            failure = failures.get(result.quarter)
            row = record(
                spark, settings, ctx, result.quarter, code_version, gold_started, report.silver, None if failure else result,
                silver_gates + result.gate_refs, failure, result.drift,
            )  # fmt: skip
        result.build_id, result.mlflow_run_id = row["build_id"], row["mlflow_run_id"]
    report.seconds["record"] = time.monotonic() - t1 - report.seconds["gold"]
    by_quarter = {r.quarter: r for r in [*built, *skipped.values()]}
    for quarter in sorted(by_quarter):
        report.gold.append(by_quarter[quarter])
        if on_gold is not None:
            on_gold(by_quarter[quarter])
    for quarter, failure in failures.items():
        if quarter not in own:
            log.error("gold %s: blocked by its gates (recorded as a FAILED build): %s", quarter, failure)
    mine = [failure for quarter, failure in failures.items() if quarter in own]
    if mine:
        raise mine[0]
    return report
