"""gold.training_set: the point-in-time correct training set, feature contract v1 (docs/feature_contract.md).

One row per eligible flight (not cancelled, arrival delay known) whose flight_date lies in the
quarter being built; key flight_id; partition quarter. Every feature derived from flight
outcomes reads only days strictly before the flight's date; `feature_max_source_date` records
the latest day any of them read, and the gold gate rejects a row where it is not earlier.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from functools import reduce
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from gold.daily import eligible, is_late
from lakehouse import quality as q
from lakehouse.quarters import quarter_col
from lakehouse.tables import TRAINING_SET

FEATURE_CONTRACT_VERSION = "1"

#: The trailing windows of the features, in days before the flight's date: [d-k, d-1].
ROUTE_WINDOWS_DAYS = (7, 28)
ORIGIN_WINDOWS_DAYS = (1, 7)
#: How far before a quarter's first day its features read: the widest window.
LOOKBACK_DAYS = max(*ROUTE_WINDOWS_DAYS, *ORIGIN_WINDOWS_DAYS)


def _ratio(numerator: Column, denominator: Column) -> Column:
    return F.when(denominator > 0, numerator / denominator)


def route_window_features(route_daily: DataFrame) -> DataFrame:
    """Per (origin, dest, flight_date): the 7- and 28-day trailing route features, days [d-k, d-1]."""
    by_route = Window.partitionBy("origin", "dest").orderBy(F.unix_date("flight_date"))
    w7, w28 = (by_route.rangeBetween(-days, -1) for days in ROUTE_WINDOWS_DAYS)
    return route_daily.select(
        "origin",
        "dest",
        "flight_date",
        _ratio(F.sum("n_late").over(w7), F.sum("n_flights").over(w7)).alias("route_late_share_7d"),
        _ratio(F.sum("sum_arr_delay_min").over(w7), F.sum("n_flights").over(w7)).alias("route_mean_arr_delay_7d"),
        F.coalesce(F.sum("n_flights").over(w28), F.lit(0)).cast("long").alias("route_n_flights_28d"),
        F.max("flight_date").over(w28).alias("_route_max_date"),
    )


def origin_window_features(airport_daily: DataFrame) -> DataFrame:
    """Per (origin, flight_date): the 7-day late share and the previous day's departures."""
    by_origin = Window.partitionBy("origin").orderBy(F.unix_date("flight_date"))
    w1, w7 = (by_origin.rangeBetween(-days, -1) for days in ORIGIN_WINDOWS_DAYS)
    return airport_daily.select(
        "origin",
        "flight_date",
        _ratio(F.sum("n_late").over(w7), F.sum("n_flights").over(w7)).alias("origin_late_share_7d"),
        F.coalesce(F.sum("n_flights").over(w1), F.lit(0)).cast("long").alias("origin_departures_1d"),
        F.max("flight_date").over(w7).alias("_origin_max_date"),
    )


def build_training_set(flights: DataFrame, route_daily: DataFrame, airport_daily: DataFrame, weather: DataFrame, periods: Mapping[str, tuple[date, date]]) -> DataFrame:
    """The training rows of the quarters in `periods` ({quarter: [start, end)}), built together.

    `route_daily` and `airport_daily` must cover at least [start - LOOKBACK_DAYS, end) of each quarter so
    that its first days see their history (which lies in the previous quarter).
    """
    departure_hour = F.date_trunc("hour", F.coalesce("sched_dep_local_ts", "dep_local_ts")).cast("timestamp_ntz")
    in_periods = reduce(lambda a, b: a | b, [(F.col("flight_date") >= F.lit(s)) & (F.col("flight_date") < F.lit(e)) for s, e in periods.values()])
    rows = eligible(flights).where(in_periods).withColumn("_dep_hour_ts", departure_hour)
    hourly = weather.select(F.col("origin").alias("_w_origin"), F.col("obs_local_ts").alias("_w_ts"), "temp_f", "wind_speed_mph", "precip_in", "visib_mi")
    joined = (
        rows.join(route_window_features(route_daily), ["origin", "dest", "flight_date"], "left")
        .join(origin_window_features(airport_daily), ["origin", "flight_date"], "left")
        .join(hourly, (F.col("origin") == F.col("_w_origin")) & (F.col("_dep_hour_ts") == F.col("_w_ts")), "left")
    )
    return joined.select(
        "flight_id",
        "flight_date",
        quarter_col(F.col("flight_date")).alias("quarter"),
        "source_system",
        "origin",
        "dest",
        is_late().alias("is_late"),
        F.hour("_dep_hour_ts").alias("dep_hour"),
        (((F.dayofweek("flight_date") + 5) % 7) + 1).alias("day_of_week"),
        F.month("flight_date").alias("month"),
        "distance_mi",
        "route_late_share_7d",
        "route_mean_arr_delay_7d",
        F.coalesce("route_n_flights_28d", F.lit(0)).cast("long").alias("route_n_flights_28d"),
        "origin_late_share_7d",
        F.coalesce("origin_departures_1d", F.lit(0)).cast("long").alias("origin_departures_1d"),
        "temp_f",
        "wind_speed_mph",
        "precip_in",
        "visib_mi",
        F.greatest("_route_max_date", "_origin_max_date").alias("feature_max_source_date"),
    ).select(*TRAINING_SET.column_names)


def checks(quarter: str, eligible_rows: int, cfg: Mapping[str, Any]) -> list[q.Check]:
    """The gate of one quarter's training set: its contract's checks (label, ranges, no leak from the future), the quarter, the row count."""
    return [
        *q.contract_checks(TRAINING_SET, cfg),
        q.Check("quarter", "ExpectColumnValuesToBeInSet", {"column": "quarter", "value_set": [quarter]}),
        q.row_count("accounting:eligible_silver_rows", eligible_rows),
    ]
