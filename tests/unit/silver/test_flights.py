import datetime as dt

import pytest

from silver.flights import prepare_bts, prepare_nyc
from tests.unit.bronze_rows import prepared

BTS = {"date": "2001-01-15 06:30:00", "delay": "12", "distance": "300", "origin": "JFK", "destination": "BOS"}
NYC = {
    "year": "2013", "month": "1", "day": "15", "dep_time": "2350", "sched_dep_time": "2330", "dep_delay": "20",
    "arr_time": "105", "sched_arr_time": "40", "arr_delay": "25", "carrier": "UA", "flight": "1545", "tailnum": "N14228",
    "origin": "EWR", "dest": "IAH", "air_time": "227", "distance": "1400", "hour": "23", "minute": "30", "time_hour": "2013-01-16T04:00:00Z",
}  # fmt: skip


def _bts(spark, cfg, *rows, obj="bts/flights/2001-01.csv.gz"):
    return prepared(spark, prepare_bts, "bronze.bts_flights", list(rows), cfg["rules"]["flights"], obj=obj).orderBy("_row_number").collect()


def _nyc(spark, cfg, *rows, obj="nyc/flights/2013-01.csv"):
    return prepared(spark, prepare_nyc, "bronze.nyc_flights", list(rows), cfg["rules"]["flights"], obj=obj).orderBy("_row_number").collect()


def test_bts_row_is_conformed(spark, quality_config):
    [row] = _bts(spark, quality_config, BTS)
    assert row._failed_rules == []
    assert (row.source_system, row.origin, row.dest, row.distance_mi, row.arr_delay_min, row.is_cancelled) == ("bts", "JFK", "BOS", 300.0, 12.0, False)
    assert row.dep_local_ts == dt.datetime(2001, 1, 15, 6, 30) and row.flight_date == dt.date(2001, 1, 15)
    assert row.flight_month == "2001-01" and row.sched_dep_local_ts is None and row.carrier is None
    assert len(row.flight_id) == 64


def test_bts_exact_duplicates_share_an_id_and_other_values_do_not(spark, quality_config):
    a, b, c = _bts(spark, quality_config, BTS, BTS, {**BTS, "delay": "13"})
    assert a.flight_id == b.flight_id != c.flight_id


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"distance": "0"}, "distance_not_positive"),
        ({"distance": "-5"}, "distance_not_positive"),
        ({"delay": "-121"}, "arr_delay_out_of_range"),
        ({"delay": "1801"}, "arr_delay_out_of_range"),
        ({"delay": "twelve"}, "unparseable_number"),
        ({"delay": "NaN"}, "unparseable_number"),
        ({"delay": "-Infinity"}, "unparseable_number"),
        ({"distance": "1e400"}, "unparseable_number"),  # beyond a double: read as Infinity
        ({"date": "2001-13-45 99:00:00"}, "unparseable_timestamp"),
        ({"origin": None}, "null_key"),
        ({"origin": "J F K"}, "invalid_airport_code"),
        ({"date": "2001-02-01 00:10:00"}, "outside_extract_month"),
        ({"distance": ""}, "missing_distance"),
    ],
)
def test_bts_rules(spark, quality_config, change, rule):
    [row] = _bts(spark, quality_config, {**BTS, **change})
    assert row._failed_rules[0] == rule


def test_bts_delay_bounds_are_inclusive(spark, quality_config):
    rows = _bts(spark, quality_config, {**BTS, "delay": "-120"}, {**BTS, "delay": "1800"})
    assert [r._failed_rules for r in rows] == [[], []]


def test_a_malformed_bronze_line_is_quarantined_as_such(spark, quality_config):
    [row] = _bts(spark, quality_config, {"_is_malformed": True})
    assert row._failed_rules[0] == "malformed_line"
    assert '"_is_malformed":true' in row._raw_row


def test_nyc_flight_delayed_past_midnight_departs_the_next_day(spark, quality_config):
    [row] = _nyc(spark, quality_config, NYC)
    assert row._failed_rules == []
    assert row.sched_dep_local_ts == dt.datetime(2013, 1, 15, 23, 30)
    assert row.dep_local_ts == dt.datetime(2013, 1, 15, 23, 50)
    [late] = _nyc(spark, quality_config, {**NYC, "dep_delay": "45", "dep_time": "15"})
    assert late.dep_local_ts == dt.datetime(2013, 1, 16, 0, 15)
    assert late.flight_date == dt.date(2013, 1, 15)  # the scheduled day


def test_nyc_cancelled_flight(spark, quality_config):
    [row] = _nyc(spark, quality_config, {**NYC, "dep_time": "NA", "dep_delay": "NA", "arr_time": "NA", "arr_delay": "NA", "air_time": "NA"})
    assert row._failed_rules == []
    assert row.is_cancelled and row.dep_local_ts is None and row.arr_delay_min is None


def test_nyc_natural_key_ignores_values(spark, quality_config):
    a, b = _nyc(spark, quality_config, NYC, {**NYC, "arr_delay": "99", "tailnum": "NA"})
    assert a.flight_id == b.flight_id
    assert b.tailnum is None


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"sched_dep_time": "2461"}, "unparseable_timestamp"),
        ({"month": "13"}, "unparseable_timestamp"),
        ({"carrier": "NA"}, "null_key"),
        ({"dep_delay": "NA"}, "departure_unknown"),
        ({"arr_delay": "abc"}, "unparseable_number"),
        ({"dep_delay": "1900"}, "dep_delay_out_of_range"),
        # Spark 4's strict casts: these crashed silver.flights (the departure time's cast to minutes overflowed)
        ({"dep_delay": "NaN"}, "unparseable_number"),
        ({"dep_delay": "Infinity"}, "unparseable_number"),
        ({"dep_delay": "1e300"}, "dep_delay_out_of_range"),
        ({"dep_delay": "99999999999999"}, "dep_delay_out_of_range"),
        ({"arr_delay": "NaN"}, "unparseable_number"),
        ({"month": "2"}, "outside_extract_month"),
    ],
)
def test_nyc_rules(spark, quality_config, change, rule):
    [row] = _nyc(spark, quality_config, {**NYC, **change})
    assert row._failed_rules[0] == rule


def test_the_fates_of_prepared_rows_shuffle_them_once(spark, quality_config):
    """Ranking and comparing with the kept row share one shuffle and sort of every row, not two."""
    from pyspark.sql import functions as F

    from silver.rules import assign_fates
    from tests.unit.bronze_rows import prepared

    rows = prepared(spark, prepare_bts, "bronze.bts_flights", [BTS, BTS, {**BTS, "delay": "x"}], quality_config["rules"]["flights"], obj="bts/flights/2001-01.csv.gz")
    fated = assign_fates(rows, ["flight_id"], ["flight_id", "arr_delay_min"], [F.col("_row_number").asc()])
    plan = fated._jdf.queryExecution().executedPlan().toString()
    assert plan.count("Exchange hashpartitioning") == 1, plan
    assert sorted(r._fate for r in fated.collect()) == ["duplicate", "quarantined", "staged"]
