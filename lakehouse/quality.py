"""Quality gates: run a Great Expectations suite on a frame, store the report, raise on failure.

A gate is the audit step of write-audit-publish: the caller stages its output, runs the gate on
it and publishes only if this returns. The report (GX's JSON result with a per-expectation
summary, and a rendered HTML page) goes to the quality bucket under the run id, whatever the
outcome. A table's suite is what its contract asks (`contract_checks`, with thresholds from
`config/quality.toml`) plus the checks of the run that its job adds.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame

from lakehouse import storage
from lakehouse.contracts import THRESHOLDS, ContractError, Table
from lakehouse.errors import UserError
from lakehouse.settings import Settings

log = logging.getLogger(__name__)


def load_config(settings: Settings) -> dict[str, Any]:
    """The rule and gate thresholds (config/quality.toml or LAKEHOUSE_QUALITY_CONFIG)."""
    try:
        with open(settings.quality_config, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UserError(f"quality configuration {settings.quality_config} not found (LAKEHOUSE_QUALITY_CONFIG)") from None


@dataclass(frozen=True)
class Check:
    """One expectation of a suite, named by a rule id that the report and errors use."""

    rule: str
    expectation: str  # a class name in great_expectations.expectations or lakehouse.expectations
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    derive: tuple[tuple[str, str], ...] = ()  # (column, SQL expression): columns added to the frame for this check
    detail: Check | None = None  # what a failed gate's report runs instead (e.g. the query that a flag stands for)


@dataclass
class GateResult:
    suite: str
    success: bool
    results: list[dict[str, Any]]
    report_uri: str | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r["success"]]

    def describe_failures(self) -> str:
        parts = []
        for r in self.failed:
            detail = f"{r['unexpected_count']:,} unexpected rows" if r["unexpected_count"] is not None else f"observed {r['observed_value']}"
            if r.get("exception"):
                detail = f"error: {r['exception']}"
            parts.append(f"{r['rule']} ({r['expectation']}: {detail})")
        return "; ".join(parts)


class GateFailed(UserError):
    """A gate blocked publication; the message names the failed expectations and their counts."""

    def __init__(self, result: GateResult):
        where = f" Report: {result.report_uri}" if result.report_uri else ""
        super().__init__(f"quality gate {result.suite} failed: {result.describe_failures()}.{where}")
        self.result = result


#: Loggers quieted to errors. Importing GX logged about 200 "Skipping registering function" lines at
#: INFO, and every gate's ephemeral context a "Created temporary directory" line (from a logger that
#: GX sets to INFO itself when imported): 233 lines in one Airflow build task's log, around its own.
_GX_LOGGERS = ("great_expectations", "great_expectations.data_context.types.base", "DataFrameQueryContextLogger")


def quiet_gx_logging() -> None:
    """Let only GX's errors through: call it before importing GX (its import logs) and after (the logger it sets)."""
    for name in _GX_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _gx():
    """Import GX lazily (it takes seconds) with its logging and progress bars quiet."""
    quiet_gx_logging()
    import great_expectations as gx

    quiet_gx_logging()
    return gx


def _exception_message(info: Mapping[str, Any] | None) -> str | None:
    if not info:
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    messages = [v.get("exception_message") for v in info.values() if isinstance(v, dict)]
    return "; ".join(m for m in messages if m) or None


#: Expectations whose observed value is a number of offending rows.
_COUNTS_UNEXPECTED = ("unexpected_rows_expectation", "expect_column_values_to_be_distinct")


def _summarize(result: Any) -> list[dict[str, Any]]:
    rows = []
    for r in result.results:
        config, detail = r.expectation_config, (r.result or {})
        unexpected = detail.get("unexpected_count")
        if unexpected is None and config.type in _COUNTS_UNEXPECTED:
            unexpected = detail.get("observed_value")
        rows.append(
            {
                "rule": (config.meta or {}).get("rule", config.type),
                "expectation": config.type,
                "success": bool(r.success),
                "unexpected_count": unexpected,
                "unexpected_percent": detail.get("unexpected_percent"),
                "observed_value": detail.get("observed_value"),
                "partial_unexpected_list": detail.get("partial_unexpected_list"),
                "exception": _exception_message(r.exception_info),
            }
        )
    return sorted(rows, key=lambda d: d["rule"])


def _render_html(result: Any) -> str:
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))


def _run_suite(df: DataFrame, suite: str, checks: Sequence[Check], result_format: str) -> Any:
    """One GX validation of `df`; GX neither caches the frame nor shows progress bars."""
    gx = _gx()
    import great_expectations.expectations as gxe
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from lakehouse import expectations as own

    context = gx.get_context(mode="ephemeral")  # a fresh context per gate: names never collide
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    expectations = [(getattr(gxe, c.expectation, None) or getattr(own, c.expectation))(**c.kwargs, meta={"rule": c.rule}) for c in checks]
    # persist=False: GX would cache every batch and never release it; the caller caches what it reuses
    source = context.data_sources.add_spark(name="spark", persist=False)
    batch = source.add_dataframe_asset(name=suite).add_batch_definition_whole_dataframe("all")
    gx_suite = context.suites.add(gx.ExpectationSuite(name=suite, expectations=expectations))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=suite, data=batch, suite=gx_suite))
    return definition.run(batch_parameters={"dataframe": df}, result_format=result_format, run_id=RunIdentifier(run_name=f"{suite}-{uuid.uuid4().hex[:8]}"))


def with_derived(df: DataFrame, checks: Sequence[Check]) -> DataFrame:
    """The frame with the columns the checks derive (a projection: no Spark job)."""
    from pyspark.sql import functions as F

    derived = dict(d for c in checks for d in c.derive)
    return df.withColumns({name: F.expr(sql) for name, sql in derived.items()}) if derived else df


#: What a report shows in place of the sample values of a personal column.
REDACTED = "<personal data: not shown>"

#: The parts of an expectation's result that hold the checked column's values.
_VALUE_KEYS = ("partial_unexpected_list", "partial_unexpected_counts", "partial_unexpected_index_list", "unexpected_list", "unexpected_index_list", "observed_value")


def redact(result: Any, personal: Sequence[str]) -> None:
    """Replace, in GX's result, every value an expectation on a personal column sampled (in place, before anything is reported)."""
    for r in result.results:
        kwargs = r.expectation_config.kwargs or {}
        columns = {kwargs.get("column"), *(kwargs.get("column_list") or ())}
        if not columns & set(personal) or not r.result:
            continue
        for key in _VALUE_KEYS:
            value = r.result.get(key)
            if value is not None and not isinstance(value, bool | int | float):
                r.result[key] = [REDACTED] if isinstance(value, list) else REDACTED


def validate(df: DataFrame, suite: str, checks: Sequence[Check], personal: Sequence[str] = ()) -> tuple[GateResult, Any]:
    """Run the checks on `df` with GX; return the summary and GX's own result object.

    The verdict costs about one pass: BOOLEAN_ONLY computes each expectation's aggregate and no
    samples. Only when a gate fails is the suite run again at SUMMARY, for the counts and sample
    values that its report and error show, with each check's `detail` form where it has one; the
    sampled values of the `personal` columns are redacted before the summary, the stored report,
    the HTML page and so MLflow see them.
    """
    result = _run_suite(with_derived(df, checks), suite, checks, "BOOLEAN_ONLY")
    if not result.success:
        detailed = [c.detail or c for c in checks]
        result = _run_suite(with_derived(df, detailed), suite, detailed, "SUMMARY")
        redact(result, personal)
    return GateResult(suite, bool(result.success), _summarize(result)), result


def store_report(settings: Settings, run_id: str, gate: GateResult, gx_result: Any, extra: Mapping[str, Any] | None = None) -> str:
    """Upload the report to quality/reports/<run_id>/<suite>.json, and for a failed gate a rendered .html; return the JSON's URI.

    `extra` are more top-level entries of the JSON document (e.g. the drift gate's figures).

    Rendering GX's HTML page takes about half a second of CPU per gate: a passed gate's JSON (every
    expectation with its verdict and observed value) says all there is, so only a failure, which
    someone will read, is rendered.
    """
    s3 = storage.client(settings, "transform")
    bucket = settings.bucket("quality")
    prefix = f"reports/{run_id}/{gate.suite}"
    document = {"suite": gate.suite, "run_id": run_id, "success": gate.success, "results": gate.results, **(extra or {}), "gx_result": gx_result.to_json_dict()}
    reports = [("json", json.dumps(document, indent=2, default=str).encode(), "application/json")]
    if not gate.success:
        reports.append(("html", _render_html(gx_result).encode(), "text/html"))
    for suffix, body, kind in reports:
        s3.put_object(bucket, f"{prefix}.{suffix}", io.BytesIO(body), len(body), content_type=kind)
    return f"s3://{bucket}/{prefix}.json"


class ReportMissing(UserError):
    """A gate report named by a build is no longer in the quality bucket."""


def read_report(settings: Settings, uri: str, role: str = "reader") -> dict[str, Any]:
    """A stored gate report (the JSON document `store_report` wrote at `uri`)."""
    from minio.error import S3Error

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        response = storage.client(settings, role).get_object(bucket, key)
    except S3Error as error:
        if error.code == "NoSuchKey":
            raise ReportMissing(
                f"gate report {uri} is gone (reports older than LAKEHOUSE_REPORT_RETENTION_DAYS are deleted); the build's MLflow run keeps a copy under gates/"
            ) from None
        raise
    try:
        return json.loads(response.read())
    finally:
        response.close()
        response.release_conn()


#: The suite of a quarter's drift gate (`gold.drift`), whose stored report holds the drift figures under "drift".
DRIFT_SUITE = "drift.training_set.{quarter}"


def drift_report(settings: Settings, record: Mapping[str, Any], role: str = "reader") -> dict[str, Any]:
    """The drift figures of a recorded build (its manifest row), from its drift gate's stored report."""
    uri = (record.get("gate_reports") or {}).get(DRIFT_SUITE.format(quarter=record["quarter"]))
    if uri is None:
        raise ReportMissing(
            f"build {record['build_id']} of {record['quarter']} ({record['status']}) has no drift report: it was recorded before drift "
            f"was measured, or stopped before its drift gate; `lakehouse build --quarter {record['quarter']} --force` builds it again"
        )
    return read_report(settings, uri, role)["drift"]


def gate(
    settings: Settings,
    run_id: str,
    df: DataFrame,
    suite: str,
    checks: Sequence[Check],
    collector: list | None = None,
    personal: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> GateResult:
    """Validate, store the report (with `extra` entries), and raise GateFailed if any expectation failed.

    Every result, passed or failed, is appended to `collector` (the run's list of gates); no sample
    value of a `personal` column reaches the report.
    """
    result, gx_result = validate(df, suite, checks, personal)
    result.report_uri = store_report(settings, run_id, result, gx_result, extra)
    if collector is not None:
        collector.append(result)
    log.info("gate %s: %s", suite, "passed" if result.success else "FAILED")
    if not result.success:
        raise GateFailed(result)
    return result


# ---------------------------------------------------------------- check builders


def not_null(*columns: str) -> list[Check]:
    return [Check(f"not_null:{c}", "ExpectColumnValuesToNotBeNull", {"column": c}) for c in columns]


def unique_key(*columns: str) -> Check:
    """No two rows share the key; rows without any key column are not compared (as in GX's own checks).

    Decided from aggregates computed with the suite's others (`lakehouse.expectations`); a key of
    several columns is checked as one derived struct column, null when every key column is.
    """
    rule = f"unique:{'+'.join(columns)}"
    if len(columns) == 1:
        return Check(rule, "ExpectColumnValuesToBeDistinct", {"column": columns[0]})
    listed = ", ".join(f"`{c}`" for c in columns)
    absent = " AND ".join(f"`{c}` IS NULL" for c in columns)
    key = "_key_" + "_".join(columns)
    return Check(rule, "ExpectColumnValuesToBeDistinct", {"column": key}, derive=((key, f"CASE WHEN {absent} THEN NULL ELSE struct({listed}) END"),))


def between(column: str, low: float | None, high: float | None, mostly: float = 1.0) -> Check:
    return Check(f"range:{column}", "ExpectColumnValuesToBeBetween", {"column": column, "min_value": low, "max_value": high, "mostly": mostly})


def share_true(rule: str, column: str, min_share: float) -> Check:
    """At least `min_share` of the rows have `column` true (e.g. a known foreign key)."""
    return Check(rule, "ExpectColumnValuesToBeInSet", {"column": column, "value_set": [True], "mostly": min_share})


def row_count(rule: str, value: int) -> Check:
    return Check(rule, "ExpectTableRowCountToEqual", {"value": value})


def columns_exist(*columns: str) -> list[Check]:
    return [Check(f"column:{c}", "ExpectColumnToExist", {"column": c}) for c in columns]


def no_rows(rule: str, where: str) -> Check:
    """No row meets the SQL condition `where` (over the frame's columns).

    The verdict is a derived flag that GX counts in the aggregate pass of the suite's other checks;
    GX's `UnexpectedRowsExpectation` ran its query twice, as Spark jobs of their own (a count and
    the rows), about half a second per check. A failed gate's report runs that expectation, as
    before: its result names the query and counts the rows it returns.
    """
    flag = "_violates_" + re.sub(r"\W", "_", rule)
    query = f"SELECT * FROM {{batch}} WHERE {where}"
    return Check(
        rule, "ExpectColumnValuesToBeInSet", {"column": flag, "value_set": [False]}, derive=((flag, f"coalesce(({where}), false)"),),
        detail=Check(rule, "UnexpectedRowsExpectation", {"unexpected_rows_query": query, "description": rule}),
    )  # fmt: skip


def threshold(cfg: Mapping[str, Any], value: Any, table: str) -> Any:
    """A rule's threshold: a number as it stands, a string as the key of a value in the quality configuration."""
    if not isinstance(value, str):
        return value
    found: Any = cfg
    for part in value.split("."):
        if not isinstance(found, Mapping) or part not in found:
            raise ContractError(f"the contract of {table} names the threshold {value!r}, which the quality configuration (config/quality.toml) lacks")
        found = found[part]
    return found


def contract_checks(table: Table, cfg: Mapping[str, Any]) -> list[Check]:
    """The checks a table's contract asks of its gate: every required column not null, the key unique, and its rules."""
    checks = not_null(*(c.name for c in table.columns if not c.nullable))
    if table.keys:
        checks.append(unique_key(*table.keys))
    for rule in table.rules:
        p = {k: threshold(cfg, v, table.name) if k in THRESHOLDS else v for k, v in rule.params.items()}
        if rule.check == "between":  # the checks and parameters that contracts.RULE_CHECKS lists
            checks.append(dataclasses.replace(between(p["column"], p.get("min"), p.get("max")), rule=rule.name))
        elif rule.check == "share_true":
            checks.append(share_true(rule.name, p["flag"], 1 - p["max_false_share"]))
        elif rule.check == "share_not_null":
            checks.append(Check(rule.name, "ExpectColumnValuesToNotBeNull", {"column": p["column"], "mostly": 1 - p["max_null_share"]}))
        elif rule.check == "no_rows":
            checks.append(no_rows(rule.name, p["where"]))
        elif rule.check == "min_rows":
            checks.append(Check(rule.name, "ExpectTableRowCountToBeBetween", {"min_value": p["min"]}))
    return checks


def gate_refs(gates: Sequence[GateResult]) -> list[dict[str, Any]]:
    """What a build record keeps of each gate: its suite, outcome and report."""
    return [{"suite": g.suite, "success": g.success, "report_uri": g.report_uri} for g in gates]
