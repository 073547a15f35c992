"""Shared pure transforms of the daily gold aggregates (route_daily, airport_daily)."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse.quarters import quarter_col

#: A flight is late when it arrives more than this many minutes behind schedule (the label).
LATE_AFTER_MIN = 15


def eligible(flights: DataFrame) -> DataFrame:
    """Flights that count in gold: not cancelled, with a known arrival delay."""
    return flights.where(~F.col("is_cancelled") & F.col("arr_delay_min").isNotNull())


def is_late(arr_delay_min: str = "arr_delay_min") -> F.Column:
    return F.col(arr_delay_min) > LATE_AFTER_MIN


def daily_metrics(flights: DataFrame, keys: Sequence[str]) -> DataFrame:
    """n_flights, n_late, sum/mean arrival delay and late share per `keys` and flight_date."""
    return (
        eligible(flights)
        .groupBy(*keys, "flight_date")
        .agg(
            F.count(F.lit(1)).alias("n_flights"),
            F.sum(is_late().cast("long")).alias("n_late"),
            F.sum("arr_delay_min").alias("sum_arr_delay_min"),
        )
        .withColumn("mean_arr_delay_min", F.col("sum_arr_delay_min") / F.col("n_flights"))
        .withColumn("late_share", F.col("n_late") / F.col("n_flights"))
        .withColumn("quarter", quarter_col(F.col("flight_date")))
    )
