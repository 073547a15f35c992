"""Recording a quarter's build: its manifest row in the builds table and its MLflow run."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from typing import Any

from pyspark.sql import SparkSession

from gold import drift, training_set
from gold.quarter_build import GoldResult
from lakehouse import delta
from lakehouse.runs import RunContext
from lakehouse.settings import Settings
from lakehouse.spark import local_frame
from lakehouse.tables import AIRPORT_DAILY, BUILDS, REGISTRY, ROUTE_DAILY, TRAINING_SET
from pipeline.staleness import config_digest, previous_builds
from silver.conform import TableResult


def _build_id(previous: list[dict[str, Any]], base: str, status: str, written: Mapping[str, int]) -> str | dict[str, Any]:
    """The id of a new build of run `base`, or the row of the very same build when it is recorded already.

    A retried `record` task finds its own row (same status, same versions written); a run that
    builds again (a cleared and re-run Airflow run, a failure then a success) gets `<base>-r2`, ...
    """
    same_run = [r for r in previous if r["build_id"] == base or r["build_id"].startswith(f"{base}-r")]
    for row in same_run:
        if row["status"] == status and dict(row["tables_written"] or {}) == dict(written):
            return row
    return base if not same_run else f"{base}-r{len(same_run) + 1}"


def record(
    spark: SparkSession,
    settings: Settings,
    ctx: RunContext,
    quarter: str,
    code_version: str,
    started: datetime,
    silver: list[TableResult],
    gold: GoldResult | None,
    gates: Sequence[Mapping[str, Any]],
    error: BaseException | None,
    drift_report: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the manifest row of one quarter's build and its MLflow run; return the row.

    `gates` are the build's gate references (`quality.gate_refs`). Recording the same build again (a
    retried task) returns the row already written. A failed build that got as far as its drift
    (`drift_report`: blocked by drift, or by a gate after it) logs the drift figures as a built one does.
    """
    from lakehouse import tracking  # MLflow takes seconds to import: only when a build is recorded

    status = "FAILED" if error is not None else "SUCCEEDED"
    build_id = _build_id(previous_builds(settings), f"{ctx.run_id}-{quarter}", status, dict(gold.versions) if gold is not None else {})
    if not isinstance(build_id, str):
        return build_id  # recorded already
    rows: dict[str, int] = {}
    metrics: dict[str, float] = {}
    for r in silver:
        for fate, n in r.fates.items():
            rows[f"{r.table}.{fate}"] = n
            metrics[f"rows.{r.table}.{fate}"] = n
        for rule, n in r.quarantined_by_rule.items():
            metrics[f"quarantined.{r.table}.{rule}"] = n
        metrics[f"seconds.{r.table}"] = r.seconds
    written: dict[str, int] = {}
    inputs: list[tuple[str, str, int, str, str]] = []
    if gold is not None:
        rows.update({t: n for t, n in gold.rows.items()})
        rows["eligible_silver_rows"] = gold.eligible_rows
        written = dict(gold.versions)
        metrics.update({f"rows.{t}": n for t, n in gold.rows.items()})
        metrics["seconds.gold"] = gold.seconds
        if TRAINING_SET.name in gold.versions and gold.digest:
            inputs.append((TRAINING_SET.name, TRAINING_SET.location(settings), gold.versions[TRAINING_SET.name], gold.digest, "training"))
        for name, version in sorted(gold.read_versions.items()):
            location = REGISTRY[name].location(settings)
            inputs.append((name, location, version, tracking.identity_digest(location, version), "source"))
    drifted = gold.drift if gold is not None else drift_report
    metrics.update(drift.metrics(drifted))
    reads = dict(gold.read_versions) if gold is not None else {}
    metrics["gates.passed"] = sum(bool(g["success"]) for g in gates)
    metrics["gates.failed"] = sum(not g["success"] for g in gates)
    record: dict[str, Any] = {
        "build_id": build_id, "quarter": quarter, "status": status, "mlflow_run_id": None, "run_id": ctx.run_id,
        "feature_contract_version": training_set.FEATURE_CONTRACT_VERSION, "code_version": code_version,
        "config_digest": config_digest(ctx.config), "tables_read": reads, "tables_written": written, "digest": gold.digest if gold is not None else None,
        "row_counts": rows, "gate_reports": {g["suite"]: g["report_uri"] for g in gates if g["report_uri"]},
        "error": None if error is None else f"{type(error).__name__}: {error}"[:4000],
        "started_at": started, "ended_at": datetime.now(UTC).replace(tzinfo=None),
    }  # fmt: skip
    params = {
        "quarter": quarter, "feature_contract_version": training_set.FEATURE_CONTRACT_VERSION, "code_version": code_version,
        "spark_version": spark.version, "delta_version": package_version("delta-spark"), "build_id": build_id,
        **tracking.flatten_params("gates", ctx.config["gates"]), **tracking.flatten_params("rules", ctx.config["rules"]),
    }  # fmt: skip
    schemas = {t.name: json.loads(t.schema.json()) for t in (TRAINING_SET, ROUTE_DAILY, AIRPORT_DAILY)}
    if drifted is not None:
        params["drift.reference"] = (drifted.get("reference") or {}).get("quarter") or f"none ({drifted.get('reason')})"
    figures = {"drift/psi.png": drift.plot(drifted)} if drifted and drifted["features"] else {}
    tracking.log_build(settings, record, params, metrics, inputs, schemas, figures)
    delta.ensure_table(spark, settings, BUILDS)
    delta.append(local_frame(spark, [record], BUILDS.schema), BUILDS.location(settings))
    return record
