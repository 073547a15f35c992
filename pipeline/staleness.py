"""What a run must do, decided from the Delta logs and the build manifest with delta-rs (no JVM).

The one place that decides what is stale: which silver tables have bronze rows they have not
processed, and which wanted quarters must be built again (never built, other code or thresholds,
or silver rows changed in a month the quarter reads since its last succeeded build).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from gold.quarter_build import GoldResult, months_read
from lakehouse import delivery, delta, inspect
from lakehouse.settings import PROJECT_ROOT, Settings
from lakehouse.tables import REGISTRY, SILVER_FLIGHTS, SILVER_WEATHER
from silver.conform import logged_rows
from silver.layer import SILVER_JOBS


def read_versions(settings: Settings) -> dict[str, int]:
    """The versions a gold build reads (silver flights and weather) and the bronze versions behind them (no JVM)."""
    versions = {t.name: v for t in (SILVER_FLIGHTS, SILVER_WEATHER) if (v := inspect.version(settings, t)) is not None}
    for (consumer, source), version in inspect.progress(settings).items():
        if consumer in (SILVER_FLIGHTS.name, SILVER_WEATHER.name):
            versions[source] = version
    return versions


def silver_pending(settings: Settings) -> list[str]:
    """The silver tables with bronze rows they have not processed yet (no JVM)."""
    done = inspect.progress(settings)
    pending = []
    for job in SILVER_JOBS:
        consumer = job.SPEC.table.name
        for source in job.SPEC.prepare:
            version = inspect.version(settings, REGISTRY[source])
            if version is not None and version > done.get((consumer, source), -1):
                pending.append(consumer)
                break
    return pending


def rows_to_read(settings: Settings, stale: Sequence[str]) -> int:
    """About how many rows a build reads, before it starts (no JVM): the bronze rows silver has not
    processed (the ingest log's counts) and the silver flights of the months the `stale` quarters read.
    """
    done, logged = inspect.progress(settings), inspect.ingested(settings)
    rows = 0
    for job in SILVER_JOBS:
        consumer = job.SPEC.table.name
        for source in job.SPEC.prepare:
            version = inspect.version(settings, REGISTRY[source])
            after = done.get((consumer, source), -1)
            if version is not None and version > after:
                rows += logged_rows([r for r in logged if r["feed"] == source], after, version)
    months = sorted({m for q in stale for m in months_read(q)[SILVER_FLIGHTS.name]})
    return rows + (inspect.rows_in(settings, SILVER_FLIGHTS, {"flight_month": months}) if months else 0)


def config_digest(config: Mapping[str, Any]) -> str:
    """A short digest of the rule and gate thresholds a build ran with."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def previous_builds(settings: Settings) -> list[dict[str, Any]]:
    """Every recorded build, oldest first (the manifest, read with delta-rs)."""
    return list(reversed(delivery.builds(settings, "transform")))


#: How each silver table that gold reads names the month of a changed row: (partition, time column).
_MONTH_OF = {SILVER_FLIGHTS.name: ("flight_month", None), SILVER_WEATHER.name: (None, "obs_local_ts")}


def stale_because(settings: Settings, last: Mapping[str, Any] | None, quarter: str, reads: Mapping[str, int], code_version: str, config: str) -> str | None:
    """Why `quarter` must be built again since its last succeeded build `last`, or None when it is up to date.

    Up to date means: the same code and thresholds, and no commit to silver since that build changed
    a row in a month the quarter reads (its own months and its lookback). The Delta log names the
    partitions (or, for an unpartitioned table, the time range) each commit changed, so a
    correction to one month rebuilds exactly the quarters that read that month.
    """
    if last is None:
        return "never built"
    if last["code_version"] != code_version:
        return f"code changed ({last['code_version']} -> {code_version})"
    if last["config_digest"] != config:
        return "quality thresholds changed"
    recorded = dict(last["tables_read"] or {})
    for table, months in months_read(quarter).items():
        before, now = recorded.get(table), reads.get(table)
        if before == now:
            continue
        if before is None or now is None:
            return f"{table} appeared or vanished"
        if now < before:
            return f"{table} is older (v{now}) than the build read (v{before})"
        partition, time_column = _MONTH_OF[table]
        commits = delta.commit_actions(settings, REGISTRY[table], before, now)
        changed = None if commits is None else delta.changed_months(commits, partition, time_column)
        if changed is None:
            return f"{table} changed since v{before} where the log cannot tell which months"
        touched = sorted(changed & set(months))
        if touched:
            return f"{table} changed in {', '.join(touched)} (v{before} -> v{now})"
    return None


def last_succeeded(previous: list[dict[str, Any]], quarter: str) -> dict[str, Any] | None:
    """The newest succeeded build of `quarter` (`previous` is oldest first)."""
    return next((row for row in reversed(previous) if row["quarter"] == quarter and row["status"] == "SUCCEEDED"), None)


def code_version(settings: Settings) -> str:
    """The git commit of the code (LAKEHOUSE_CODE_VERSION wins; `+dirty` when the code that builds data changed).

    Only the code and its pins count (not docs, tests or benchmark results): an up-to-date build
    is skipped when the code version matches.
    """
    if settings.code_version:
        return settings.code_version
    try:
        git = ["git", "-C", str(PROJECT_ROOT)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        code = ["lakehouse", "bronze", "silver", "gold", "pipeline", "orchestration", "config", "pyproject.toml", "requirements/lock.txt"]
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", *code], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git checkout; set LAKEHOUSE_CODE_VERSION)"
    return commit + ("+dirty" if dirty else "")


def plan_gold(
    settings: Settings, wanted: Sequence[str], code_version: str, config: Mapping[str, Any], force: Sequence[str] = ()
) -> tuple[dict[str, int], dict[str, str], dict[str, GoldResult]]:
    """Which wanted quarters are stale: (versions read, {quarter: why it is built}, {quarter: skipped result}).

    The one place that decides what a run builds: a quarter in `force`, never built, built by other
    code or thresholds, or whose silver months changed since its last succeeded build
    (`stale_because`). It reads the Delta logs and the manifest with delta-rs: no JVM.
    """
    reads = read_versions(settings)
    previous = previous_builds(settings)
    digest_of_config = config_digest(config)
    stale: dict[str, str] = {}
    skipped: dict[str, GoldResult] = {}
    for quarter in sorted(set(wanted)):
        last = last_succeeded(previous, quarter)
        reason = "forced" if quarter in force else stale_because(settings, last, quarter, reads, code_version, digest_of_config)
        if reason is None and last is not None:
            skipped[quarter] = GoldResult(quarter, read_versions=dict(reads), skipped_as=last["build_id"])
        else:
            stale[quarter] = reason or "forced"
    return reads, stale, skipped
